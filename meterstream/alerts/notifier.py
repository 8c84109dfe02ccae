"""Webhook delivery: claim due deliveries, POST them signed, record and reschedule.

At least once: a delivery is claimed by moving its `next_attempt_at` past the request's
timeout (a lease) and counting the attempt; if the notifier dies mid-request the lease runs
out and the delivery is tried again, with the same `webhook-id`. Retries wait as
`meterstream.alerts.retry` says; the schedule is in PostgreSQL, so a restart keeps it. An
endpoint that has failed for `alerts.disable_after_ms` and at least
`alerts.disable_after_failures` attempts in a row is disabled, and its organisation's other
endpoints get `io.meterstream.endpoint.disabled`. Redirects are not followed (a 3xx fails).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from meterstream.alerts.metrics import AlertMetrics
from meterstream.alerts.notifications import NotificationType
from meterstream.alerts.outbox import enqueue
from meterstream.alerts.retry import retry_delay
from meterstream.alerts.signing import signed_headers
from meterstream.alerts.urls import url_problem
from meterstream.config import Settings

log = logging.getLogger("meterstream.alerts.notifier")

USER_AGENT = "meterstream-webhooks/1"
#: What a lease adds to the request timeout before an unfinished attempt is tried again.
LEASE_MARGIN = timedelta(seconds=30)
#: At most this much of a failed answer's body is kept in the delivery log.
ERROR_BODY_CHARS = 200


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery taken for one attempt."""

    notification_id: uuid.UUID
    endpoint_id: uuid.UUID
    org_id: str
    attempt: int
    url: str
    secrets: tuple[str, ...]
    body: bytes
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt got."""

    delivered: bool
    response_code: int | None
    error: str
    started_at: datetime
    seconds: float


class Notifier:
    """Claims and sends deliveries; one instance per service process (thread-safe calls)."""

    def __init__(self, settings: Settings, metrics: AlertMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._local = threading.local()

    @property
    def lease(self) -> timedelta:
        """How long a claimed delivery is left alone before it is tried again."""
        return timedelta(milliseconds=self.settings.alerts.delivery_timeout_ms) + LEASE_MARGIN

    def claim(self, conn: psycopg.Connection[Any], limit: int) -> list[Claimed]:
        """Take up to `limit` due deliveries to enabled endpoints (counting their attempt)."""
        rows = conn.execute(
            "WITH due AS ("
            " SELECT d.notification_id, d.endpoint_id FROM alert_deliveries d"
            " JOIN alert_endpoints e USING (endpoint_id)"
            " WHERE d.state = 'pending' AND d.next_attempt_at <= now() AND e.enabled"
            " ORDER BY d.next_attempt_at LIMIT %s FOR UPDATE OF d SKIP LOCKED)"
            " UPDATE alert_deliveries d SET attempts = d.attempts + 1,"
            " next_attempt_at = now() + %s, updated_at = now()"
            " FROM due, alert_endpoints e, alert_notifications n"
            " WHERE d.notification_id = due.notification_id AND d.endpoint_id = due.endpoint_id"
            " AND e.endpoint_id = d.endpoint_id AND n.notification_id = d.notification_id"
            " RETURNING d.notification_id, d.endpoint_id, d.org_id, d.attempts, e.url, e.secret,"
            " CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END,"
            " n.body, n.created_at",
            (limit, self.lease),
        ).fetchall()
        return [
            Claimed(
                notification_id=r[0],
                endpoint_id=r[1],
                org_id=r[2],
                attempt=r[3],
                url=r[4],
                secrets=(r[5], r[6]) if r[6] else (r[5],),
                body=r[7].encode(),
                created_at=r[8],
            )
            for r in rows
        ]

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            timeout = self.settings.alerts.delivery_timeout_ms / 1000
            client = httpx.Client(timeout=timeout, follow_redirects=False)
            self._local.client = client
        return client

    def send(self, item: Claimed) -> Outcome:
        """One attempt: POST the notification's body, signed, to the endpoint."""
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        problem = url_problem(item.url, allow_private=self.settings.alerts.allow_private_urls)
        if problem is not None:
            return Outcome(False, None, f"refused: {problem}", started_at, 0.0)
        headers = signed_headers(
            item.secrets, str(item.notification_id), int(time.time()), item.body
        )
        headers["content-type"] = "application/cloudevents+json; charset=utf-8"
        headers["user-agent"] = USER_AGENT
        try:
            response = self._client().post(item.url, content=item.body, headers=headers)
        except httpx.HTTPError as exc:
            seconds = time.perf_counter() - started
            return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500], started_at, seconds)
        seconds = time.perf_counter() - started
        if 200 <= response.status_code < 300:  # noqa: PLR2004
            return Outcome(True, response.status_code, "", started_at, seconds)
        error = f"HTTP {response.status_code}: {response.text[:ERROR_BODY_CHARS]}"
        return Outcome(False, response.status_code, error, started_at, seconds)

    def record(self, conn: psycopg.Connection[Any], item: Claimed, outcome: Outcome) -> None:
        """Log the attempt and move the delivery on (delivered, retry later, or given up)."""
        alerts = self.settings.alerts
        self.metrics.attempts.labels("delivered" if outcome.delivered else "failed").inc()
        self.metrics.attempt_seconds.observe(outcome.seconds)
        with conn.transaction():
            conn.execute(
                "INSERT INTO alert_delivery_attempts (notification_id, endpoint_id, org_id,"
                " attempt, started_at, duration_ms, outcome, response_code, error)"
                " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM"
                " alert_deliveries WHERE notification_id = %s AND endpoint_id = %s)",
                (
                    item.notification_id,
                    item.endpoint_id,
                    item.org_id,
                    item.attempt,
                    outcome.started_at,
                    round(outcome.seconds * 1000),
                    "delivered" if outcome.delivered else "failed",
                    outcome.response_code,
                    outcome.error,
                    item.notification_id,
                    item.endpoint_id,
                ),
            )
            key = (item.notification_id, item.endpoint_id, item.attempt)
            if outcome.delivered:
                cur = conn.execute(
                    "UPDATE alert_deliveries SET state = 'delivered', delivered_at = now(),"
                    " last_response_code = %s, last_error = '', updated_at = now()"
                    " WHERE notification_id = %s AND endpoint_id = %s AND attempts = %s"
                    " RETURNING extract(epoch FROM now() - %s::timestamptz)",
                    (outcome.response_code, *key, item.created_at),
                )
                row = cur.fetchone()
                if row is not None:
                    self.metrics.delivery_latency.observe(max(0.0, float(row[0])))
                conn.execute(
                    "UPDATE alert_endpoints SET failing_since = NULL, consecutive_failures = 0"
                    " WHERE endpoint_id = %s AND (failing_since IS NOT NULL"
                    " OR consecutive_failures > 0)",
                    (item.endpoint_id,),
                )
                return
            last = item.attempt >= alerts.max_attempts
            cur = conn.execute(
                "UPDATE alert_deliveries SET state = %s, next_attempt_at = now() + %s,"
                " last_response_code = %s, last_error = %s, updated_at = now()"
                " WHERE notification_id = %s AND endpoint_id = %s AND attempts = %s",
                (
                    "failed" if last else "pending",
                    retry_delay(item.attempt, alerts),
                    outcome.response_code,
                    outcome.error,
                    *key,
                ),
            )
            if last and cur.rowcount:
                self.metrics.exhausted.inc()
            self._count_failure(conn, item, outcome)

    def _count_failure(
        self, conn: psycopg.Connection[Any], item: Claimed, outcome: Outcome
    ) -> None:
        """Count a failed attempt against the endpoint; disable it after sustained failure."""
        alerts = self.settings.alerts
        row = conn.execute(
            "UPDATE alert_endpoints SET consecutive_failures = consecutive_failures + 1,"
            " failing_since = coalesce(failing_since, now()) WHERE endpoint_id = %s AND enabled"
            " RETURNING consecutive_failures, failing_since,"
            " now() - coalesce(failing_since, now()) >= %s, url",
            (item.endpoint_id, timedelta(milliseconds=alerts.disable_after_ms)),
        ).fetchone()
        if row is None or row[0] < alerts.disable_after_failures or not row[2]:
            return
        reason = (
            f"every attempt failed since {row[1].isoformat()} ({row[0]} in a row); "
            f"last: {outcome.error}"
        )[:1000]
        disabled = conn.execute(
            "UPDATE alert_endpoints SET enabled = false, disabled_at = now(),"
            " disabled_reason = %s, updated_at = now() WHERE endpoint_id = %s AND enabled"
            " RETURNING disabled_at",
            (reason, item.endpoint_id),
        ).fetchone()
        if disabled is None:
            return
        log.warning("endpoint %s disabled: %s", item.endpoint_id, reason)
        self.metrics.endpoints_disabled.inc()
        enqueue(
            conn,
            org_id=item.org_id,
            type_=NotificationType.ENDPOINT_DISABLED,
            subject=str(item.endpoint_id),
            data={
                "organisation": item.org_id,
                "endpoint_id": str(item.endpoint_id),
                "url": row[3],
                "reason": reason,
                "failing_since": row[1].isoformat(),
                "consecutive_failures": row[0],
                "disabled_at": disabled[0].isoformat(),
            },
        )
        self.metrics.notifications.labels(NotificationType.ENDPOINT_DISABLED.value).inc()

    def backlog(self, conn: psycopg.Connection[Any]) -> None:
        """Update the pending-deliveries gauges."""
        row = conn.execute(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(d.created_at)), 0)"
            " FROM alert_deliveries d JOIN alert_endpoints e USING (endpoint_id)"
            " WHERE d.state = 'pending' AND e.enabled"
        ).fetchone()
        if row is not None:
            self.metrics.pending.set(int(row[0]))
            self.metrics.oldest_pending.set(float(row[1]))

    def close(self) -> None:
        """Close this thread's HTTP client."""
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
