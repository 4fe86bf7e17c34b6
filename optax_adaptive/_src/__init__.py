"""The implementation of optax_adaptive; import the public API from the package."""
