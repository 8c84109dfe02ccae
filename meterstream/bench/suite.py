"""The whole benchmark, in order: workload, throughput, baselines, state, freshness, recovery.

Every figure is taken in the same run as its baseline, on the same topic, on the same machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import random
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meterstream.bench import alerts, cluster_recovery, freshness, ingest, pipeline, state
from meterstream.bench.flinkjob import JobRun, aggregate_argv, launch
from meterstream.bench.generator import Generated, Workload, generate, iter_records
from meterstream.bench.jobwrap import WHAT_IF_ENV
from meterstream.config import PROJECT_ROOT, Settings
from meterstream.flink.launch import JobOptions, latest_checkpoint
from meterstream.meters.registry import MeterRegistry, load_registry
from meterstream.stack.kafka import admin_config

Say = Callable[[str], None]
#: The live backlog is what the job drains in this share of the drain time box.
DRAINABLE = 0.6
#: The blackhole reads the workload's records this many times over, from a topic of its own:
#: it reads one copy (1.2 M records) in ~2-4 s, over before its first progress sample, so its
#: figure was "RUNNING -> finished" with task start-up, a low and erratic baseline (124-343k).
BLACKHOLE_PASSES = 5


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to run and how big; `smoke()` is the short version CI runs."""

    records: int = 1_200_000
    parallelism: tuple[int, ...] = (1, 2)
    fresh_rate: float = 10_000.0
    fresh_seconds: float = 60.0
    live: bool = True
    recovery: bool = True
    #: Also time recovery on a standalone cluster (its TaskManager killed), after the live phase.
    cluster_recovery: bool = True
    #: Also run the pipeline with the JVM fast path off (every event through Python), p=1.
    python_baseline: bool = True
    #: Also run the pipeline with dedup and figures on the SQL reference path, p=1.
    sql_baseline: bool = True
    batch_records: int = 200_000
    #: Rounds of raw produce and API, taken in turn; each figure is the median round.
    ingest_rounds: int = ingest.ROUNDS
    seed: int = 42
    out_dir: Path = PROJECT_ROOT / "bench-results"
    keep_topics: bool = False
    #: Time boxes, from each job's first record: a throughput run, the live job's backlog.
    throughput_window_s: float = 75.0
    drain_window_s: float = 100.0
    recovery_timeout_s: float = 150.0
    #: Extra Flink options for a what-if experiment (not the job as shipped); see jobwrap.
    what_if: tuple[str, ...] = ()
    #: After the freshness window: the alerts service runs for this long at the same rate and
    #: each probe crosses a threshold (threshold -> webhook latency); 0: not measured.
    alerts_seconds: float = 60.0

    @classmethod
    def smoke(cls, out_dir: Path | None = None) -> BenchOptions:
        """A tiny run that exercises every phase and writes every output."""
        return cls(
            records=20_000,
            parallelism=(1,),
            python_baseline=False,
            sql_baseline=False,
            fresh_rate=1_000.0,
            fresh_seconds=6.0,
            alerts_seconds=6.0,
            batch_records=10_000,
            ingest_rounds=2,
            out_dir=out_dir or PROJECT_ROOT / "bench-results" / "smoke",
            throughput_window_s=30.0,
            drain_window_s=60.0,
            recovery_timeout_s=150.0,
        )


