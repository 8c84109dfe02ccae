"""`meterstream bench`: run the benchmark on the local stack and write the table, JSON and PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from meterstream.config import PROJECT_ROOT

console = Console()


def bench(
    smoke: Annotated[
        bool, typer.Option(help="a short run of every phase, about 2-3 minutes (what CI runs)")
    ] = False,
    records: Annotated[
        int | None, typer.Option(help="records pre-produced for the throughput runs")
    ] = None,
    parallelism: Annotated[
        list[int] | None, typer.Option(help="parallelism to measure (repeatable); default 1, 2")
    ] = None,
    fresh_rate: Annotated[
        float | None, typer.Option(help="input rate of the freshness phase, events/s")
    ] = None,
    fresh_seconds: Annotated[float | None, typer.Option(help="freshness window, s")] = None,
    alerts_seconds: Annotated[
        float | None,
        typer.Option(help="threshold -> webhook latency window after freshness, s (0: skip)"),
    ] = None,
    window: Annotated[
        float | None, typer.Option(help="time box of each throughput run from its first record, s")
    ] = None,
    live: Annotated[bool, typer.Option(help="run the state, freshness and recovery phase")] = True,
    recovery: Annotated[bool, typer.Option(help="kill the live job and time its restore")] = True,
    cluster_recovery: Annotated[
        bool,
        typer.Option(help="start a standalone cluster, kill the job's TaskManager, time it"),
    ] = True,
    python_baseline: Annotated[
        bool, typer.Option(help="also run the pipeline with every event through Python (p=1)")
    ] = True,
    seed: Annotated[int, typer.Option(help="workload seed")] = 42,
    out: Annotated[Path | None, typer.Option(help="output directory")] = None,
    keep_topics: Annotated[bool, typer.Option(help="keep the run's Kafka topics")] = False,
    what_if: Annotated[
        list[str] | None,
        typer.Option(help="extra Flink option KEY=VALUE for an experiment (repeatable)"),
    ] = None,
) -> None:
    """Benchmark the pipeline against baselines measured in the same run (see docs/benchmarks.md).

    Starts the local stack if it is not running (and leaves it running). Results go to
    bench-results/ (results.md, results.json, results.png; each run also under runs/).
    """
    from meterstream.bench import report  # noqa: PLC0415 - keep `--help` fast
    from meterstream.bench.suite import BenchOptions, run_bench  # noqa: PLC0415
    from meterstream.config import load_settings  # noqa: PLC0415
    from meterstream.errors import MeterstreamError  # noqa: PLC0415
    from meterstream.stack import local  # noqa: PLC0415

    base = BenchOptions.smoke() if smoke else BenchOptions()
    changes: dict[str, object] = {"seed": seed, "live": live, "recovery": recovery}
    changes["python_baseline"] = python_baseline
    changes["cluster_recovery"] = cluster_recovery
    changes["keep_topics"] = keep_topics
    for name, value in (
        ("records", records),
        ("fresh_rate", fresh_rate),
        ("fresh_seconds", fresh_seconds),
        ("alerts_seconds", alerts_seconds),
        ("throughput_window_s", window),
        ("out_dir", out),
    ):
        if value is not None:
            changes[name] = value
    if parallelism:
        changes["parallelism"] = tuple(parallelism)
    if what_if:
        changes["what_if"] = tuple(what_if)
    options = BenchOptions(
        **{**{f: getattr(base, f) for f in base.__dataclass_fields__}, **changes}
    )
    settings = load_settings()
    try:
        local.up(settings, say=lambda _line: None)
    except MeterstreamError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from exc
    results = run_bench(settings, options, say=console.print)
    paths = report.write(results, options.out_dir)
    console.print(report.markdown(results))
    for kind, path in paths.items():
        shown = path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path
        console.print(f"{kind}: {shown}")
    if results.errors:
        raise typer.Exit(code=2)
