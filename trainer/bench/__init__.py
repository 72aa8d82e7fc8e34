"""Benchmarks of the training step: ours, an authors-style reference, packing on one GPU."""
