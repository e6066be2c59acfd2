"""Benchmarks: they report, they never gate. Run from the repository root."""
