"""Ingestion-health conditions: checked every `alerts.health_interval_ms`, reached and recovered.

Each rule's check gives the subjects for which its condition holds now ('' for the rule as a
whole, an account for a quota rule). A subject whose condition holds goes pending, and firing
once it has held for the rule's `for_seconds`: that sends `...reached`. When it stops holding,
a firing subject sends `...recovered`. The state lives in `alert_health_state` and changes in
the transaction that writes the notification, so restarts neither repeat nor lose a transition.
A check that cannot be made (Kafka or Flink unreachable for the lag, ...) leaves the state as
it was; the job's REST API not answering is itself "not RUNNING".
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from meterstream.alerts.metrics import AlertMetrics
from meterstream.alerts.model import RuleKind
from meterstream.alerts.notifications import health_type
from meterstream.alerts.outbox import enqueue
from meterstream.config import Settings

log = logging.getLogger("meterstream.alerts.health")

LOCK_KEY = 1_794_002
RUNNING = "RUNNING"


@dataclass(frozen=True, slots=True)
class Condition:
    """A subject whose condition holds now: its value and what else to tell."""

    value: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HealthRule:
    """A health rule as the checker needs it."""

    rule_id: uuid.UUID
    org_id: str
    name: str
    kind: RuleKind
    spec: dict[str, Any]

    @property
    def for_seconds(self) -> int:
        """How long a condition must hold before it fires."""
        return int(self.spec.get("for_seconds", 0))


def _count(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> int:
    row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row else 0


def check_rejections(conn: psycopg.Connection[Any], rule: HealthRule) -> dict[str, Condition]:
    """Rejected events (severity error) of the organisation's accounts, recorded in the window.

    The window is on when the job recorded them (`rejected_at`), not on when they reached
    Kafka: a job catching up after an outage records old rejections, and they still count.
    """
    spec = rule.spec
    params = {
        "org": rule.org_id,
        "window": spec["window_seconds"],
        "reason": spec.get("reason"),
        "account": spec.get("account"),
    }
    rows = conn.execute(
        "SELECT r.reason_code, count(*) FROM rejected_events r"
        " JOIN accounts a ON a.account_id = r.account_id"
        " WHERE a.org_id = %(org)s AND r.severity = 'error'"
        " AND r.rejected_at >= now() - make_interval(secs => %(window)s)"
        " AND (%(reason)s::text IS NULL OR r.reason_code = %(reason)s)"
        " AND (%(account)s::text IS NULL OR r.account_id = %(account)s)"
        " GROUP BY r.reason_code",
        params,
    ).fetchall()
    by_reason = {code: int(n) for code, n in rows}
    total = sum(by_reason.values())
    if total <= spec["above"]:
        return {}
    return {
        "": Condition(str(total), {"count": total, "by_reason": by_reason, "above": spec["above"]})
    }


def check_deprecated(conn: psycopg.Connection[Any], rule: HealthRule) -> dict[str, Condition]:
    """Events on a deprecated schema version (counted with a warning, or refused) in the window."""
    spec = rule.spec
    rows = conn.execute(
        "SELECT r.meter, r.severity, count(*) FROM rejected_events r"
        " JOIN accounts a ON a.account_id = r.account_id"
        " WHERE a.org_id = %(org)s AND r.reason_code = 'DEPRECATED_SCHEMA_VERSION'"
        " AND r.rejected_at >= now() - make_interval(secs => %(window)s)"
        " AND (%(meter)s::text IS NULL OR r.meter = %(meter)s) GROUP BY 1, 2",
        {"org": rule.org_id, "window": spec["window_seconds"], "meter": spec.get("meter")},
    ).fetchall()
    total = sum(int(n) for _, _, n in rows)
    if total <= spec["above"]:
        return {}
    details = {
        "count": total,
        "above": spec["above"],
        "by_meter": [{"meter": m, "severity": s, "count": int(n)} for m, s, n in rows],
    }
    return {"": Condition(str(total), details)}


def check_late(conn: psycopg.Connection[Any], rule: HealthRule) -> dict[str, Condition]:
    """Events that arrived for a closed period (`late_events`), recorded in the window."""
    spec = rule.spec
    rows = conn.execute(
        "SELECT l.period_start, count(*) FROM late_events l"
        " JOIN accounts a ON a.account_id = l.account_id"
        " WHERE a.org_id = %(org)s AND l.recorded_at >= now() - make_interval(secs => %(window)s)"
        " GROUP BY 1 ORDER BY 1",
        {"org": rule.org_id, "window": spec["window_seconds"]},
    ).fetchall()
    total = sum(int(n) for _, n in rows)
    if total <= spec["above"]:
        return {}
    periods = {p.isoformat(): int(n) for p, n in rows}
    return {"": Condition(str(total), {"count": total, "above": spec["above"], "periods": periods})}


def check_quota(
    conn: psycopg.Connection[Any], rule: HealthRule, default_quota: int
) -> dict[str, Condition]:
    """Accounts past `percent` % of their daily event quota (today, UTC)."""
    spec = rule.spec
    rows = conn.execute(
        "SELECT c.account_id, c.events, coalesce(a.daily_event_quota, %(quota)s) AS quota"
        " FROM account_daily_counts c JOIN accounts a USING (account_id)"
        " WHERE a.org_id = %(org)s AND c.day = (now() AT TIME ZONE 'UTC')::date"
        " AND (%(account)s::text IS NULL OR c.account_id = %(account)s)"
        " AND c.events * 100 > coalesce(a.daily_event_quota, %(quota)s) * %(percent)s",
        {
            "org": rule.org_id,
            "quota": default_quota,
            "account": spec.get("account"),
            "percent": spec["percent"],
        },
    ).fetchall()
    return {
        account: Condition(
            str(events),
            {"events": int(events), "quota": int(quota), "percent": str(spec["percent"])},
        )
        for account, events, quota in rows
    }


def check_job(settings: Settings, rule: HealthRule) -> dict[str, Condition]:
    """The job's state from the Flink REST API; anything but RUNNING holds."""
    from meterstream.api.health import flink_report  # noqa: PLC0415 - imports FastAPI

    job_name = rule.spec.get("job_name") or settings.flink.job_name
    report = flink_report(
        dataclasses.replace(settings, flink=dataclasses.replace(settings.flink, job_name=job_name))
    )
    state = report.get("job_state") if report.get("reachable") else "UNREACHABLE"
    if state == RUNNING:
        return {}
    details = {"job_name": job_name, "state": state, "error": report.get("error")}
    return {"": Condition(str(state), details)}


