"""optax_adaptive: published adaptive optimizers as composable optax transformations."""

# ACME (optax_adaptive/acme.py): exports go here.

__version__ = '0.1.0'

__all__ = (
    # ACME names go here.
)
