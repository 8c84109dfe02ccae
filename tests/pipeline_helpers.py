"""Helpers for tests that run the job against the real stack and compare with the oracle."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from meterstream.config import Settings
from meterstream.flink.launch import JobOptions, latest_checkpoint, start_job
from meterstream.kafka_io import produce
from meterstream.rules.oracle import Expected, TotalKey, expected_outcome
from meterstream.rules.validate import Validator
from meterstream.store.migrate import migrate
from meterstream.testing import Record

#: A bounded test job that has not finished by then is stopped and the test fails.
JOB_TIMEOUT_S = 300


def job_options(topics: tuple[str, str], job_dir: Path, name: str, **extra: Any) -> JobOptions:
    """A test job's options: its (raw, rejected) topics, its own consumer group and checkpoints."""
    return JobOptions(
        topic=topics[0],
        rejected_topic=topics[1],
        group_id=f"g-{name}",
        checkpoint_dir=job_dir,
        job_name=name,
        **extra,
    )


def run_bounded_job(options: JobOptions, log: Path, timeout_s: float = JOB_TIMEOUT_S) -> None:
    """Run a bounded job to its end; fail with its log, never leaving it running."""
    proc = start_job(options, log=log)
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    tail = log.read_text(errors="replace")[-5000:]
    assert code is not None, f"the job did not finish within {timeout_s} s:\n{tail}"
    assert code == 0, tail


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `check` every 0.5 s; fail the test if it is not true within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    msg = f"timed out waiting for {what}"
    raise AssertionError(msg)


def alive(job: subprocess.Popen[bytes], log: Path) -> bool:
    """True while the job runs; fails the test with the job's log if it has exited."""
    assert job.poll() is None, f"the job exited early:\n{log.read_text()[-5000:]}"
    return True


def kill_job(job: subprocess.Popen[bytes]) -> None:
    if job.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)


def kill_mid_stream(
    settings: Settings,
    options: JobOptions,
    log: Path,
    rest: list[Record],
    *,
    started: Callable[[], bool],
    what: str,
) -> Path:
    """Run the job until `started` and a checkpoint completed, then SIGKILL it while `rest` is
    still being produced (200 records every 0.1 s). Returns its newest checkpoint."""
    job = start_job(options, log=log)
    try:
        wait_for(lambda: alive(job, log) and started(), 180, what)
        wait_for(lambda: latest_checkpoint(options.checkpoint_dir) is not None, 60, "a checkpoint")
        producer = threading.Thread(
            target=lambda: [
                produce(settings, options.topic, rest[i : i + 200])
                for i in range(0, len(rest), 200)
                if not time.sleep(0.1)
            ]
        )
        producer.start()
        time.sleep(2.5)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
        producer.join(timeout=120)
    finally:
        kill_job(job)
    checkpoint = latest_checkpoint(options.checkpoint_dir)
    assert checkpoint is not None
    return checkpoint


def run_then_kill(options: JobOptions, log: Path, done: Callable[[], bool], what: str) -> Path:
    """Run the job until `done` and a checkpoint completed after it, then SIGKILL it.
    Returns that checkpoint."""
    job = start_job(options, log=log)
    try:
        wait_for(lambda: alive(job, log) and done(), 180, what)
        seen = latest_checkpoint(options.checkpoint_dir)
        wait_for(
            lambda: alive(job, log) and latest_checkpoint(options.checkpoint_dir) != seen,
            60,
            f"a checkpoint after {what}",
        )
    finally:
        kill_job(job)
    checkpoint = latest_checkpoint(options.checkpoint_dir)
    assert checkpoint is not None
    return checkpoint


def run_restored_until(
    options: JobOptions, log: Path, done: Callable[[], bool], what: str, settle_s: float = 5
) -> None:
    """Run the restored job until `done`, then `settle_s` more (a few checkpoints, in which
    nothing more may change); it must still be running. Never leaves it running."""
    job = start_job(options, log=log)
    try:
        wait_for(lambda: alive(job, log) and done(), 240, what)
        time.sleep(settle_s)
        assert job.poll() is None, log.read_text()[-5000:]
    finally:
        kill_job(job)


def totals_in_postgres(
    settings: Settings, account_prefix: str
) -> dict[TotalKey, tuple[Decimal, int]]:
    """(quantity, event_count) per (account, meter, period, dimensions) for the prefix."""
    with psycopg.connect(settings.postgres.conninfo) as conn:
        rows = conn.execute(
            "SELECT account_id, meter, period_start, dimensions, quantity, event_count"
            " FROM usage_aggregates WHERE account_id LIKE %s",
            (account_prefix + "%",),
        ).fetchall()
    return {(a, m, p, d): (q, n) for a, m, p, d, q, n in rows}


