"""Ingestion-health rules on the real stack: each condition reached once, then recovered once.

The pipeline's outputs (`rejected_events`, `late_events`, `account_daily_counts`) are written
here as the job and the API write them; Kafka positions are real consumer-group commits. The
job's own state (RUNNING or not) is tested with the real job in test_pipeline.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from meterstream.alerts.receiver import WebhookReceiver
from meterstream.alerts.service import AlertService
from meterstream.config import Settings
from meterstream.kafka_io import produce
from meterstream.stack.kafka import create_topics
from meterstream.testing import Record
from tests.alerts.conftest import RunningApi, Tenant
from tests.alerts.test_thresholds import WAIT_S, create_rule, subscribe

pytestmark = pytest.mark.integration


def kinds(receiver: WebhookReceiver) -> list[str]:
    """The health notifications received, in order, as `<kind>.<reached|recovered>`."""
    seen: dict[str, str] = {}
    for got in receiver.events():
        seen.setdefault(got.webhook_id, got.event["type"].removeprefix("io.meterstream.health."))
    return list(seen.values())


def reject(
    settings: Settings, account: str, n: int, code: str = "WRONG_TYPE", **extra: str
) -> None:
    """Log `n` rejections of `account` as the job's validation-log sink does."""
    topic = f"test-health-{uuid.uuid4().hex[:8]}"
    severity = extra.get("severity", "error")
    with psycopg.connect(settings.postgres.conninfo, autocommit=True) as conn:
        for offset in range(n):
            conn.execute(
                "INSERT INTO rejected_events (source_topic, source_partition, source_offset,"
                " reason_code, severity, detail, raw_payload, arrived_at, account_id, meter)"
                " VALUES (%s, 0, %s, %s, %s, 'test', %s, now(), %s, %s)",
                (
                    topic,
                    offset,
                    code,
                    severity,
                    json.dumps({"subject": account}),
                    account,
                    extra.get("meter", "api_calls"),
                ),
            )


def test_rejection_burst_is_reached_then_recovered_once(
    alerts_api: RunningApi,
    alerts_settings: Settings,
    tenant: Callable[..., Tenant],
    receiver: WebhookReceiver,
    start_service: Callable[[Settings], AlertService],
) -> None:
    org, other = tenant(2), tenant(1)
    subscribe(alerts_api, org.tokens["admin"], receiver)
    rule = {"kind": "rejections", "name": "wrong types", "reason": "WRONG_TYPE", "above": 5}
    create_rule(alerts_api, org.tokens["admin"], rule | {"window_seconds": 3})
    start_service(alerts_settings)
    reject(alerts_settings, other.accounts[0], 50)  # another tenant's burst: not ours
    reject(alerts_settings, org.accounts[0], 4, code="MISSING_FIELD")  # another code
    reject(alerts_settings, org.accounts[0], 3)
    reject(alerts_settings, org.accounts[1], 3)

    assert receiver.wait_for(lambda r: kinds(r) == ["rejections.reached"], WAIT_S), kinds(receiver)
    reached = receiver.events()[0].event["data"]
    assert reached["details"]["count"] == 6
    assert reached["details"]["by_reason"] == {"WRONG_TYPE": 6}
    assert receiver.wait_for(
        lambda r: kinds(r) == ["rejections.reached", "rejections.recovered"], WAIT_S
    ), kinds(receiver)
    receiver.wait_for(lambda _r: False, 1)
    assert kinds(receiver) == ["rejections.reached", "rejections.recovered"]


