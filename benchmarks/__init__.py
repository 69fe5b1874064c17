"""Benchmarks that are run by hand (not by CI); see docs/gpu_preprocess.md."""
