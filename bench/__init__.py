"""Benchmarks: one script per figure, each printing what it measured (`make bench`)."""
