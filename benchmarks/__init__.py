"""Benchmarks of the whole release chain against its baselines (`make bench`)."""
