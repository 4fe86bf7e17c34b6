"""Flax NNX models used by the experiments."""
