"""Kill the job mid-stream (SIGKILL), restart it from its last checkpoint: totals stay exact."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from meterstream.config import Settings
from meterstream.flink.launch import JobOptions, latest_checkpoint, start_job
from meterstream.kafka_io import produce
from meterstream.rules.validate import Validator
from meterstream.testing import generate
from tests.pipeline_helpers import oracle, rejections_in_postgres, totals_in_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.flink]


def wait_for(check, timeout_s: float, what: str) -> None:  # noqa: ANN001
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


def counted(settings: Settings, prefix: str) -> int:
    """Distinct events counted so far for accounts with the prefix."""
    with psycopg.connect(settings.postgres.conninfo) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(event_count), 0) FROM usage_aggregates WHERE account_id LIKE %s",
            (prefix + "%",),
        ).fetchone()
    return int(row[0]) if row else 0


def test_job_killed_mid_stream_and_restored_from_checkpoint_neither_loses_nor_double_counts(
    stack: Settings, topics: tuple[str, str], job_dir: Path, unique: str, validator: Validator
) -> None:
    prefix = f"e2e-{unique}"
    records = generate(6000, seed=23, accounts=30, account_prefix=prefix, duplicate_rate=0.1)
    first, second = records[:2000], records[2000:]
    produce(stack, topics[0], first)
    options = JobOptions(
        topic=topics[0],
        rejected_topic=topics[1],
        group_id=f"g-{unique}",
        checkpoint_dir=job_dir,
        job_name=f"e2e-{unique}",
        env={"METERSTREAM_FLINK_CHECKPOINT_INTERVAL_MS": "1000"},
    )
    log = job_dir / "job.log"
    job = start_job(options, log=log)
    try:
        wait_for(
            lambda: alive(job, log) and counted(stack, prefix) > 0,
            180,
            "first totals in PostgreSQL",
        )
        wait_for(lambda: latest_checkpoint(job_dir) is not None, 60, "a completed checkpoint")
        # Keep producing while the job is killed: the crash lands mid-stream.
        producer = threading.Thread(
            target=lambda: [
                produce(stack, topics[0], second[i : i + 200])
                for i in range(0, len(second), 200)
                if not time.sleep(0.1)
            ]
        )
        producer.start()
        time.sleep(2.5)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
        producer.join(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)

    checkpoint = latest_checkpoint(job_dir)
    assert checkpoint is not None
    expected = oracle(stack, validator, [r.value for r in records])
    distinct = sum(n for _, n in expected.totals.values())
    # A restored Kafka split keeps the stopping offset it was checkpointed with (none), so the
    # restored job runs unbounded, as in production: wait until it has counted every distinct
    # event, let it run on for a few checkpoints, then compare exactly. Loss never reaches the
    # count; a double count overshoots it and fails the comparison.
    restarted = start_job(
        JobOptions(
            topic=topics[0],
            rejected_topic=topics[1],
            group_id=f"g-{unique}",
            checkpoint_dir=job_dir,
            job_name=f"e2e-{unique}-restored",
            restore_from=str(checkpoint),
            env={"METERSTREAM_FLINK_CHECKPOINT_INTERVAL_MS": "1000"},
        ),
        log=log,
    )
    try:
        wait_for(
            lambda: (
                alive(restarted, log)
                and counted(stack, prefix) >= distinct
                and len(rejections_in_postgres(stack, topics[0])) >= len(expected.rejections)
            ),
            240,
            f"{distinct} distinct events after the restart",
        )
        time.sleep(5)
        assert restarted.poll() is None, log.read_text()[-5000:]
    finally:
        if restarted.poll() is None:
            os.killpg(restarted.pid, signal.SIGKILL)
            restarted.wait(timeout=30)

    assert totals_in_postgres(stack, prefix) == expected.totals
    rejected = rejections_in_postgres(stack, topics[0])
    assert len(rejected) == len(expected.rejections)
    print(
        f"restart from {checkpoint.name}: {len(records)} records, {distinct} distinct events, "
        f"{len(expected.rejections)} rejections: all exact"
    )
