"""Kill the job mid-stream (SIGKILL), restart it from its last checkpoint: totals stay exact."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from meterstream.config import Settings
from meterstream.kafka_io import produce
from meterstream.rules.validate import Validator
from meterstream.testing import generate
from tests.pipeline_helpers import (
    job_options,
    kill_mid_stream,
    oracle,
    rejections_in_postgres,
    run_restored_until,
    totals_in_postgres,
)

pytestmark = [pytest.mark.e2e, pytest.mark.flink]


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
    options = job_options(
        topics, job_dir, f"e2e-{unique}", env={"METERSTREAM_FLINK_CHECKPOINT_INTERVAL_MS": "1000"}
    )
    log = job_dir / "job.log"
    # Keep producing while the job is killed: the crash lands mid-stream.
    checkpoint = kill_mid_stream(
        stack, options, log, second, started=lambda: counted(stack, prefix) > 0, what="first totals"
    )
    expected = oracle(stack, validator, [r.value for r in records])
    distinct = sum(n for _, n in expected.totals.values())
    # A restored Kafka split keeps the stopping offset it was checkpointed with (none), so the
    # restored job runs unbounded, as in production: wait until it has counted every distinct
    # event, let it run on for a few checkpoints, then compare exactly. Loss never reaches the
    # count; a double count overshoots it and fails the comparison.
    run_restored_until(
        replace(options, job_name=f"e2e-{unique}-restored", restore_from=str(checkpoint)),
        log,
        lambda: (
            counted(stack, prefix) >= distinct
            and len(rejections_in_postgres(stack, topics[0])) >= len(expected.rejections)
        ),
        f"{distinct} distinct events after the restart",
    )

    assert totals_in_postgres(stack, prefix) == expected.totals
    rejected = rejections_in_postgres(stack, topics[0])
    assert len(rejected) == len(expected.rejections)
    print(
        f"restart from {checkpoint.name}: {len(records)} records, {distinct} distinct events, "
        f"{len(expected.rejections)} rejections: all exact"
    )
