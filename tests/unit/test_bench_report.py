"""The benchmark report says when a baseline is only a lower bound."""

from __future__ import annotations

from meterstream.bench import report
from meterstream.bench.ingest import ApiFigures, ProduceFigures
from meterstream.bench.pipeline import Throughput
from meterstream.bench.suite import BenchOptions, BenchResults


def _run(job: str, rate: float, *, coarse: bool, records: int = 1_000) -> Throughput:
    return Throughput(
        job=job,
        parallelism=1,
        records=records,
        events_per_s=rate,
        steady_events_per_s=rate,
        seconds=1_000 / rate,
        startup_s=0.0,
        samples=[],
        coarse=coarse,
    )


def _pipeline_note(blackhole_coarse: bool, blackhole_records: int = 1_000) -> str:
    results = BenchResults(options=BenchOptions(parallelism=(1,)), run_id="x", machine={})
    results.workload = {"records": 1_000}
    results.throughput = [
        _run("pipeline", 20_000, coarse=False),
        _run("blackhole", 200_000, coarse=blackhole_coarse, records=blackhole_records),
    ]
    rows = report.headline(results)
    return next(r for r in rows if r["figure"] == "1. pipeline throughput, parallelism 1")["note"]


def test_a_blackhole_too_fast_to_sample_is_reported_as_a_lower_bound() -> None:
    assert "lower bound" in _pipeline_note(blackhole_coarse=True)
    assert "lower bound" not in _pipeline_note(blackhole_coarse=False)


def test_a_blackhole_that_read_the_records_several_times_over_says_so() -> None:
    assert "5 times over" in _pipeline_note(blackhole_coarse=False, blackhole_records=5_000)
    assert "times over" not in _pipeline_note(blackhole_coarse=False)


def test_the_api_is_judged_by_its_median_round_against_the_median_raw_produce() -> None:
    results = BenchResults(options=BenchOptions(parallelism=(1,)), run_id="x", machine={})
    raw_rounds = (150_000.0, 200_000.0, 260_000.0)
    results.produce = ProduceFigures(0.0, 200_000.0, 5.0, 9.0, 600, batch_rounds=raw_rounds)
    api_rounds = (90_000.0, 110_000.0, 120_000.0)
    results.api = ApiFigures("measured", 110_000.0, 30.0, 50.0, rounds=api_rounds)
    rows = {r["figure"]: r for r in report.headline(results)}
    api = rows["2. ingest API accepted (1,000-event batches, acks=all)"]
    assert api["ratio"] == 0.55  # noqa: PLR2004
    assert api["met"] is True
    assert api["note"].startswith("median of 3 rounds (90,000, 110,000, 120,000); ")
    raw = rows["   raw produce, 1,000-event batches acked one by one"]
    assert raw["note"].startswith("median of 3 rounds (150,000, 200,000, 260,000); ")
    results.api = ApiFigures("measured", 99_000.0, 30.0, 50.0, rounds=api_rounds)
    assert not {r["figure"]: r for r in report.headline(results)}[api["figure"]]["met"]


def test_the_pipeline_is_judged_against_reading_and_parsing_and_the_sql_path() -> None:
    results = BenchResults(options=BenchOptions(parallelism=(1,)), run_id="x", machine={})
    results.workload = {"records": 1_000}
    results.throughput = [
        _run("pipeline", 120_000, coarse=False),
        _run("blackhole", 1_200_000, coarse=False),
        _run("parse", 200_000, coarse=False),
        _run("pipeline-sql", 40_000, coarse=False),
    ]
    rows = {r["figure"]: r for r in report.headline(results)}
    pipeline = rows["1. pipeline throughput, parallelism 1"]
    assert (pipeline["baseline"], pipeline["ratio"], pipeline["met"]) == (200_000, 0.6, True)
    assert "bare read into a blackhole (1,200,000 events/s): 0.10x" in pipeline["note"]
    keyed = rows["1. pipeline, parallelism 1, keyed operator vs the SQL reference path"]
    assert (keyed["baseline"], keyed["ratio"], keyed["met"]) == (40_000, 3.0, True)
    results.throughput[0] = _run("pipeline", 90_000, coarse=False)
    rows = {r["figure"]: r for r in report.headline(results)}
    assert rows["1. pipeline throughput, parallelism 1"]["met"] is False