def kafka_positions(
    settings: Settings, group: str, topic: str
) -> list[tuple[int, int, int, int | None]]:
    """Where a consumer group is on a topic, per partition.

    Returns (partition, committed offset, end offset, arrival ms of the first record the group
    has not committed, if any).
    """
    from meterstream.api.health import committed_offsets  # noqa: PLC0415 - imports FastAPI

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "socket.timeout.ms": 2000,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=3)
        partitions = sorted(metadata.topics[topic].partitions)
        committed = committed_offsets(consumer, [TopicPartition(topic, p) for p in partitions])
        out: list[tuple[int, int, int, int | None]] = []
        behind: list[TopicPartition] = []
        for tp in committed:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), 3)
            position = tp.offset if tp.offset >= 0 else low
            out.append((tp.partition, position, high, None))
            if position < high:
                behind.append(TopicPartition(topic, tp.partition, position))
        stamps: dict[int, int] = {}
        if behind:
            consumer.assign(behind)
            deadline = time.monotonic() + 5
            while len(stamps) < len(behind) and time.monotonic() < deadline:
                for message in consumer.consume(len(behind), timeout=1):
                    if message.error() is None and message.partition() not in stamps:
                        stamps[message.partition()] = message.timestamp()[1]
        return [(p, c, h, stamps.get(p)) for p, c, h, _ in out]
    finally:
        consumer.close()


def check_lag(settings: Settings, rule: HealthRule) -> dict[str, Condition]:
    """Records of the topic the job's consumer group has not committed yet."""
    group = rule.spec.get("consumer_group") or settings.flink.consumer_group
    topic = rule.spec.get("topic") or settings.kafka.topics.raw
    positions = kafka_positions(settings, group, topic)
    lag = sum(max(0, high - committed) for _, committed, high, _ in positions)
    if lag <= rule.spec["above"]:
        return {}
    return {"": Condition(str(lag), {"lag": lag, "above": rule.spec["above"], "group": group})}


def check_freshness(settings: Settings, rule: HealthRule) -> dict[str, Condition]:
    """How long ago the oldest record the job has not committed arrived in Kafka."""
    group = rule.spec.get("consumer_group") or settings.flink.consumer_group
    topic = rule.spec.get("topic") or settings.kafka.topics.raw
    stamps = [ms for _, _, _, ms in kafka_positions(settings, group, topic) if ms is not None]
    if not stamps:
        return {}
    age = max(0.0, time.time() - min(stamps) / 1000)
    if age <= rule.spec["above_seconds"]:
        return {}
    details = {"oldest_uncommitted_age_seconds": round(age, 3), "group": group}
    return {"": Condition(f"{age:.3f}", details)}