def rejections_in_postgres(
    settings: Settings, topic: str, severity: str = "error"
) -> list[tuple[int, int, str, str]]:
    """(partition, offset, reason code, raw payload) of the log entries from one topic."""
    with psycopg.connect(settings.postgres.conninfo) as conn:
        return conn.execute(
            "SELECT source_partition, source_offset, reason_code, raw_payload FROM rejected_events"
            " WHERE source_topic = %s AND severity = %s ORDER BY source_partition, source_offset",
            (topic, severity),
        ).fetchall()


@dataclass(frozen=True, slots=True)
class Arrival:
    """One record as Kafka holds it: where it is, when the broker stamped it, its value."""

    partition: int
    offset: int
    timestamp_ms: int
    value: bytes

    @property
    def arrived_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)


def consume_arrivals(settings: Settings, topic: str, timeout_s: float = 10.0) -> list[Arrival]:
    """Every committed record in `topic` (read_committed) in (partition, offset) order, reading
    until it goes quiet."""
    from confluent_kafka import Consumer  # noqa: PLC0415

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"test-reader-{topic}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    arrivals: list[Arrival] = []
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 3:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            _, stamp = msg.timestamp()
            arrivals.append(Arrival(msg.partition(), msg.offset(), stamp, msg.value()))
            quiet_since = time.monotonic()
    finally:
        consumer.close()
    return sorted(arrivals, key=lambda a: (a.partition, a.offset))


def consume_all(settings: Settings, topic: str, timeout_s: float = 10.0) -> list[bytes]:
    """Every committed record value in `topic` (read_committed), reading until it goes quiet."""
    return [a.value for a in consume_arrivals(settings, topic, timeout_s)]


def set_time_zones(settings: Settings, zones: dict[str, str]) -> None:
    """Give each account its billing time zone (`account_time_zones`)."""
    with psycopg.connect(settings.postgres.conninfo) as conn:
        for account, zone in zones.items():
            conn.execute(
                "INSERT INTO account_time_zones (account_id, time_zone) VALUES (%s, %s)"
                " ON CONFLICT (account_id) DO UPDATE SET time_zone = EXCLUDED.time_zone",
                (account, zone),
            )


@contextlib.contextmanager
def isolated_database(stack: Settings, **flink: Any) -> Iterator[Settings]:
    """The stack's settings with a fresh, migrated database of its own, dropped afterwards;
    `flink` overrides Flink settings (e.g. `allowed_lateness_hours`).

    Recalculating all accounts of a period replaces every row of that period: in the shared
    database that would touch other tests' rows.
    """
    name = f"meterstream_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(stack.postgres.conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    settings = replace(
        stack,
        postgres=replace(stack.postgres, database=name),
        flink=replace(stack.flink, **flink),
    )
    try:
        migrate(settings)
        yield settings
    finally:
        with psycopg.connect(stack.postgres.conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def oracle(
    settings: Settings, validator: Validator, payloads: list[bytes], **kwargs: object
) -> Expected:
    """The oracle's outcome with the deployment's allowed lateness."""
    kwargs.setdefault("allowed_lateness", timedelta(hours=settings.flink.allowed_lateness_hours))
    return expected_outcome(validator, payloads, **kwargs)  # type: ignore[arg-type]


def oracle_of_arrivals(
    settings: Settings, validator: Validator, arrivals: list[Arrival], **kwargs: object
) -> Expected:
    """The oracle's outcome of the records as Kafka holds them: in (partition, offset) order,
    each arriving when the broker stamped it."""
    return oracle(
        settings,
        validator,
        [a.value for a in arrivals],
        arrived_at=[a.arrived_at for a in arrivals],
        **kwargs,
    )


def logged(settings: Settings, topic: str, severity: str = "error") -> set[tuple[int, int, str]]:
    """(partition, offset, reason code) of the validation log's entries from one topic."""
    return {(p, o, code) for p, o, code, _ in rejections_in_postgres(settings, topic, severity)}


def expected_log(
    arrivals: list[Arrival], entries: list[tuple[int, str]]
) -> set[tuple[int, int, str]]:
    """The oracle's (index, code) entries as (partition, offset, code)."""
    return {(arrivals[i].partition, arrivals[i].offset, code) for i, code in entries}
