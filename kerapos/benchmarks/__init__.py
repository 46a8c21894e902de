"""Benchmark drivers users run: classification, extrapolation, layer speed, T5 buckets.
Their committed records live in the repository's benchmarks/ folder."""
