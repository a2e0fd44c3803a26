"""Benchmarks of the paths that must scale; run ``python -m benchmarks.run``."""
