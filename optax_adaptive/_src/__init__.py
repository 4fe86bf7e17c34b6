"""optax_adaptive's implementation; import the public API from the package."""
