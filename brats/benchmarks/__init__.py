"""Benchmarks, one module per suite, run by ``jobs/benchmark.py``; each prints ratios measured
side by side in one run."""
