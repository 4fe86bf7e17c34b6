"""Reproductions of optax_adaptive's papers, laid out as the Flax examples."""
