"""Sustained throughput: the real job draining a pre-produced topic, against a blackhole read.

Both jobs read the same topic with `--bounded` (stop at the offsets current at start-up). The
clock starts at the first record the source emits, not at process start (JVM start-up and job
submission are reported apart), and stops when Flink reports the job FINISHED: for the real job
that is after its last write to PostgreSQL has been flushed.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from meterstream.bench.flinkjob import (
    SAMPLE_INTERVAL_S,
    JobRun,
    Sample,
    aggregate_argv,
    blackhole_argv,
    launch,
)
from meterstream.bench.profile import cpu_by_thread
from meterstream.config import Settings
from meterstream.flink.launch import JobOptions

#: The steady rate leaves out this share of the run's span (warm-up).
STEADY_SKIP = 0.2
#: A run shorter than this between samples is timed coarsely (job RUNNING -> finished).
MIN_SAMPLED_S = 1.0
#: JVM start, job submission and the first fetch from Kafka must take less than this.
STARTUP_TIMEOUT_S = 180


@dataclass(frozen=True, slots=True)
class Throughput:
    """One bounded run: how fast the job went, once running, and where its CPU went."""

    job: str
    parallelism: int
    records: int
    events_per_s: float
    steady_events_per_s: float
    seconds: float
    startup_s: float
    samples: list[tuple[float, int, int | None]]
    cpu_threads: list[tuple[str, float]] = field(default_factory=list)
    #: The span the CPU shares were taken over, s (from the first record read).
    cpu_window_s: float = 0.0
    cpu_services: dict[str, float] = field(default_factory=dict)
    machine_busy_cores: float | None = None
    counted_events: int | None = None
    expected_events: int | None = None
    rejections: int | None = None
    expected_rejections: int | None = None
    #: True when the run was too short to sample: the rate then includes task start-up.
    coarse: bool = False
    #: True when the run was stopped after its time box, before reading every record.
    time_boxed: bool = False
    #: Failovers during the run (restart from the last checkpoint) and their first lines.
    restarts: int = 0
    failures: list[str] = field(default_factory=list)
    #: Task threads' activity from Java stack samples (jcmd), and Python functions (py-spy).
    java_stacks: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    python_profile: list[tuple[str, float]] | None = None

    @property
    def exact(self) -> bool | None:
        """Whether PostgreSQL holds exactly the expected distinct events and rejections."""
        if self.expected_events is None:
            return None
        return (
            self.counted_events == self.expected_events
            and self.rejections == self.expected_rejections
        )


def _read_at(samples: list[Sample], at: float) -> float:
    """Records read at time `at` (linear interpolation between samples)."""
    previous: Sample | None = None
    for sample in samples:
        if sample.at >= at:
            if previous is None or sample.at == previous.at:
                return float(sample.read)
            share = (at - previous.at) / (sample.at - previous.at)
            return previous.read + share * (sample.read - previous.read)
        previous = sample
    return float(samples[-1].read) if samples else 0.0


def measure(run: JobRun, job: str, parallelism: int, records: int) -> Throughput:
    """Turn a bounded (possibly time-boxed) run's samples into throughput figures.

    The run starts at its first record. It ends when the source has read every record (or,
    if the last sample came before that, when Flink reports FINISHED), or, for a time-boxed
    run, at the last sample. "Steady" leaves out the first fifth of that span (warm-up: JIT,
    caches, the first checkpoint).
    """
    samples = [s for s in run.samples if s.read >= 0]
    finished_ms = run.timestamps.get("FINISHED")
    finished = finished_ms / 1000 if finished_ms else (run.exited_at or time.time())
    first = next((s for s in samples if s.read > 0), None)
    if first is None:
        return _coarse(run, job, parallelism, records, finished)
    before = [s for s in samples if s.read == 0]
    start = before[-1].at if before else first.at
    done = next((s for s in samples if s.read >= records), None)
    if done is not None:
        end, processed = done.at, records
    elif run.time_boxed:
        end, processed = samples[-1].at, samples[-1].read
    else:
        end, processed = finished, records
    if end - start < MIN_SAMPLED_S:
        return _coarse(run, job, parallelism, records, finished)
    seconds = end - start
    steady_from = start + STEADY_SKIP * seconds
    steady_span = end - steady_from
    steady = (processed - _read_at(samples, steady_from)) / steady_span if steady_span > 0 else 0
    cpu_threads: list[tuple[str, float]] = []
    cpu_services: dict[str, float] = {}
    busy: float | None = None
    window = 0.0
    if run.cpu_first and run.cpu_last and run.cpu_last.at > run.cpu_first.at:
        window = run.cpu_last.at - run.cpu_first.at
        cpu_threads = cpu_by_thread(
            run.cpu_first.threads, run.cpu_last.threads, run.thread_names, window
        )
        # A process absent from the first snapshot started after it (a new PostgreSQL
        # connection, say): all its CPU is in the window.
        cpu_services = {
            name: sum(
                cpu - run.cpu_first.services.get(name, {}).get(pid, 0.0)
                for pid, cpu in pids.items()
            )
            / window
            for name, pids in run.cpu_last.services.items()
        }
        busy = (run.cpu_last.machine_busy - run.cpu_first.machine_busy) / window
    return Throughput(
        job=job,
        parallelism=parallelism,
        records=processed,
        events_per_s=processed / seconds,
        steady_events_per_s=steady,
        seconds=seconds,
        startup_s=start - run.started_at,
        samples=[(s.at - start, s.read, s.pending) for s in samples],
        cpu_threads=cpu_threads,
        cpu_window_s=window,
        cpu_services=cpu_services,
        machine_busy_cores=busy,
        java_stacks=run.java_stacks,
        python_profile=run.python_profile,
        time_boxed=run.time_boxed,
        restarts=run.restarts,
        failures=run.failures,
    )


def cpu_per_record(figures: Throughput) -> dict[str, float]:
    """CPU microseconds per record read: the job's threads, each stack service, the machine.

    CPU time, unlike a rate, changes little when other work shares the machine, so two variants
    can be compared on a busy one (their load on the machine's caches aside).
    """
    if not figures.records or not figures.cpu_window_s:
        return {}
    per = figures.cpu_window_s * 1e6 / figures.records
    out = {"job threads": sum(cores for _, cores in figures.cpu_threads) * per}
    out.update({name: cores * per for name, cores in figures.cpu_services.items()})
    if figures.machine_busy_cores is not None:
        out["machine"] = figures.machine_busy_cores * per
    return out


def _coarse(run: JobRun, job: str, parallelism: int, records: int, finished: float) -> Throughput:
    """A run too short for any sample: job RUNNING -> finished (includes task start-up)."""
    running_ms = run.timestamps.get("RUNNING")
    start = running_ms / 1000 if running_ms else run.started_at
    seconds = max(finished - start, 1e-6)
    return Throughput(
        job=job,
        parallelism=parallelism,
        records=records,
        events_per_s=records / seconds,
        steady_events_per_s=records / seconds,
        seconds=seconds,
        startup_s=start - run.started_at,
        samples=[],
        coarse=True,
    )


def clear_outputs(settings: Settings, account_prefix: str, topic: str) -> None:
    """Delete a previous run's rows so every run writes (inserts) the same amount."""
    with psycopg.connect(settings.postgres.conninfo, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM usage_aggregates WHERE account_id LIKE %s", (account_prefix + "-%",)
        )
        conn.execute("DELETE FROM rejected_events WHERE source_topic = %s", (topic,))


def outputs(settings: Settings, account_prefix: str, topic: str) -> tuple[int, int]:
    """(distinct events counted, rejections logged) for the run's accounts and topic."""
    with psycopg.connect(settings.postgres.conninfo) as conn:
        counted = conn.execute(
            "SELECT coalesce(sum(event_count), 0) FROM usage_aggregates WHERE account_id LIKE %s",
            (account_prefix + "-%",),
        ).fetchone()
        rejected = conn.execute(
            "SELECT count(*) FROM rejected_events WHERE source_topic = %s", (topic,)
        ).fetchone()
    return int(counted[0] if counted else 0), int(rejected[0] if rejected else 0)


def run_bounded(
    settings: Settings,
    *,
    job: str,
    topic: str,
    rejected_topic: str,
    records: int,
    parallelism: int,
    workdir: Path,
    window_s: float,
) -> JobRun:
    """Run `job` over the topic, bounded, for at most `window_s`.

    Jobs: "pipeline" (the aggregation job), "pipeline-sql" (the same with dedup and figures
    on the SQL reference path), "pipeline-python" (the JVM fast path off: every event through
    the Python rules), "blackhole" (read only) or "parse" (read, and parse each record's JSON
    once).

    The time box starts at the job's first record; a job still reading then is killed and its
    rate is the rate it sustained so far.
    """
    tag = f"{job}-p{parallelism}-{uuid.uuid4().hex[:6]}"
    checkpoints = workdir / "checkpoints" / tag
    env = {"METERSTREAM_FLINK_PARALLELISM": str(parallelism)}
    if job == "pipeline-python":
        env["METERSTREAM_FLINK_FAST_PATH"] = "false"
    if job == "pipeline-sql":
        env["METERSTREAM_FLINK_KEYED_PATH"] = "sql"
    if job.startswith("pipeline"):
        argv = aggregate_argv(
            JobOptions(
                topic=topic,
                rejected_topic=rejected_topic,
                group_id=f"bench-{tag}",
                checkpoint_dir=checkpoints,
                bounded=True,
                job_name=f"bench-{tag}",
                archive_dir=(workdir / "archive").resolve(),
            )
        )
    else:
        argv = blackhole_argv(
            topic=topic,
            group_id=f"bench-{tag}",
            checkpoint_dir=checkpoints,
            job_name=f"bench-{tag}",
            parse=job == "parse",
        )
    return drain(
        settings,
        tag,
        argv,
        env=env,
        workdir=workdir,
        window_s=window_s,
        profile_at=records // 3,
        profile_python=job.startswith("pipeline") and parallelism == 1,
    )


def drain(  # noqa: PLR0913 - a job run's parts
    settings: Settings,
    tag: str,
    argv: list[str],
    *,
    env: dict[str, str],
    workdir: Path,
    window_s: float,
    profile_at: int | None = None,
    profile_python: bool = False,
) -> JobRun:
    """Run a bounded job's command line until it has read its topic, or is time-boxed.

    A job still reading `window_s` after its first record is killed (`time_boxed`).

    With `profile_at`, the job is profiled once it has read that many records or a third of
    the time box has passed: past warm-up, well before the end.
    """
    run = launch(
        tag,
        argv,
        env=env,
        log=workdir / "logs" / f"{tag}.log",
        stack_dir=settings.stack_dir,
    )
    if profile_at is not None:
        run.profile_at = profile_at
        run.profile_after_s = window_s / 3
        run.profile_python = profile_python
    # A short bounded job may finish between two samples: its exit ends the wait too.
    run.wait_for(
        lambda: run.read > 0 or run.proc.poll() == 0, STARTUP_TIMEOUT_S, "the first record"
    )
    boxed = run.first_read_at + window_s if run.first_read_at else time.time() + window_s
    while run.proc.poll() is None and time.time() < boxed:
        time.sleep(0.2)
    if run.proc.poll() is None:
        run.time_boxed = True
        time.sleep(2 * SAMPLE_INTERVAL_S)
        run.kill()
        return run
    code = run.wait(30)
    if code != 0:
        msg = f"{tag} failed (exit {code}):\n{run.tail()}"
        raise RuntimeError(msg)
    return run
