"""Experiments reproducing the papers of optax_adaptive, in the layout of the Flax examples."""
