"""Benchmarks: `meterstream bench` measures the pipeline against baselines taken in the same run.

Each figure is reported next to its baseline (a bare Flink read of the same topic, a raw Kafka
produce of the same events), as a table, as JSON and as a PNG in `bench-results/`.
"""
