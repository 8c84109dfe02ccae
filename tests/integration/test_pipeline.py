"""The aggregation job on the real stack: Kafka in, exact totals and rejections in PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from meterstream.config import Settings
from meterstream.flink.launch import JobOptions, start_job
from meterstream.kafka_io import produce
from meterstream.rules.oracle import expected_outcome
from meterstream.rules.validate import Validator
from meterstream.testing import LAST_MS_OF_MONTH, PERIOD_START, Record, cloud_event, generate
from tests.pipeline_helpers import consume_all, rejections_in_postgres, totals_in_postgres

pytestmark = [pytest.mark.integration, pytest.mark.flink]

JOB_TIMEOUT_S = 300


def run_bounded(topics: tuple[str, str], job_dir: Path, unique: str) -> None:
    raw, rejected = topics
    options = JobOptions(
        topic=raw,
        rejected_topic=rejected,
        group_id=f"g-{unique}",
        checkpoint_dir=job_dir,
        bounded=True,
        job_name=f"test-{unique}",
    )
    proc = start_job(options, log=job_dir / "job.log")
    code = proc.wait(timeout=JOB_TIMEOUT_S)
    assert code == 0, (job_dir / "job.log").read_text()[-5000:]


def test_job_counts_duplicates_once_and_splits_periods_at_month_boundary(
    stack: Settings, topics: tuple[str, str], job_dir: Path, unique: str, validator: Validator
) -> None:
    prefix = f"it-{unique}"
    records = generate(800, seed=11, accounts=12, account_prefix=prefix, duplicate_rate=0.15)
    # The same event sent three times, the copies after events of the next month.
    retried = Record(
        f"{prefix}-0001".encode(),
        json.dumps(
            cloud_event(
                f"{prefix}-retried",
                f"{prefix}-0001",
                "llm_tokens",
                LAST_MS_OF_MONTH,
                {"tokens": 1000, "model": "small"},
            )
        ).encode(),
    )
    records = [retried, *records, retried, retried]
    assert len({r.value for r in records}) < len(records), "the input must contain duplicates"
    produce(stack, topics[0], records)

    run_bounded(topics, job_dir, unique)

    expected = expected_outcome(validator, [r.value for r in records])
    actual = totals_in_postgres(stack, prefix)
    assert actual == expected.totals
    periods = {period for (_, _, period) in actual}
    assert periods == {LAST_MS_OF_MONTH.date().replace(day=1), PERIOD_START.date()}


def test_job_records_each_malformed_event_with_reason_and_payload_and_keeps_running(
    stack: Settings, topics: tuple[str, str], job_dir: Path, unique: str, validator: Validator
) -> None:
    account = f"bad-{unique}"
    good = cloud_event(
        f"{account}-ok",
        account,
        "api_calls",
        PERIOD_START,
        {"endpoint": "/v1/search", "status": 200},
    )
    broken = [
        b"this is not json",
        json.dumps({**good, "id": None}).encode(),
        json.dumps({**good, "time": "yesterday"}).encode(),
        json.dumps({**good, "data": {"endpoint": "/v1/search", "status": "ok"}}).encode(),
        json.dumps({**good, "type": "teleportations"}).encode(),
    ]
    records = [Record(account.encode(), value) for value in [*broken, json.dumps(good).encode()]]
    produce(stack, topics[0], records)

    run_bounded(topics, job_dir, unique)

    expected = expected_outcome(validator, [r.value for r in records])
    rows = rejections_in_postgres(stack, topics[0])
    assert Counter((code, payload) for _, _, code, payload in rows) == Counter(
        (code, broken[index].decode()) for index, code in expected.rejections
    )
    assert {code for _, _, code, _ in rows} == {
        "MALFORMED_JSON",
        "MISSING_FIELD",
        "INVALID_TIMESTAMP",
        "WRONG_TYPE",
        "UNKNOWN_METER",
    }
    # The good event after the broken ones was still counted.
    assert totals_in_postgres(stack, account) == expected.totals
    assert len(expected.totals) == 1
    # The rejected-events topic holds each rejection exactly once (transactional writes).
    on_topic = [json.loads(v) for v in consume_all(stack, topics[1])]
    assert sorted(m["source_offset"] for m in on_topic) == sorted(r[1] for r in rows)