def test_quota_late_and_deprecated_conditions(
    alerts_api: RunningApi,
    alerts_settings: Settings,
    tenant: Callable[..., Tenant],
    receiver: WebhookReceiver,
    start_service: Callable[[Settings], AlertService],
) -> None:
    org = tenant(2)
    a0, a1 = org.accounts
    token = org.tokens["admin"]
    subscribe(alerts_api, token, receiver)
    create_rule(alerts_api, token, {"kind": "quota", "name": "q", "percent": 80})
    create_rule(alerts_api, token, {"kind": "late_events", "name": "l", "window_seconds": 3})
    create_rule(alerts_api, token, {"kind": "deprecated_schema", "name": "d", "window_seconds": 3})
    today = datetime.now(UTC).date()
    with psycopg.connect(alerts_settings.postgres.conninfo, autocommit=True) as conn:
        conn.execute("UPDATE accounts SET daily_event_quota = 100 WHERE org_id = %s", (org.org_id,))
        conn.execute(
            "INSERT INTO account_daily_counts (account_id, day, events) VALUES (%s, %s, 81),"
            " (%s, %s, 80)",
            (a0, today, a1, today),
        )
        conn.execute(
            "INSERT INTO late_events (source_topic, source_partition, source_offset, account_id,"
            " meter, event_id, period_start, dimensions, quantity, event_time, arrived_at,"
            " raw_payload) VALUES (%s, 0, 0, %s, 'api_calls', 'e', %s, '', 1, %s, now(), '{}')",
            (
                f"test-late-{uuid.uuid4().hex[:8]}",
                a1,
                today.replace(day=1) - timedelta(days=40),
                datetime.now(UTC) - timedelta(days=40),
            ),
        )
    reject(alerts_settings, a0, 1, code="DEPRECATED_SCHEMA_VERSION", severity="warning")
    start_service(alerts_settings)

    want = {"quota.reached", "late_events.reached", "deprecated_schema.reached"}
    assert receiver.wait_for(lambda r: set(kinds(r)) >= want, WAIT_S), kinds(receiver)
    quota = next(r.event for r in receiver.events() if r.event["type"].endswith("quota.reached"))
    assert quota["subject"] == a0  # a1 used 80 %: not past it
    assert quota["data"]["details"] == {"events": 81, "quota": 100, "percent": "80"}
    # The day's count goes down (a new UTC day): recovered. Late and deprecated age out.
    with psycopg.connect(alerts_settings.postgres.conninfo, autocommit=True) as conn:
        conn.execute("DELETE FROM account_daily_counts WHERE account_id = %s", (a0,))
    everything = want | {k.replace("reached", "recovered") for k in want}
    assert receiver.wait_for(lambda r: set(kinds(r)) == everything, WAIT_S), kinds(receiver)
    assert len(kinds(receiver)) == len(everything)


def commit(settings: Settings, group: str, topic: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def test_consumer_lag_and_freshness_on_real_kafka_positions(
    alerts_api: RunningApi,
    alerts_settings: Settings,
    tenant: Callable[..., Tenant],
    receiver: WebhookReceiver,
    start_service: Callable[[Settings], AlertService],
) -> None:
    operator = tenant(0, operator=True)
    topic, group = f"test-lag-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    create_topics(alerts_settings, [topic], partitions=1)
    produce(alerts_settings, topic, [Record(b"k", b"{}") for _ in range(10)])
    commit(alerts_settings, group, topic, 2)
    where = {"consumer_group": group, "topic": topic, "for_seconds": 0}
    subscribe(alerts_api, operator.tokens["admin"], receiver)
    create_rule(
        alerts_api,
        operator.tokens["admin"],
        {"kind": "consumer_lag", "name": "l", "above": 5} | where,
    )
    create_rule(
        alerts_api,
        operator.tokens["admin"],
        {"kind": "freshness", "name": "f", "above_seconds": 1} | where,
    )
    time.sleep(1.2)  # the oldest record not committed is now older than 1 s
    start_service(alerts_settings)

    want = {"consumer_lag.reached", "freshness.reached"}
    assert receiver.wait_for(lambda r: set(kinds(r)) == want, WAIT_S), kinds(receiver)
    lag = next(r.event for r in receiver.events() if "consumer_lag" in r.event["type"])
    assert lag["data"]["details"]["lag"] == 8
    commit(alerts_settings, group, topic, 10)
    everything = want | {"consumer_lag.recovered", "freshness.recovered"}
    assert receiver.wait_for(lambda r: set(kinds(r)) == everything, WAIT_S), kinds(receiver)
    assert len(kinds(receiver)) == 4
