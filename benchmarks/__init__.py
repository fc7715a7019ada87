"""Benchmarks: `python -m benchmarks` (the suite) and the bench_*.py scripts."""
