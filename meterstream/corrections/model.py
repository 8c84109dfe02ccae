"""Corrections as values: actions, refusals, the counted event, and the stream's message.

The message on `meterstream.corrections` is the contract with the streaming job's keyed
operator (jvm/udf `Correction.java`): key = account id, value = one JSON object.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from meterstream.errors import MeterstreamError
from meterstream.rules.periods import period_end, zone

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: A correction applies in the stream only while the job still remembers the event's key: its
#: dedup state expires this long after the last arrival, less a margin.
STATE_MARGIN = timedelta(hours=1)


class Action(StrEnum):
    """What a correction does to a counted event."""

    #: Take the event out of its figure.
    VOID = "void"
    #: Replace the event's content (same idempotency key, meter and billing period).
    AMEND = "amend"


class Refusal(StrEnum):
    """Why a correction (or an erasure) was refused: stable codes, with an HTTP status each."""

    #: The event was never counted: not in the archive, late, or a repeat of another event.
    NOT_COUNTED = "NOT_COUNTED"
    #: The event is voided already; nothing can follow a void.
    ALREADY_VOIDED = "ALREADY_VOIDED"
    #: The new content is not acceptable as an amend of the counted event.
    INVALID_AMENDMENT = "INVALID_AMENDMENT"
    #: The account's personal data was erased.
    ACCOUNT_ERASED = "ACCOUNT_ERASED"
    #: The request itself is unusable (a range that ends before it starts, no archive).
    BAD_REQUEST = "BAD_REQUEST"
    #: Another recalculation or erasure holds the lock.
    BUSY = "BUSY"
    #: No such account (in the caller's organisation).
    NOT_FOUND = "NOT_FOUND"
    #: There is no audit archive to tell which events were counted.
    NO_ARCHIVE = "NO_ARCHIVE"

    @property
    def status(self) -> int:
        """The HTTP status the API answers with."""
        return {
            Refusal.NOT_COUNTED: 404,
            Refusal.ALREADY_VOIDED: 409,
            Refusal.INVALID_AMENDMENT: 422,
            Refusal.ACCOUNT_ERASED: 410,
            Refusal.BAD_REQUEST: 400,
            Refusal.BUSY: 409,
            Refusal.NOT_FOUND: 404,
            Refusal.NO_ARCHIVE: 503,
        }[self]


class CorrectionError(MeterstreamError):
    """A correction or an erasure was refused; `code` says why."""

    def __init__(self, code: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, exactly (integer arithmetic, no float rounding).

    >>> epoch_ms(datetime(2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC))
    1793491199999
    """
    return (moment - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    """The UTC instant of epoch milliseconds.

    >>> from_ms(1793491199999).isoformat()
    '2026-10-31T23:59:59.999000+00:00'
    """
    return EPOCH + timedelta(milliseconds=ms)


@dataclass(frozen=True, slots=True)
class ArchivedEvent:
    """One accepted arrival as the audit archive holds it (its payload left out)."""

    account_id: str
    event_id: str
    meter: str
    aggregation: str
    event_time_ms: int
    period_start: date
    dimensions: str
    quantity: Decimal | None
    unique_value: str | None
    dedup_key: str
    fingerprint: int
    source_topic: str
    source_partition: int
    source_offset: int
    arrived_at: datetime


def applies_in_stream(
    period_start: date,
    time_zone: str,
    allowed_lateness: timedelta,
    *,
    arrived_at: datetime,
    now: datetime,
    dedup_ttl: timedelta,
) -> bool:
    """Whether the streaming job applies a correction of this event (else a recalculation).

    Its period must still be open (its end, in the account's time zone, plus the allowed
    lateness is in the future) and the job must still hold the event's key (it arrived less
    than the dedup window ago, with a margin).

    >>> now = datetime(2026, 11, 2, tzinfo=UTC)
    >>> day = timedelta(days=1)
    >>> applies_in_stream(date(2026, 10, 1), "UTC", 3 * day, arrived_at=now, now=now,
    ...                   dedup_ttl=35 * day)
    True
    >>> applies_in_stream(date(2026, 10, 1), "UTC", 0 * day, arrived_at=now, now=now,
    ...                   dedup_ttl=35 * day)
    False
    """
    try:
        end = period_end(period_start, time_zone)
    except MeterstreamError:  # a zone Java and Python do not know: the job bills in UTC
        end = period_end(period_start, "UTC")
    return now < end + allowed_lateness and arrived_at > now - dedup_ttl + STATE_MARGIN


@dataclass(frozen=True, slots=True)
class Correction:
    """One recorded correction of one counted event (a row of `corrections`)."""

    correction_id: uuid.UUID
    request_id: uuid.UUID
    account_id: str
    action: Action
    dedup_key: str
    event_id: str
    meter: str
    aggregation: str
    period_start: date
    dimensions: str
    in_stream: bool
    #: Amend only: the new content as the Python rules checked it.
    new_dimensions: str | None = None
    new_quantity: Decimal | None = None
    new_unique_value: str | None = None
    new_event_time_ms: int | None = None
    new_fingerprint: int | None = None

    def message(self) -> tuple[bytes, bytes]:
        """The (key, value) of its record on the corrections topic (docs/corrections.md)."""
        amend = self.action is Action.AMEND
        body: dict[str, Any] = {
            "correction_id": str(self.correction_id),
            "account_id": self.account_id,
            "dedup_key": self.dedup_key,
            "action": self.action.value,
            "in_stream": self.in_stream,
            "meter": self.meter if amend else None,
            "aggregation": self.aggregation if amend else None,
            "period_start": self.period_start.isoformat() if amend else None,
            "dimensions": self.new_dimensions if amend else None,
            "quantity": (
                format(self.new_quantity, "f") if amend and self.new_quantity is not None else None
            ),
            "unique_value": self.new_unique_value if amend else None,
            "event_time_ms": self.new_event_time_ms if amend else None,
            "fingerprint": self.new_fingerprint if amend else None,
        }
        return self.account_id.encode(), json.dumps(body, separators=(",", ":")).encode()

    def describe(self) -> dict[str, Any]:
        """JSON-ready, as the API and `corrections list --format json` show it."""
        return {
            "correction_id": str(self.correction_id),
            "request_id": str(self.request_id),
            "account_id": self.account_id,
            "action": self.action.value,
            "event_id": self.event_id,
            "dedup_key": self.dedup_key,
            "meter": self.meter,
            "period_start": self.period_start.isoformat(),
            "dimensions": self.dimensions,
            "in_stream": self.in_stream,
            "new_dimensions": self.new_dimensions,
            "new_quantity": (
                f"{self.new_quantity.normalize():f}" if self.new_quantity is not None else None
            ),
            "new_unique_value": self.new_unique_value,
            "new_event_time": (
                from_ms(self.new_event_time_ms).isoformat()
                if self.new_event_time_ms is not None
                else None
            ),
        }


def account_time_zone(name: str | None) -> str:
    """The account's billing zone, UTC when it has none or one Python does not know.

    >>> account_time_zone(None), account_time_zone("Mars/Olympus")
    ('UTC', 'UTC')
    """
    if not name:
        return "UTC"
    try:
        zone(name)
    except MeterstreamError:
        return "UTC"
    return name
