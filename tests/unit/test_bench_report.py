"""The benchmark report says when a baseline is only a lower bound."""

from __future__ import annotations

from meterstream.bench import report
from meterstream.bench.pipeline import Throughput
from meterstream.bench.suite import BenchOptions, BenchResults


def _run(job: str, rate: float, *, coarse: bool) -> Throughput:
    return Throughput(
        job=job,
        parallelism=1,
        records=1_000,
        events_per_s=rate,
        steady_events_per_s=rate,
        seconds=1_000 / rate,
        startup_s=0.0,
        samples=[],
        coarse=coarse,
    )


def _pipeline_note(blackhole_coarse: bool) -> str:
    results = BenchResults(options=BenchOptions(parallelism=(1,)), run_id="x", machine={})
    results.throughput = [
        _run("pipeline", 20_000, coarse=False),
        _run("blackhole", 200_000, coarse=blackhole_coarse),
    ]
    rows = report.headline(results)
    return next(r for r in rows if r["figure"] == "1. pipeline throughput, parallelism 1")["note"]


def test_a_blackhole_too_fast_to_sample_is_reported_as_a_lower_bound() -> None:
    assert "lower bound" in _pipeline_note(blackhole_coarse=True)
    assert "lower bound" not in _pipeline_note(blackhole_coarse=False)
