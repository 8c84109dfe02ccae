"""Notification types and their CloudEvents 1.0 JSON documents (pure).

A notification is decided once and stored as the exact bytes every attempt sends: its
CloudEvents `id` is also its `webhook-id`, so a receiver deduplicates retries by either.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import orjson

SOURCE = "/meterstream/alerts"
TYPE_PREFIX = "io.meterstream."


class NotificationType(StrEnum):
    """Every CloudEvents `type` the service sends. Stable: never renamed or reused."""

    THRESHOLD_REACHED = "io.meterstream.usage.threshold_reached"
    REJECTIONS_REACHED = "io.meterstream.health.rejections.reached"
    REJECTIONS_RECOVERED = "io.meterstream.health.rejections.recovered"
    JOB_NOT_RUNNING_REACHED = "io.meterstream.health.job_not_running.reached"
    JOB_NOT_RUNNING_RECOVERED = "io.meterstream.health.job_not_running.recovered"
    CONSUMER_LAG_REACHED = "io.meterstream.health.consumer_lag.reached"
    CONSUMER_LAG_RECOVERED = "io.meterstream.health.consumer_lag.recovered"
    FRESHNESS_REACHED = "io.meterstream.health.freshness.reached"
    FRESHNESS_RECOVERED = "io.meterstream.health.freshness.recovered"
    QUOTA_REACHED = "io.meterstream.health.quota.reached"
    QUOTA_RECOVERED = "io.meterstream.health.quota.recovered"
    DEPRECATED_SCHEMA_REACHED = "io.meterstream.health.deprecated_schema.reached"
    DEPRECATED_SCHEMA_RECOVERED = "io.meterstream.health.deprecated_schema.recovered"
    LATE_EVENTS_REACHED = "io.meterstream.health.late_events.reached"
    LATE_EVENTS_RECOVERED = "io.meterstream.health.late_events.recovered"
    ENDPOINT_DISABLED = "io.meterstream.endpoint.disabled"
    ENDPOINT_TEST = "io.meterstream.endpoint.test"


def decimal_text(value: Decimal) -> str:
    """A quantity as an exact decimal string, without trailing zeros.

    >>> decimal_text(Decimal("1000.000000000")), decimal_text(Decimal("0.500000000"))
    ('1000', '0.5')
    """
    return f"{value.normalize():f}"


def health_type(kind: str, *, recovered: bool) -> NotificationType:
    """The type of a health rule's `reached` or `recovered` notification.

    >>> health_type("rejections", recovered=True).value
    'io.meterstream.health.rejections.recovered'
    """
    return NotificationType(f"{TYPE_PREFIX}health.{kind}.{'recovered' if recovered else 'reached'}")


def matches(event_types: list[str], type_: str) -> bool:
    """Whether an endpoint subscribed to `event_types` gets `type_` (empty: everything).

    An entry ending in `*` is a prefix.

    >>> matches(["io.meterstream.health.*"], "io.meterstream.health.quota.reached")
    True
    >>> matches(["io.meterstream.usage.threshold_reached"], "io.meterstream.endpoint.disabled")
    False
    """
    if not event_types:
        return True
    return any(type_.startswith(t[:-1]) if t.endswith("*") else type_ == t for t in event_types)


def valid_filter(entry: str) -> bool:
    """Whether an endpoint's event-type entry names a known type or a prefix of one.

    >>> valid_filter("io.meterstream.*"), valid_filter("io.meterstream.usage.nope")
    (True, False)
    """
    return any(matches([entry], t.value) for t in NotificationType)


def cloud_event(
    notification_id: str,
    type_: NotificationType,
    subject: str,
    data: dict[str, Any],
    time: datetime | None = None,
) -> bytes:
    """The CloudEvents 1.0 structured-mode JSON of a notification (keys sorted: stable bytes).

    >>> body = cloud_event("n-1", NotificationType.ENDPOINT_TEST, "e-1", {"n": 1},
    ...                    datetime(2026, 11, 1, tzinfo=UTC))
    >>> orjson.loads(body)["time"], orjson.loads(body)["type"]
    ('2026-11-01T00:00:00.000Z', 'io.meterstream.endpoint.test')
    """
    moment = (time or datetime.now(UTC)).astimezone(UTC)
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": notification_id,
            "source": SOURCE,
            "type": type_.value,
            "subject": subject,
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "datacontenttype": "application/json",
            "data": data,
        },
        option=orjson.OPT_SORT_KEYS,
        default=str,
    )
