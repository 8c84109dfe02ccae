"""The aggregation job on the real stack: Kafka in, exact figures and the validation log out."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from meterstream.config import Settings
from meterstream.flink.launch import JobOptions
from meterstream.kafka_io import produce
from meterstream.meters.model import Aggregation
from meterstream.meters.registry import load_registry
from meterstream.rules.reasons import ReasonCode
from meterstream.rules.validate import Validator
from meterstream.testing import (
    LAST_MS_OF_MONTH,
    PERIOD_START,
    Record,
    cloud_event,
    generate,
    rfc3339,
)
from tests.pipeline_helpers import (
    consume_all,
    oracle,
    rejections_in_postgres,
    run_bounded_job,
    totals_in_postgres,
)

pytestmark = [pytest.mark.integration, pytest.mark.flink]


def run_bounded(
    topics: tuple[str, str], job_dir: Path, unique: str, env: dict[str, str] | None = None
) -> None:
    raw, rejected = topics
    options = JobOptions(
        topic=raw,
        rejected_topic=rejected,
        group_id=f"g-{unique}",
        checkpoint_dir=job_dir,
        bounded=True,
        job_name=f"test-{unique}",
        env=env or {},
    )
    run_bounded_job(options, job_dir / "job.log")


def record(account: str, event: dict) -> Record:
    return Record(account.encode(), json.dumps(event).encode())


def test_job_figures_every_aggregation_kind_and_segment_exactly_despite_retries_and_disorder(
    stack: Settings, topics: tuple[str, str], job_dir: Path, unique: str, validator: Validator
) -> None:
    prefix = f"it-{unique}"
    records = generate(1500, seed=11, accounts=12, account_prefix=prefix, duplicate_rate=0.15)
    # The same event sent three times, the copies after events of the next month.
    retried = record(
        f"{prefix}-0001",
        cloud_event(
            f"{prefix}-retried",
            f"{prefix}-0001",
            "llm_tokens",
            LAST_MS_OF_MONTH,
            {"tokens": 1000, "model": "small"},
        ),
    )
    records = [retried, *records, retried, retried]
    assert len({r.value for r in records}) < len(records), "the input must contain duplicates"
    produce(stack, topics[0], records)

    run_bounded(topics, job_dir, unique)

    expected = oracle(stack, validator, [r.value for r in records])
    actual = totals_in_postgres(stack, prefix)
    assert actual == expected.totals
    assert {period for (_, _, period, _) in actual} == {
        LAST_MS_OF_MONTH.date().replace(day=1),
        PERIOD_START.date(),
    }
    with psycopg.connect(stack.postgres.conninfo) as conn:
        kinds = {
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT aggregation FROM usage_aggregates WHERE account_id LIKE %s",
                (prefix + "%",),
            )
        }
    assert kinds == {kind.value for kind in Aggregation}
    segments = {json.loads(d)["model"] for (_, meter, _, d) in actual if meter == "llm_tokens"}
    assert segments == {"small", "large"}


@pytest.fixture
def schemas_with_deprecations(tmp_path: Path) -> Path:
    """The shipped meters, plus api_calls v2 (v1 past its sunset) and seats v2 (v1 deprecated)."""
    target = tmp_path / "schemas"
    shutil.copytree(Path(__file__).parents[2] / "schemas", target)
    for meter, sunset in (("api_calls", "2020-01-01T00:00:00Z"), ("seats", "2999-01-01T00:00:00Z")):
        v1 = json.loads((target / meter / "v1.avsc").read_text())
        v2 = json.loads(json.dumps(v1))
        v1["meterstream"]["sunset"] = sunset
        v2["meterstream"]["version"] = 2
        (target / meter / "v1.avsc").write_text(json.dumps(v1))
        (target / meter / "v2.avsc").write_text(json.dumps(v2))
    return target


def test_job_logs_every_kind_of_bad_event_with_its_code_and_payload_and_keeps_counting(
    stack: Settings,
    topics: tuple[str, str],
    job_dir: Path,
    unique: str,
    schemas_with_deprecations: Path,
) -> None:
    account = f"bad-{unique}"
    now = datetime.now(UTC)
    good = cloud_event(
        f"{account}-ok", account, "llm_tokens", PERIOD_START, {"tokens": 10, "model": "small"}
    )

    def variant(**changes: object) -> dict:
        return {**good, "id": f"{account}-{len(changes)}-{sorted(changes)}", **changes}

    bad = {
        ReasonCode.MALFORMED_JSON: b"this is not json",
        ReasonCode.INVALID_ENVELOPE: json.dumps(variant(data=[1, 2])).encode(),
        ReasonCode.MISSING_FIELD: json.dumps(variant(id=None)).encode(),
        ReasonCode.INVALID_ACCOUNT: json.dumps(variant(subject="no spaces allowed")).encode(),
        ReasonCode.INVALID_TIMESTAMP: json.dumps(variant(time="yesterday")).encode(),
        ReasonCode.TIMESTAMP_IN_FUTURE: json.dumps(
            variant(time=rfc3339(now + timedelta(hours=1)))
        ).encode(),
        ReasonCode.TIMESTAMP_TOO_OLD: json.dumps(
            variant(time=rfc3339(now - timedelta(days=40)))
        ).encode(),
        ReasonCode.UNKNOWN_METER: json.dumps(variant(type="teleportations")).encode(),
        ReasonCode.UNKNOWN_SCHEMA_VERSION: json.dumps(
            variant(dataschema="schemas/llm_tokens/v9")
        ).encode(),
        ReasonCode.DEPRECATED_SCHEMA_VERSION: json.dumps(
            variant(
                type="api_calls",
                dataschema="schemas/api_calls/v1",
                data={"endpoint": "/", "status": 200},
            )
        ).encode(),
        ReasonCode.WRONG_TYPE: json.dumps(variant(data={"tokens": "ten", "model": "x"})).encode(),
        ReasonCode.INVALID_VALUE: json.dumps(variant(data={"tokens": -5, "model": "x"})).encode(),
        ReasonCode.DUPLICATE_ID_CONFLICT: json.dumps(
            {**good, "data": {"tokens": 99, "model": "small"}}
        ).encode(),
    }
    warned = json.dumps(
        variant(type="seats", dataschema="schemas/seats/v1", data={"seats": 3})
    ).encode()
    values = [json.dumps(good).encode(), *bad.values(), warned]
    produce(stack, topics[0], [Record(account.encode(), v) for v in values])

    run_bounded(
        topics, job_dir, unique, env={"METERSTREAM_SCHEMAS_DIR": str(schemas_with_deprecations)}
    )

    validator = Validator(load_registry(schemas_with_deprecations))
    expected = oracle(stack, validator, values)
    assert sorted(code for _, code in expected.rejections) == sorted(c.value for c in bad)
    logged = rejections_in_postgres(stack, topics[0])
    assert Counter((code, payload) for _, _, code, payload in logged) == Counter(
        (code.value, payload.decode()) for code, payload in bad.items()
    )
    warnings = rejections_in_postgres(stack, topics[0], severity="warning")
    assert [(code, payload) for _, _, code, payload in warnings] == [
        (ReasonCode.DEPRECATED_SCHEMA_VERSION.value, warned.decode())
    ]
    # The good event and the warned one were counted; the conflicting repeat was not.
    assert totals_in_postgres(stack, account) == expected.totals
    assert sum(n for _, n in expected.totals.values()) == 2
    # The rejected-events topic holds each log entry exactly once (transactional writes).
    on_topic = [json.loads(v) for v in consume_all(stack, topics[1])]
    assert len(on_topic) == len(logged) + len(warnings)