class HealthChecker:
    """Checks every enabled health rule and applies the transitions."""

    def __init__(self, settings: Settings, metrics: AlertMetrics) -> None:
        self.settings = settings
        self.metrics = metrics

    def check(self, conn: psycopg.Connection[Any], rule: HealthRule) -> dict[str, Condition]:
        """The subjects for which `rule`'s condition holds now."""
        kind = rule.kind
        if kind is RuleKind.REJECTIONS:
            return check_rejections(conn, rule)
        if kind is RuleKind.DEPRECATED_SCHEMA:
            return check_deprecated(conn, rule)
        if kind is RuleKind.LATE_EVENTS:
            return check_late(conn, rule)
        if kind is RuleKind.QUOTA:
            return check_quota(conn, rule, self.settings.api.account_daily_event_quota)
        if kind is RuleKind.JOB_NOT_RUNNING:
            return check_job(self.settings, rule)
        if kind is RuleKind.CONSUMER_LAG:
            return check_lag(self.settings, rule)
        if kind is RuleKind.FRESHNESS:
            return check_freshness(self.settings, rule)
        msg = f"not a health rule: {kind}"
        raise ValueError(msg)

    def run_pass(self, conn: psycopg.Connection[Any]) -> int:
        """Check every rule; return the notifications sent."""
        rows = conn.execute(
            "SELECT rule_id, org_id, name, kind, spec FROM alert_rules"
            " WHERE enabled AND kind <> 'usage_threshold' ORDER BY created_at"
        ).fetchall()
        rules = [HealthRule(r[0], r[1], r[2], RuleKind(r[3]), r[4]) for r in rows]
        # Conditions of rules disabled since: forgotten, without a `recovered`.
        conn.execute(
            "DELETE FROM alert_health_state h USING alert_rules r"
            " WHERE h.rule_id = r.rule_id AND NOT r.enabled"
        )
        sent = 0
        firing: dict[str, int] = dict.fromkeys((k.value for k in RuleKind), 0)
        for rule in rules:
            try:
                holds = self.check(conn, rule)
            except Exception:  # noqa: BLE001 - one rule's check must not stop the others
                log.warning("health check of rule %s failed", rule.rule_id, exc_info=True)
                self.metrics.health_errors.labels(rule.kind.value).inc()
                continue
            changed, now_firing = self._transition(conn, rule, holds)
            sent += changed
            firing[rule.kind.value] += now_firing
        firing.pop(RuleKind.USAGE_THRESHOLD.value)
        for kind, n in firing.items():
            self.metrics.health_firing.labels(kind).set(n)
        return sent

    def _transition(
        self, conn: psycopg.Connection[Any], rule: HealthRule, holds: dict[str, Condition]
    ) -> tuple[int, int]:
        """Apply one rule's check; return (notifications sent, subjects firing now)."""
        sent = 0
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_KEY, str(rule.rule_id))
            )
            now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
            states = {
                row[0]: (row[1], row[2], row[3])
                for row in conn.execute(
                    "SELECT subject, state, since, notification_id FROM alert_health_state"
                    " WHERE rule_id = %s FOR UPDATE",
                    (rule.rule_id,),
                ).fetchall()
            }
            for subject, condition in holds.items():
                state, since, _ = states.get(subject, (None, now, None))
                if state == "firing":
                    conn.execute(
                        "UPDATE alert_health_state SET value = %s, updated_at = now()"
                        " WHERE rule_id = %s AND subject = %s",
                        (condition.value, rule.rule_id, subject),
                    )
                    continue
                due = (now - since).total_seconds() >= rule.for_seconds
                notification_id = None
                if due:
                    notification_id = self._notify(
                        conn, rule, subject, condition=condition, since=since, recovered=False
                    )
                    sent += 1
                conn.execute(
                    "INSERT INTO alert_health_state (rule_id, subject, state, since, value,"
                    " notification_id) VALUES (%s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (rule_id, subject) DO UPDATE SET state = excluded.state,"
                    " value = excluded.value, notification_id = excluded.notification_id,"
                    " updated_at = now()",
                    (
                        rule.rule_id,
                        subject,
                        "firing" if due else "pending",
                        since,
                        condition.value,
                        notification_id,
                    ),
                )
            for subject, (state, since, _) in states.items():
                if subject in holds:
                    continue
                if state == "firing":
                    cleared = Condition("", {})
                    self._notify(
                        conn, rule, subject, condition=cleared, since=since, recovered=True
                    )
                    sent += 1
                conn.execute(
                    "DELETE FROM alert_health_state WHERE rule_id = %s AND subject = %s",
                    (rule.rule_id, subject),
                )
            firing = conn.execute(
                "SELECT count(*) FROM alert_health_state WHERE rule_id = %s AND state = 'firing'",
                (rule.rule_id,),
            ).fetchone()
        return sent, int(firing[0]) if firing else 0

    def _notify(
        self,
        conn: psycopg.Connection[Any],
        rule: HealthRule,
        subject: str,
        *,
        condition: Condition,
        since: datetime,
        recovered: bool,
    ) -> uuid.UUID:
        type_ = health_type(rule.kind.value, recovered=recovered)
        data = {
            "organisation": rule.org_id,
            "rule_id": str(rule.rule_id),
            "rule_name": rule.name,
            "condition": rule.kind.value,
            "state": "recovered" if recovered else "reached",
            "subject": subject or None,
            "since": since.isoformat(),
            "value": condition.value or None,
            "details": condition.details,
            "rule": rule.spec,
        }
        notification_id = enqueue(
            conn,
            org_id=rule.org_id,
            type_=type_,
            subject=subject or str(rule.rule_id),
            data=data,
            rule_id=rule.rule_id,
        )
        self.metrics.notifications.labels(type_.value).inc()
        self.metrics.health_transitions.labels(
            rule.kind.value, "recovered" if recovered else "reached"
        ).inc()
        return notification_id