@dataclass(slots=True)
class BenchResults:
    """Everything measured, as plain data (the report renders it)."""

    options: BenchOptions
    run_id: str
    machine: dict[str, Any]
    workload: dict[str, Any] = field(default_factory=dict)
    produce: ingest.ProduceFigures | None = None
    api: ingest.ApiFigures | None = None
    throughput: list[pipeline.Throughput] = field(default_factory=list)
    state: state.StateFigures | None = None
    freshness: freshness.Freshness | None = None
    alerts: alerts.AlertLatency | None = None
    recovery: state.Recovery | None = None
    cluster_recovery: state.Recovery | None = None
    live_series: dict[str, list[Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def machine_info() -> dict[str, Any]:
    """The machine and the load on it (the bench shares its cores)."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    meminfo = Path("/proc/meminfo").read_text().split() if Path("/proc/meminfo").exists() else []
    mem_gib = round(int(meminfo[1]) / 2**20, 1) if len(meminfo) > 1 else None
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_at_start": os.getloadavg(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def create_topics(settings: Settings, raw: str, rejected: str | None) -> None:
    """The run's topics; the raw one stamps records with the broker's append time."""
    from confluent_kafka.admin import AdminClient, NewTopic  # noqa: PLC0415

    admin = AdminClient(admin_config(settings))
    topics = [
        NewTopic(
            raw,
            num_partitions=settings.kafka.topics.partitions,
            replication_factor=1,
            config={"message.timestamp.type": "LogAppendTime"},
        ),
    ]
    if rejected:
        topics.append(NewTopic(rejected, num_partitions=1, replication_factor=1))
    for future in admin.create_topics(topics, operation_timeout=30).values():
        future.result()


def delete_topics(settings: Settings, names: list[str]) -> None:
    """Delete the run's topics so the disk does not fill."""
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    admin = AdminClient(admin_config(settings))
    for future in admin.delete_topics(names, operation_timeout=60).values():
        with contextlib.suppress(Exception):  # best effort; the topic may not exist
            future.result()


def _workload_summary(gen: Generated, seconds: float) -> dict[str, Any]:
    accounts = {r.key for r in gen.records}
    return {
        "records": len(gen.records),
        "distinct_events": gen.distinct_events,
        "kinds": dict(gen.kinds),
        "meters": list(gen.meters),
        "segmented_meters": list(gen.segmented_meters),
        "accounts_seen": len(accounts),
        "mean_record_bytes": round(gen.mean_bytes, 1),
        "generation_events_per_s": round(len(gen.records) / seconds),
    }


def _probe_meter(registry: MeterRegistry) -> tuple[str, dict[str, Any]]:
    """A meter and a valid payload for probes (api_calls when it exists)."""
    from meterstream.bench.generator import _event_data  # noqa: PLC0415

    name = "api_calls" if "api_calls" in registry.names() else registry.names()[0]
    meter = registry.current(name)
    assert meter is not None  # noqa: S101 - names() lists only existing meters
    return name, _event_data(meter, random.Random(0))  # noqa: S311 - test data


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every phase of one run shares."""

    settings: Settings
    options: BenchOptions
    results: BenchResults
    registry: MeterRegistry
    gen: Generated
    prefix: str
    workdir: Path
    say: Say

    @property
    def raw(self) -> str:
        """The run's raw topic."""
        return f"{self.prefix}-raw"

    @property
    def rejected(self) -> str:
        """The run's rejected-events topic."""
        return f"{self.prefix}-rejected"

    @property
    def archive_dir(self) -> Path:
        """Where the run's jobs write the audit archive (deleted at the end, like checkpoints)."""
        return (self.workdir / "archive").resolve()

    @property
    def reads_topic(self) -> str:
        """The blackhole's topic: the workload's records, `BLACKHOLE_PASSES` times over."""
        return f"{self.prefix}-reads"

    @property
    def live_topic(self) -> str:
        """The live phase's topic: a backlog the job can drain, then the fixed-rate input."""
        return f"{self.prefix}-live"


def run_bench(settings: Settings, options: BenchOptions, say: Say = print) -> BenchResults:
    """Run every phase; a failing phase is recorded in `errors` and the others still run."""
    began = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{run_id}"
    results = BenchResults(options=options, run_id=run_id, machine=machine_info())
    if options.what_if:
        os.environ[WHAT_IF_ENV] = ";".join(options.what_if)
        say(f"WHAT-IF experiment, extra Flink options: {'; '.join(options.what_if)}")
    say(f"run {run_id}: load average {results.machine['load_at_start']}, topic {prefix}-raw")
    registry = load_registry(settings.schemas_dir)
    create_topics(settings, f"{prefix}-raw", f"{prefix}-rejected")
    workdir = options.out_dir / "work" / run_id
    try:
        t = time.perf_counter()
        gen = generate(
            Workload(options.records, seed=options.seed, account_prefix=prefix), registry
        )
        results.workload = _workload_summary(gen, time.perf_counter() - t)
        say(
            f"workload: {len(gen.records):,} records, {gen.distinct_events:,} distinct events, "
            f"{gen.mean_bytes:.0f} B mean, meters {', '.join(gen.meters)}"
        )
        ctx = RunContext(settings, options, results, registry, gen, prefix, workdir, say)
        _phase(ctx, "raw produce baseline", lambda: _produce(ctx))
        for p in options.parallelism:
            _phase(ctx, f"pipeline p={p}", lambda p=p: _throughput(ctx, "pipeline", p))
        if options.sql_baseline:
            # The same job with dedup and figures on the SQL reference path.
            _phase(ctx, "pipeline-sql p=1", lambda: _throughput(ctx, "pipeline-sql", 1))
        if options.python_baseline:
            # The pipeline as it was before the JVM fast path: every event through Python.
            _phase(ctx, "pipeline-python p=1", lambda: _throughput(ctx, "pipeline-python", 1))
        if options.live:
            _phase(ctx, "state, freshness, recovery", lambda: _live(ctx))
        if options.cluster_recovery:
            _phase(ctx, "recovery on a standalone cluster", lambda: _cluster_recovery(ctx))
        # Last: producing the blackhole's topic writes ~1.8 GB, which must not disturb the
        # timed phases above.
        _phase(ctx, "the blackhole's topic", lambda: _produce_reads(ctx))
        for p in options.parallelism:
            _phase(ctx, f"blackhole p={p}", lambda p=p: _throughput(ctx, "blackhole", p))
            _phase(ctx, f"read and parse p={p}", lambda p=p: _throughput(ctx, "parse", p))
    finally:
        if not options.keep_topics:
            topics = ("raw", "rejected", "batch", "reads", "live", "cluster")
            delete_topics(settings, [f"{prefix}-{t}" for t in topics])
        shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
        # The bench's events are not anyone's audit trail: the jobs archived them here.
        shutil.rmtree(workdir / "archive", ignore_errors=True)
    results.machine["load_at_end"] = os.getloadavg()
    results.seconds = time.monotonic() - began
    return results


def _phase(ctx: RunContext, name: str, action: Callable[[], None]) -> None:
    ctx.say(f"-- {name}")
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - report the phase as failed, run the others
        ctx.results.errors.append(f"{name}: {exc}")
        ctx.say(f"   FAILED: {str(exc)[:2000]}")


def _produce(ctx: RunContext) -> None:
    """Pre-produce the workload (the streaming baseline), then 1,000-event acked batches."""
    from meterstream.kafka_io import produce  # noqa: PLC0415
    from meterstream.stack.kafka import create_topics as create  # noqa: PLC0415

    t = time.perf_counter()
    produce(ctx.settings, ctx.raw, ctx.gen.records)
    streaming = len(ctx.gen.records) / (time.perf_counter() - t)
    ctx.say(f"   raw produce (streaming, acks=all): {streaming:,.0f} events/s")
    topic = f"{ctx.prefix}-batch"
    create(ctx.settings, [topic])
    records = ctx.gen.records[: ctx.options.batch_records]
    ctx.results.produce, ctx.results.api = ingest.measure_ingest(
        ctx.settings, topic, records, streaming, rounds=ctx.options.ingest_rounds
    )


def _produce_reads(ctx: RunContext) -> None:
    """The blackhole's topic: the workload's records, `BLACKHOLE_PASSES` times over."""
    from meterstream.kafka_io import produce  # noqa: PLC0415

    create_topics(ctx.settings, ctx.reads_topic, None)
    for _ in range(BLACKHOLE_PASSES):
        produce(ctx.settings, ctx.reads_topic, ctx.gen.records)


def _throughput(ctx: RunContext, job: str, parallelism: int) -> None:
    """One bounded run of `job` over the pre-produced topic (the blackhole: over its own)."""
    records = len(ctx.gen.records)
    topic = ctx.raw
    if job in ("blackhole", "parse"):
        topic, records = ctx.reads_topic, records * BLACKHOLE_PASSES
    if job.startswith("pipeline"):
        pipeline.clear_outputs(ctx.settings, ctx.prefix, ctx.raw)
    run = pipeline.run_bounded(
        ctx.settings,
        job=job,
        topic=topic,
        rejected_topic=ctx.rejected,
        records=records,
        parallelism=parallelism,
        workdir=ctx.workdir,
        window_s=ctx.options.throughput_window_s,
    )
    figures = pipeline.measure(run, job, parallelism, records)
    if job.startswith("pipeline"):
        counted, rejections = pipeline.outputs(ctx.settings, ctx.prefix, ctx.raw)
        malformed = sum(n for k, n in ctx.gen.kinds.items() if k.startswith("malformed"))
        figures = dataclasses.replace(
            figures,
            counted_events=counted,
            expected_events=ctx.gen.distinct_events,
            rejections=rejections,
            expected_rejections=malformed,
        )
    ctx.results.throughput.append(figures)
    ctx.say(
        f"   {job} p={parallelism}: {figures.steady_events_per_s:,.0f} events/s steady, "
        f"{figures.events_per_s:,.0f} first record -> finished ({figures.seconds:.1f} s), "
        f"start-up {figures.startup_s:.1f} s"
    )


@dataclass(slots=True)
class _Live:
    """The live phase's moving parts."""

    ctx: RunContext
    poller: freshness.ProbePoller
    jobs: list[JobRun] = field(default_factory=list)
    producer: freshness.PacedProducer | None = None
    window_start: float = 0.0

    @property
    def checkpoints(self) -> Path:
        return self.ctx.workdir / "checkpoints" / "live"

    def start(self, name: str, restore_from: str | None = None) -> JobRun:
        argv = aggregate_argv(
            JobOptions(
                topic=self.ctx.live_topic,
                rejected_topic=self.ctx.rejected,
                group_id=f"{self.ctx.prefix}-live",
                checkpoint_dir=self.checkpoints,
                restore_from=restore_from,
                job_name=f"{self.ctx.prefix}-{name}",
                archive_dir=self.ctx.archive_dir,
            )
        )
        run = launch(
            name,
            argv,
            env={"METERSTREAM_FLINK_PARALLELISM": "1"},
            log=self.ctx.workdir / "logs" / f"{name}.log",
            stack_dir=self.ctx.settings.stack_dir,
        )
        self.jobs.append(run)
        return run

    def close(self) -> None:
        if self.producer is not None:
            self.producer.stop()
        self.poller.stop()
        for job in self.jobs:
            if job.proc.poll() is None:
                job.kill()


def _live(ctx: RunContext) -> None:
    """Unbounded job: drain a backlog (state), then a fixed rate (freshness), then a kill.

    The backlog is as much of the workload as the job drained in 60% of the drain time box in
    the parallelism-1 run, so that freshness is measured on a job that has caught up.
    """
    from meterstream.kafka_io import produce  # noqa: PLC0415

    pipeline.clear_outputs(ctx.settings, ctx.prefix, ctx.raw)
    p1 = next((t for t in ctx.results.throughput if t.job == "pipeline"), None)
    backlog = len(ctx.gen.records)
    if p1 is not None and p1.steady_events_per_s > 0:
        capacity = int(DRAINABLE * p1.steady_events_per_s * ctx.options.drain_window_s)
        backlog = max(1_000, min(backlog, capacity))
    create_topics(ctx.settings, ctx.live_topic, None)
    produce(ctx.settings, ctx.live_topic, ctx.gen.records[:backlog])
    ctx.say(f"   live backlog: {backlog:,} records on {ctx.live_topic}")
    live = _Live(ctx, freshness.ProbePoller(ctx.settings, f"{ctx.prefix}-probe"))
    try:
        run = live.start("live")
        figures = _live_state(ctx, run, backlog)
        _live_freshness(ctx, live, run)
        # Read now: the job's REST history keeps only its last checkpoints, and the alerts
        # phase would push those of the fixed-rate window out of it.
        ctx.results.state = state.with_steady_checkpoints(
            figures,
            state.checkpoint_history(
                run,
                live.window_start * 1000,
                (live.window_start + ctx.options.fresh_seconds) * 1000,
            ),
        )
        if ctx.options.alerts_seconds > 0:
            try:
                _live_alerts(ctx, live, run)
            except Exception as exc:  # noqa: BLE001 - report it, go on to the recovery
                ctx.results.errors.append(f"alerts latency: {exc}")
                ctx.say(f"   alerts latency FAILED: {str(exc)[:2000]}")
        if ctx.options.recovery:
            _live_recovery(ctx, live, run)
    finally:
        with contextlib.suppress(Exception):  # the plot shows what there is
            _live_series(ctx, live)
        live.close()


def _live_state(ctx: RunContext, run: JobRun, records: int) -> state.StateFigures:
    """Drain the backlog (time-boxed), then read the first checkpoint taken after it."""
    total = len(ctx.gen.records)
    run.wait_for(lambda: run.read > 0, pipeline.STARTUP_TIMEOUT_S, "the first record")
    run.wait_for(
        lambda: (
            run.read >= records
            or time.time() - (run.first_read_at or time.time()) >= ctx.options.drain_window_s
        ),
        ctx.options.drain_window_s + 30,
        "the backlog",
    )
    drained = run.read >= records
    drained_ms = time.time() * 1000
    # Drained: the first checkpoint after it. Not drained (a back-pressured job can take long
    # to checkpoint): the newest completed one; its size counts the ids read before it.
    run.wait_for(
        lambda: (
            (run.checkpoint_details or {}).get("trigger_timestamp", 0)
            > (drained_ms if drained else 0)
        ),
        120,
        "a completed checkpoint",
    )
    trigger_s = run.checkpoint_details["trigger_timestamp"] / 1000  # type: ignore[index]
    read = min(records, pipeline._read_at(run.samples, trigger_s))  # noqa: SLF001
    # Duplicates and malformed records are spread evenly through the topic's partitions.
    distinct = round(read * ctx.gen.distinct_events / total)
    figures = state.state_after_backlog(run, distinct)
    ctx.results.state = figures
    ctx.results.live_series["backlog"] = [records, int(read)]
    if read < records:
        ctx.say(f"   backlog NOT drained in {ctx.options.drain_window_s:.0f} s: {read:,.0f} read")
    ctx.say(
        f"   state after {distinct:,} distinct ids: dedup "
        f"{figures.dedup_state_bytes} B ({figures.dedup_vertex}), "
        f"{figures.dedup_bytes_per_key or 0:.1f} B/key"
    )
    return figures


def _live_freshness(ctx: RunContext, live: _Live, run: JobRun) -> None:
    """A fixed input rate with probes; events are generated as they are sent."""
    options = ctx.options
    meter, data = _probe_meter(ctx.registry)
    workload = Workload(10**9, seed=options.seed + 1, account_prefix=ctx.prefix)
    stream = (record for _, record in iter_records(workload, ctx.registry))
    live.producer = freshness.PacedProducer(
        ctx.settings,
        ctx.live_topic,
        stream,
        options.fresh_rate,
        f"{ctx.prefix}-probe",
        meter,
        data,
    )
    live.poller.start()
    live.producer.start()
    time.sleep(min(5.0, options.fresh_seconds / 3))  # warm-up
    live.window_start = start = time.time()
    time.sleep(options.fresh_seconds)
    end = time.time()
    time.sleep(3)  # let the window's last probes land
    if run.proc.poll() is not None:
        msg = f"the live job exited ({run.proc.returncode}):\n{run.tail()}"
        raise RuntimeError(msg)
    ctx.results.freshness = freshness.summarize(
        live.poller.between(start, end),
        rate=options.fresh_rate,
        seconds=end - start,
        sent=round((end - start) / freshness.PROBE_INTERVAL_S),
        achieved_rate=_sent_between(live.producer, start, end) / (end - start),
        t0=start,
    )
    f = ctx.results.freshness
    ctx.say(
        f"   freshness at {f.achieved_rate:,.0f} events/s: p50 {f.p50_s} s, p99 {f.p99_s} s "
        f"({f.probes_seen}/{f.probes_sent} probes)"
    )


def _live_alerts(ctx: RunContext, live: _Live, run: JobRun) -> None:
    """Threshold -> webhook latency, the alerts service running, at the same input rate.

    Each probe is the first unit of an account that a rule watches (threshold 1), so each
    gives one threshold notification.
    """
    producer = live.producer
    assert producer is not None  # noqa: S101 - the freshness phase started it
    options = ctx.options
    harness = alerts.AlertsHarness(
        ctx.settings, f"{ctx.prefix}-alerts", ctx.workdir / "logs" / "alerts.log"
    )
    # Accounts of the probes sent from 2 s on: none has usage yet, so nothing fires at start.
    first = producer.probes_sent + round(2 / freshness.PROBE_INTERVAL_S)
    count = round((options.alerts_seconds + 60) / freshness.PROBE_INTERVAL_S)
    accounts = [f"{live.poller.probe_prefix}-{i:06d}" for i in range(first, first + count)]
    meter, _ = _probe_meter(ctx.registry)
    rule = {"kind": "usage_threshold", "name": "first unit", "meter": meter, "thresholds": [1]}
    try:
        harness.setup(accounts, [rule])
        harness.start_service()
        harness.receiver.wait_for(lambda r: bool(r.received), 30)  # the service is up
        time.sleep(2)
        start = time.time()
        time.sleep(options.alerts_seconds)
        end = time.time()
        alerts.wait_quiet(harness.receiver)
        if run.proc.poll() is not None:
            msg = f"the live job exited ({run.proc.returncode}):\n{run.tail()}"
            raise RuntimeError(msg)
        watched = set(accounts)
        sent = [(a, at) for a, at in producer.probe_log if a in watched]
        probes = live.poller.between(start, end)
        ctx.results.alerts = alerts.summarize(
            alerts.latencies(harness.receiver, sent, start, end),
            rate=options.fresh_rate,
            seconds=end - start,
            probes_sent=sum(1 for _, at in sent if start <= at < end),
            fresh=[p.freshness_s for p in probes],
            service=alerts.after_visible(
                harness.receiver, {p.account: p.visible_at for p in probes}
            ),
        )
        cpu = harness.cpu_seconds()
    finally:
        harness.close()
    a = ctx.results.alerts
    ctx.say(
        f"   threshold -> webhook at {options.fresh_rate:,.0f} events/s: p50 {a.p50_s} s, "
        f"p99 {a.p99_s} s ({a.notifications}/{a.probes_sent} probes); visible in PostgreSQL "
        f"-> webhook p50 {a.service_p50_s} s, p99 {a.service_p99_s} s; freshness meanwhile "
        f"p99 {a.fresh_p99_s} s; service CPU {cpu or 0:.1f} s"
    )


def _live_recovery(ctx: RunContext, live: _Live, run: JobRun) -> None:
    """SIGKILL under load, restart from the newest checkpoint, time until it is live again.

    Live again: a probe sent after the kill is visible within 2x the measured p99 (at least
    2 s), or the restored job's lag is back to what it was before the kill. A job that was not
    keeping up before the kill may never get there: that is reported, not raised.
    """
    checkpoint = latest_checkpoint(live.checkpoints)
    lag_before = next((s.pending for s in reversed(run.samples) if s.pending is not None), None)
    killed_at = run.kill()
    restarted = live.start("live-restored", str(checkpoint) if checkpoint else None)
    p99 = ctx.results.freshness.p99_s if ctx.results.freshness else None
    fresh_limit = max(2.0, 2 * (p99 or 1.0))

    def recovered_at() -> float | None:
        fresh = freshness.first_fresh_at(live.poller.between(killed_at, time.time()), fresh_limit)
        caught = [
            s.at
            for s in restarted.samples
            if lag_before is not None and s.pending is not None and s.pending <= lag_before
        ]
        return min([fresh, *caught] if fresh is not None else caught, default=None)

    def live_again_at() -> float | None:
        assert live.producer is not None  # noqa: S101 - the freshness phase started it
        return freshness.live_again_at(
            list(live.producer.probe_log),
            dict(live.poller.seen),
            since=killed_at,
            limit_s=fresh_limit,
            settle_s=cluster_recovery.SETTLE_S,
            now=time.time(),
        )

    with contextlib.suppress(TimeoutError):
        restarted.wait_for(
            lambda: live_again_at() is not None,
            ctx.options.recovery_timeout_s,
            "the restored job to be live again",
        )
    recovered = recovered_at()
    running_ms = restarted.timestamps.get("RUNNING")
    pending = [s.pending for s in restarted.samples if s.pending is not None]
    ctx.results.recovery = state.Recovery(
        restored_checkpoint=str(checkpoint) if checkpoint else None,
        to_running_s=running_ms / 1000 - killed_at if running_ms else None,
        to_caught_up_s=recovered - killed_at if recovered else None,
        fresh_s=fresh_limit,
        max_lag=max(pending) if pending else None,
        lag_before_kill=lag_before,
        waited_s=ctx.options.recovery_timeout_s,
        live_again_s=live_again - killed_at if (live_again := live_again_at()) else None,
        detail="the job's process (and its mini cluster) killed, the job started again",
    )
    ctx.results.live_series["kill_at"] = [killed_at - live.window_start]
    rec = ctx.results.recovery
    if rec.live_again_s is not None:
        ctx.say(
            f"   recovery: first fresh probe {state.seconds(rec.to_caught_up_s)} s, live again "
            f"{state.seconds(rec.live_again_s)} s after SIGKILL"
        )
    else:
        ctx.say(f"   recovery: NOT live again {ctx.options.recovery_timeout_s:.0f} s after SIGKILL")
    time.sleep(2)


def _cluster_recovery(ctx: RunContext) -> None:
    """The job on a standalone cluster at the fixed rate; its TaskManager SIGKILLed."""
    topic = f"{ctx.prefix}-cluster"
    create_topics(ctx.settings, topic, None)
    meter, data = _probe_meter(ctx.registry)
    workload = Workload(10**9, seed=ctx.options.seed + 2, account_prefix=ctx.prefix)
    p99 = ctx.results.freshness.p99_s if ctx.results.freshness else None
    run = cluster_recovery.ClusterRun(
        settings=ctx.settings,
        topic=topic,
        rejected_topic=ctx.rejected,
        prefix=f"{ctx.prefix}-c",
        checkpoint_dir=(ctx.workdir / "checkpoints" / "cluster").resolve(),
        archive_dir=ctx.archive_dir,
        records=(record for _, record in iter_records(workload, ctx.registry)),
        rate=ctx.options.fresh_rate,
        probe_meter=meter,
        probe_data=data,
        fresh_s=max(2.0, 2 * (p99 or 1.0)),
        timeout_s=ctx.options.recovery_timeout_s,
        warm_s=min(cluster_recovery.WARM_S, ctx.options.fresh_seconds / 2),
    )
    ctx.results.cluster_recovery = cluster_recovery.measure(run, ctx.say)


def _live_series(ctx: RunContext, live: _Live) -> None:
    """Time series of the live phase for the plot."""
    t0 = live.window_start
    ctx.results.live_series["probes"] = [
        (p.arrived_at - t0, p.freshness_s) for p in live.poller.between(t0 - 10, time.time())
    ]
    ctx.results.live_series["lag"] = [
        (s.at - t0, s.pending) for r in live.jobs for s in r.samples if s.pending is not None
    ]
    if live.producer is not None:
        ctx.results.live_series["input"] = [
            (at - t0, sent) for at, sent in live.producer.rate_samples[::10]
        ]


def _sent_between(producer: freshness.PacedProducer, start: float, end: float) -> int:
    inside = [sent for at, sent in producer.rate_samples if start <= at <= end]
    return inside[-1] - inside[0] if len(inside) > 1 else 0
