"""The benchmark's outputs: a table (Markdown), JSON and a PNG of throughput and lag over time.

Each figure sits next to its target and its baseline from the same run; a figure that was not
measured says so.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from meterstream.bench.pipeline import Throughput
from meterstream.bench.state import Recovery, seconds
from meterstream.bench.suite import BenchResults

#: The performance bar (issue "Benchmarks and the performance bar").
TARGETS = {
    "pipeline_events_per_s": 100_000,
    "pipeline_vs_parse": 0.5,
    "pipeline_vs_sql_path": 2.0,
    "api_events_per_s": 100_000,
    "api_vs_produce": 0.5,
    "freshness_p99_s": 1.0,
    "dedup_bytes_per_key": 100,
    "recovery_s": 30,
}


#: Below this share of probes seen, the p99 is a lower bound and the target is not met.
MIN_PROBES_SEEN = 0.99


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in ("exact", "dedup_bytes_per_key"):
            if hasattr(type(value), name):
                out[name] = getattr(value, name)
        return out
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return round(value, 4)
    return value


def _run(results: BenchResults, job: str, parallelism: int) -> Throughput | None:
    return next(
        (t for t in results.throughput if t.job == job and t.parallelism == parallelism), None
    )


def _recovery_note(rec: Recovery) -> str:
    """How the recovery went: restart, first fresh probe, lag; or why it was not measured."""
    if not rec.measured:
        return "not measured: " + rec.detail
    note = (
        f"{rec.detail}; RUNNING again {seconds(rec.to_running_s)} s after the SIGKILL, first "
        f"probe visible within {rec.fresh_s:.1f} s after {seconds(rec.to_caught_up_s)} s; live "
        f"again = every later probe visible within {rec.fresh_s:.1f} s"
    )
    if rec.max_lag is not None:
        note += f"; max lag {rec.max_lag} records (before the kill: {rec.lag_before_kill})"
    if rec.live_again_s is None:
        note = f"NOT live again within {rec.waited_s:.0f} s; " + note
    return note


def _rounds_note(rounds: tuple[float, ...]) -> str:
    """What a figure measured as the median of several rounds says about them.

    >>> _rounds_note((100.0, 300.0, 200.0))
    'median of 3 rounds (100, 300, 200); '
    """
    if len(rounds) < 2:  # noqa: PLR2004
        return ""
    return f"median of {len(rounds)} rounds ({', '.join(f'{r:,.0f}' for r in rounds)}); "


def _cpu_note(cpu_ms: dict[str, float]) -> str:
    """'CPU per request: server 7.4 ms, ...; ' or nothing when not measured."""
    if not cpu_ms:
        return ""
    return "CPU per request: " + ", ".join(f"{k} {v:.1f} ms" for k, v in cpu_ms.items()) + "; "


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def headline(results: BenchResults) -> list[dict[str, Any]]:  # noqa: PLR0912, PLR0915 - a row each
    """One row per figure: measured, baseline, ratio, target, met."""
    rows: list[dict[str, Any]] = []

    def row(figure: str, measured: float | None, unit: str, **extra: Any) -> None:
        rows.append(
            {
                "figure": figure,
                "measured": measured,
                "unit": unit,
                "baseline": extra.get("baseline"),
                "ratio": extra.get("ratio"),
                "target": extra.get("target", "(reported)"),
                "met": extra.get("met"),
                "note": extra.get("note", ""),
            }
        )

    workload_records = (results.workload or {}).get("records")
    for p in results.options.parallelism:
        pipe, hole = _run(results, "pipeline", p), _run(results, "blackhole", p)
        parse = _run(results, "parse", p)
        measured = pipe.steady_events_per_s if pipe else None
        base = parse.steady_events_per_s if parse else None
        ratio = _ratio(measured, base)
        bare = _ratio(measured, hole.steady_events_per_s if hole else None)
        row(
            f"1. pipeline throughput, parallelism {p}",
            measured,
            "events/s",
            baseline=base,
            ratio=ratio,
            target=">= 100,000 and >= 0.5x read-and-parse",
            met=None
            if measured is None
            else measured >= TARGETS["pipeline_events_per_s"]
            and (ratio or 0) >= TARGETS["pipeline_vs_parse"],
            note="baseline: a Flink job that reads the same records and parses each one's JSON"
            " once (jobs/read_blackhole.py --parse)"
            + (
                f"; against a bare read into a blackhole ({hole.steady_events_per_s:,.0f}"
                f" events/s): {bare:.2f}x"
                if hole and bare is not None
                else ""
            )
            + (
                f" ({hole.records // workload_records} times over, from a topic of their own)"
                if hole and workload_records and hole.records > workload_records
                else ""
            )
            + (
                "; the baselines read every record before their first progress sample, so"
                " their figure is job RUNNING -> finished, task start-up included: a lower"
                " bound, and the ratio an upper bound"
                if (hole and hole.coarse) or (parse and parse.coarse)
                else ""
            )
            + (
                f"; PostgreSQL counted {pipe.counted_events:,} of {pipe.expected_events:,} "
                f"distinct events, logged {pipe.rejections:,} of {pipe.expected_rejections:,} "
                "malformed"
                if pipe and pipe.expected_events is not None and not pipe.time_boxed
                else ""
            )
            + (
                f"; time-boxed: stopped {pipe.seconds:.0f} s after its first record, having "
                f"read {pipe.records:,} records"
                if pipe and pipe.time_boxed
                else ""
            )
            + (
                f"; the job FAILED OVER {pipe.restarts} time(s) during the run "
                f"(re-read records count as read): {'; '.join(pipe.failures)}"
                if pipe and pipe.restarts
                else ""
            ),
        )
    operator, sql = _run(results, "pipeline", 1), _run(results, "pipeline-sql", 1)
    if sql is not None:
        measured = operator.steady_events_per_s if operator else None
        ratio = _ratio(measured, sql.steady_events_per_s)
        row(
            "1. pipeline, parallelism 1, keyed operator vs the SQL reference path",
            measured,
            "events/s",
            baseline=sql.steady_events_per_s,
            ratio=ratio,
            target=">= 2x",
            met=None if ratio is None else ratio >= TARGETS["pipeline_vs_sql_path"],
            note="baseline: the same job with METERSTREAM_FLINK_KEYED_PATH=sql (dedup and "
            "figures in Flink SQL's operators)",
        )
    fast, python = _run(results, "pipeline", 1), _run(results, "pipeline-python", 1)
    if python is not None:
        row(
            "1. pipeline, parallelism 1, JVM fast path vs every event through Python",
            fast.steady_events_per_s if fast else None,
            "events/s",
            baseline=python.steady_events_per_s,
            ratio=_ratio(fast.steady_events_per_s if fast else None, python.steady_events_per_s),
            note="baseline: the same job with METERSTREAM_FLINK_FAST_PATH=false (as before "
            "the fast path)",
        )
    produce, api = results.produce, results.api
    api_figure = "2. ingest API accepted (1,000-event batches, acks=all)"
    api_target = ">= 100,000 and >= 0.5x raw produce"
    base = produce.batch_events_per_s if produce else None
    if api is None or api.events_per_s is None:
        row(
            api_figure,
            None,
            "events/s",
            baseline=base,
            target=api_target,
            note=(api.status + ": " + api.detail) if api else "not measured yet",
        )
    else:
        ratio = _ratio(api.events_per_s, base)
        row(
            api_figure,
            api.events_per_s,
            "events/s",
            baseline=base,
            ratio=ratio,
            target=api_target,
            met=api.events_per_s >= TARGETS["api_events_per_s"]
            and (ratio or 0) >= TARGETS["api_vs_produce"],
            note=_rounds_note(api.rounds)
            + f"request latency p50 {api.p50_ms or 0:.0f} ms, p99 {api.p99_ms or 0:.0f} ms; "
            + _cpu_note(api.cpu_ms_per_request)
            + api.detail,
        )
    if produce:
        latency = ""
        if produce.batch_p50_ms is not None and produce.batch_p99_ms is not None:
            latency = (
                f"batch latency p50 {produce.batch_p50_ms:.1f} ms, "
                f"p99 {produce.batch_p99_ms:.1f} ms"
            )
        row(
            "   raw produce, 1,000-event batches acked one by one",
            produce.batch_events_per_s,
            "events/s",
            target="(baseline)",
            note=_rounds_note(produce.batch_rounds) + latency,
        )
        row(
            "   raw produce, streaming",
            produce.streaming_events_per_s,
            "events/s",
            target="(baseline)",
        )
    fresh = results.freshness
    note = ""
    if fresh and fresh.p50_s is not None and fresh.max_s is not None:
        note = (
            f"p50 {fresh.p50_s:.3f} s, max {fresh.max_s:.3f} s, {fresh.probes_seen}/"
            f"{fresh.probes_sent} probes seen, input {fresh.achieved_rate:,.0f} events/s; "
            f"PostgreSQL commit (updated_at) p50 {fresh.commit_p50_s:.3f} s, "
            f"p99 {fresh.commit_p99_s:.3f} s"
        )
    # A probe not visible by the end of the window is later than every one that was.
    lost = bool(fresh and fresh.probes_seen < MIN_PROBES_SEEN * fresh.probes_sent)
    if lost and fresh:
        note = (
            f"only {fresh.probes_seen} of {fresh.probes_sent} probes became visible within "
            f"{fresh.seconds:.0f} s + 3 s: the job did not keep up at this rate; " + note
        )
    row(
        "3. freshness p99, Kafka arrival -> visible in PostgreSQL at "
        f"{results.options.fresh_rate:,.0f} events/s",
        fresh.p99_s if fresh else None,
        "s",
        target="<= 1 s",
        met=False
        if lost
        else None
        if fresh is None or fresh.p99_s is None
        else fresh.p99_s <= TARGETS["freshness_p99_s"],
        note=note,
    )
    alerting = results.alerts
    if alerting is not None or results.options.alerts_seconds > 0:
        rate = f"{results.options.fresh_rate:,.0f} events/s"
        row(
            f"3. threshold -> webhook latency p99 (Kafka arrival -> verified webhook) at {rate}",
            alerting.p99_s if alerting else None,
            "s",
            baseline=fresh.p99_s if fresh else None,
            ratio=_ratio(alerting.fresh_p99_s, fresh.p99_s) if alerting and fresh else None,
            note=(
                f"max {alerting.max_s or 0:.3f} s, {alerting.notifications}/"
                f"{alerting.probes_sent} probes notified, each the first unit of an account a "
                "rule watches; the alerts service as its own process, default settings (500 ms "
                "evaluator poll); baseline: freshness p99 before the service started; ratio: "
                f"freshness p99 while it ran ({alerting.fresh_p99_s or 0:.3f} s) over that"
                if alerting
                else "not measured"
            ),
        )
        row(
            "   threshold -> webhook latency p50",
            alerting.p50_s if alerting else None,
            "s",
            baseline=fresh.p50_s if fresh else None,
            note="baseline: freshness p50 before the alerts service started",
        )
        row(
            "   the alerts service's part: visible in PostgreSQL -> verified webhook, p99",
            alerting.service_p99_s if alerting else None,
            "s",
            note=f"p50 {alerting.service_p50_s or 0:.3f} s; per probe, from the moment the bench's "
            "poller first saw its row to the webhook's arrival: the evaluator's poll, its pass, "
            "the outbox and the HTTP request"
            if alerting
            else "",
        )
    st = results.state
    per_key = st.dedup_bytes_per_key if st else None
    row(
        f"4. dedup state per key after {st.distinct_ids:,} distinct ids"
        if st
        else "4. dedup state per key",
        per_key,
        "bytes",
        target="<= 100",
        met=None if per_key is None else per_key <= TARGETS["dedup_bytes_per_key"],
        note=f"operator: {st.dedup_vertex}; whole job state {st.total_state_bytes} B" if st else "",
    )
    if st:
        row(
            "   checkpoint duration at the fixed rate (p50)",
            st.steady_duration_p50_ms,
            "ms",
            note=f"max {st.steady_duration_max_ms} ms, full state {st.steady_state_bytes} B, "
            f"uploaded per checkpoint {st.steady_checkpointed_bytes_avg or 0:,.0f} B avg, "
            f"{st.steady_checkpoints} completed, {st.steady_not_completed} not completed "
            f"in the window; the checkpoint after the backlog took "
            f"{st.checkpoint_duration_ms} ms for {st.total_state_bytes} B of state",
        )
    for rec, figure in (
        (results.recovery, "4. recovery, local job: SIGKILL -> live again"),
        (results.cluster_recovery, "4. recovery, cluster: TaskManager SIGKILL -> live again"),
    ):
        row(
            figure,
            rec.live_again_s if rec else None,
            "s",
            target="<= 30 s",
            met=rec.live_again_s is not None and rec.live_again_s <= TARGETS["recovery_s"]
            if rec and rec.measured
            else None,
            note=_recovery_note(rec) if rec else "not run",
        )
    p1, p2 = _run(results, "pipeline", 1), _run(results, "pipeline", 2)
    if p1 and p2:
        b1, b2 = _run(results, "blackhole", 1), _run(results, "blackhole", 2)
        hole = _ratio(b2.steady_events_per_s, b1.steady_events_per_s) if b1 and b2 else None
        row(
            "5. scaling: pipeline parallelism 2 / parallelism 1",
            _ratio(p2.steady_events_per_s, p1.steady_events_per_s),
            "x",
            note=f"blackhole p2/p1: {hole:.2f}x" if hole else "",
        )
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"  # noqa: PLR2004
    return str(value)


def markdown(results: BenchResults) -> str:
    """The results table in Markdown, with the machine, load and run in a header."""
    m = results.machine
    lines = [
        f"# meterstream bench, run {results.run_id}",
        "",
        f"- machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}",
        f"- load average (1/5/15 min): start {_load(m.get('load_at_start'))}, "
        f"end {_load(m.get('load_at_end'))}",
        f"- workload: {results.workload.get('records', 0):,} records "
        f"({results.workload.get('distinct_events', 0):,} distinct events, "
        f"{results.workload.get('mean_record_bytes')} B mean), "
        f"meters: {', '.join(results.workload.get('meters', []))}; "
        f"segmented: {', '.join(results.workload.get('segmented_meters', [])) or 'none'}",
        f"- took {results.seconds:.0f} s",
        *(
            [f"- **what-if experiment**, extra Flink options: {'; '.join(results.options.what_if)}"]
            if results.options.what_if
            else []
        ),
        "",
        "| figure | measured | unit | baseline (same run) | ratio | target | met |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    for r in headline(results):
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else ""
        measured = "not reached" if r["measured"] is None and r["met"] is False else None
        lines.append(
            f"| {r['figure']} | {measured or _fmt(r['measured'])} | {r['unit']} | "
            f"{_fmt(r['baseline']) if r['baseline'] else ''} | {ratio} | {r['target']} | {met} |"
        )
    notes = [f"- {r['figure'].strip()}: {r['note']}" for r in headline(results) if r["note"]]
    lines += ["", "Notes:", *notes]
    cpu = [t for t in results.throughput if t.cpu_threads]
    for t in cpu:
        lines += [
            "",
            f"Where the cycles went, {t.job} p={t.parallelism} (cores used during the run; "
            f"machine busy {t.machine_busy_cores or 0:.2f} of {m['cores']}):",
            "",
        ]
        lines += [f"- {label}: {share:.2f}" for label, share in t.cpu_threads[:10]]
        lines += [f"- {name} (process): {share:.2f}" for name, share in t.cpu_services.items()]
        if t.java_stacks:
            lines += ["", "What each task thread was doing (share of Java stack samples):", ""]
            for thread, kinds in t.java_stacks.items():
                doing = ", ".join(f"{what} {share:.0%}" for what, share in kinds[:3])
                lines.append(f"- {thread}: {doing}")
        if t.python_profile:
            lines += ["", "Python in the task thread (py-spy, inclusive share of samples):", ""]
            lines += [f"- {share:.0%} {frame}" for frame, share in t.python_profile[:12]]
    if results.errors:
        lines += ["", "Phases that failed:", *[f"- {e}" for e in results.errors]]
    return "\n".join(lines) + "\n"


def _load(value: Any) -> str:
    return " / ".join(f"{x:.2f}" for x in value) if value else "?"


def to_json(results: BenchResults) -> dict[str, Any]:
    """Everything measured, including the time series, as JSON-ready data."""
    data = _plain(results)
    data["headline"] = headline(results)
    data["targets"] = TARGETS
    return data


def plot(results: BenchResults, path: Path) -> None:
    """Throughput and lag over time for every run, and the live phase, in one PNG."""
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(3, 1, figsize=(11, 12))
    rate_ax, lag_ax, live_ax = axes
    for t in results.throughput:
        xs, rates = _rates(t.samples)
        label = f"{t.job} p={t.parallelism}"
        rate_ax.plot(xs, rates, label=label)
        lag = [(x, p) for x, _, p in t.samples if p is not None and x >= 0]
        if lag:
            lag_ax.plot([x for x, _ in lag], [p for _, p in lag], label=label)
    rate_ax.set_title("Throughput draining the same pre-produced topic (from the first record)")
    rate_ax.set_xlabel("s")
    rate_ax.set_ylabel("events/s (1 s window)")
    rate_ax.set_yscale("log")
    if rate_ax.get_legend_handles_labels()[0]:
        rate_ax.legend()
    lag_ax.set_title("Lag: records still in Kafka (Flink pendingRecords)")
    lag_ax.set_xlabel("s")
    lag_ax.set_ylabel("records")
    if lag_ax.get_legend_handles_labels()[0]:
        lag_ax.legend()
    live = results.live_series
    if live.get("probes"):
        live_ax.plot(*zip(*live["probes"], strict=True), ".", ms=2, label="probe freshness (s)")
        live_ax.set_ylabel("arrival -> visible in PostgreSQL (s)")
        live_ax.axhline(1.0, color="red", lw=0.8, ls="--", label="target p99 1 s")
    if live.get("kill_at"):
        live_ax.axvline(live["kill_at"][0], color="black", lw=1, label="SIGKILL")
    if live.get("lag"):
        lag2 = live_ax.twinx()
        lag2.plot(*zip(*live["lag"], strict=True), color="gray", lw=0.8, label="lag (records)")
        lag2.set_ylabel("lag (records)")
        lag2.legend(loc="upper right")
    live_ax.set_title(
        f"Live phase at {results.options.fresh_rate:,.0f} events/s: freshness, lag, kill + restore"
    )
    live_ax.set_xlabel("s since the freshness window started")
    if live_ax.get_legend_handles_labels()[0]:
        live_ax.legend(loc="upper left")
    fig.suptitle(f"meterstream bench {results.run_id}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _rates(samples: list[tuple[float, int, int | None]]) -> tuple[list[float], list[float]]:
    """Events/s over ~1 s windows from cumulative (time, read) samples."""
    points = [(x, r) for x, r, _ in samples if x >= 0]
    xs: list[float] = []
    rates: list[float] = []
    j = 0
    for i, (x, r) in enumerate(points):
        while j < i and x - points[j][0] > 1.0:
            j += 1
        if j < i and x > points[j][0] and r > points[j][1]:
            xs.append(x)
            rates.append((r - points[j][1]) / (x - points[j][0]))
    return xs, rates


def write(results: BenchResults, out_dir: Path) -> dict[str, Path]:
    """Write results.md, results.json and results.png (plus a copy under the run id)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "table": out_dir / "results.md",
        "json": out_dir / "results.json",
        "plot": out_dir / "results.png",
    }
    paths["table"].write_text(markdown(results))
    paths["json"].write_text(json.dumps(to_json(results), indent=1, default=str) + "\n")
    plot(results, paths["plot"])
    runs = out_dir / "runs"
    runs.mkdir(exist_ok=True)
    for kind, path in paths.items():
        (runs / f"{results.run_id}-{path.name}").write_bytes(path.read_bytes())
        del kind
    return paths
