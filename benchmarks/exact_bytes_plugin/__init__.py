"""The ExactBytes DALI plugin: an experiment for benchmarks/exact_bytes_probe.py (see build.py)."""
