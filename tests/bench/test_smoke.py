"""The smoke version of `meterstream bench`: every phase runs and every output is written.

It asserts no speed: the figures depend on the machine and its load, and are judged by people
reading docs/benchmarks.md, never by a timed test.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from meterstream.bench import report
from meterstream.bench.suite import BenchOptions, run_bench
from meterstream.config import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.flink]


def test_bench_smoke_runs_every_phase_and_writes_table_json_and_plot(
    stack: Settings, tmp_path: Path
) -> None:
    options = BenchOptions.smoke(out_dir=tmp_path)
    results = run_bench(stack, options, say=print)
    paths = report.write(results, tmp_path)

    assert results.errors == []
    table = paths["table"].read_text()
    assert "1. pipeline throughput, parallelism 1" in table
    assert "3. freshness p99" in table
    data = json.loads(paths["json"].read_text())
    figures = {row["figure"]: row for row in data["headline"]}
    assert figures["1. pipeline throughput, parallelism 1"]["measured"] > 0
    assert figures["1. pipeline throughput, parallelism 1"]["baseline"] > 0
    assert any(f.startswith("3. freshness") and r["measured"] for f, r in figures.items())
    assert any(
        f.startswith("3. threshold -> webhook") and r["measured"] for f, r in figures.items()
    )
    assert 0 < data["alerts"]["notifications"] <= data["alerts"]["probes_sent"]
    assert any(f.startswith("4. dedup state") and r["measured"] for f, r in figures.items())
    assert any(f.startswith("4. recovery") and r["measured"] for f, r in figures.items())
    assert data["workload"]["records"] == options.records
    assert data["api"]["status"] == "measured"
    assert {"server", "clients"} <= data["api"]["cpu_ms_per_request"].keys()
    # The API and its baseline are measured in rounds taken in turn; each figure is a median.
    rounds, raw_rounds = data["api"]["rounds"], data["produce"]["batch_rounds"]
    assert len(rounds) == len(raw_rounds) == options.ingest_rounds
    # (JSON rounds floats to 4 decimals)
    assert data["api"]["events_per_s"] == pytest.approx(statistics.median(rounds), rel=1e-6)
    median_raw = statistics.median(raw_rounds)
    assert data["produce"]["batch_events_per_s"] == pytest.approx(median_raw, rel=1e-6)
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
