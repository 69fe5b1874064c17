"""Config search: the fastest serving configuration of an ensemble under a latency SLA, found by
measurement on a local tritonserver and written back into the repository (docs/config_search.md).

    python -m benchmarks.config_search --repository model_repository/cpu --ensemble digits_fp32 \\
        --sla-ms 50 --concurrency 4 --concurrency 8

Modules: space (the knobs of each composing model, read from and written to config.pbtxt and
dali.py), strategy (coordinate descent), measure (a server per candidate on a private copy of the
repository, benchmarks.bench.measure_point per concurrency), report (JSON, table, Pareto plot),
writeback (backup, write the winner, record it in the manifest).
"""
