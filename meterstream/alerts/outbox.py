"""The outbox: a notification and its deliveries, written in the caller's transaction.

Whoever decides a notification (a threshold firing, a health transition, an endpoint disabled)
writes it here in the same transaction as the decision, so a crash leaves either both or
neither. The notifier is woken by NOTIFY when the transaction commits.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg

from meterstream.alerts.notifications import NotificationType, cloud_event

CHANNEL = "meterstream_alerts"


def enqueue(
    conn: psycopg.Connection[Any],
    *,
    org_id: str,
    type_: NotificationType,
    subject: str,
    data: dict[str, Any],
    rule_id: uuid.UUID | str | None = None,
    notification_id: uuid.UUID | None = None,
    time: datetime | None = None,
) -> uuid.UUID:
    """Write one notification and a delivery to each enabled endpoint subscribed to its type.

    Call inside the transaction that decided the notification. Returns its id.
    """
    ident = notification_id or uuid.uuid4()
    body = cloud_event(str(ident), type_, subject, data, time).decode()
    conn.execute(
        "INSERT INTO alert_notifications (notification_id, org_id, type, subject, rule_id, body)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (ident, org_id, type_.value, subject, rule_id, body),
    )
    conn.execute(
        "INSERT INTO alert_deliveries (notification_id, endpoint_id, org_id)"
        " SELECT %(id)s, e.endpoint_id, e.org_id FROM alert_endpoints e"
        " WHERE e.org_id = %(org)s AND e.enabled AND (cardinality(e.event_types) = 0"
        "  OR EXISTS (SELECT 1 FROM unnest(e.event_types) AS t(pattern)"
        "   WHERE t.pattern = %(type)s"
        "    OR (right(t.pattern, 1) = '*' AND starts_with(%(type)s, rtrim(t.pattern, '*')))))",
        {"id": ident, "org": org_id, "type": type_.value},
    )
    conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
    return ident
