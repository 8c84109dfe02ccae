"""Publishing recorded corrections to Kafka: the outbox, drained in order, retried until sent.

A correction is recorded in PostgreSQL together with an outbox row, in one transaction. Then
whoever recorded it (the CLI, the API) publishes the outbox: under a transaction-level advisory
lock (one publisher at a time, so messages go out in `seq` order), it produces the rows'
messages to the corrections topic, waits for Kafka's acknowledgement, and only then deletes
the rows. A failed publish leaves them, with the error, for the next attempt: the API's relay
tries every few seconds, `meterstream corrections publish` on demand. A crash between Kafka's
acknowledgement and the delete sends a message twice, which the job applies once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from meterstream.config import Settings
from meterstream.corrections.model import Action, Correction
from meterstream.errors import MeterstreamError

log = logging.getLogger(__name__)

#: pg_advisory_xact_lock key of the publisher (migrate: 72656, recalculation: 72657).
PUBLISH_LOCK = 72658
BATCH = 1_000
#: How long one publish waits for Kafka's acknowledgement before it gives up (and retries later).
KAFKA_TIMEOUT_S = 10.0

CORRECTION_COLUMNS = (
    "c.correction_id, c.request_id, c.account_id, c.action, c.dedup_key, c.event_id, c.meter,"
    " c.aggregation, c.period_start, c.dimensions, c.in_stream, c.new_dimensions,"
    " c.new_quantity, c.new_unique_value, c.new_event_time_ms, c.new_fingerprint"
)


def correction_of(row: dict[str, Any]) -> Correction:
    """A `corrections` row (CORRECTION_COLUMNS) as a value."""
    return Correction(
        correction_id=row["correction_id"],
        request_id=row["request_id"],
        account_id=row["account_id"],
        action=Action(row["action"]),
        dedup_key=row["dedup_key"] or "",
        event_id=row["event_id"] or "",
        meter=row["meter"],
        aggregation=row["aggregation"],
        period_start=row["period_start"],
        dimensions=row["dimensions"] or "",
        in_stream=row["in_stream"],
        new_dimensions=row["new_dimensions"],
        new_quantity=row["new_quantity"],
        new_unique_value=row["new_unique_value"],
        new_event_time_ms=row["new_event_time_ms"],
        new_fingerprint=row["new_fingerprint"],
    )


@dataclass(slots=True)
class PublishResult:
    """What one drain of the outbox did."""

    sent: list[uuid.UUID] = field(default_factory=list)
    #: Still in the outbox after this attempt (Kafka did not acknowledge them).
    pending: int = 0
    error: str = ""


def publish_pending(settings: Settings, *, timeout_s: float = KAFKA_TIMEOUT_S) -> PublishResult:
    """Publish every outbox row in `seq` order; stop at the first batch Kafka does not take."""
    from meterstream.kafka_io import produce  # noqa: PLC0415 - confluent_kafka is heavy
    from meterstream.testing import Record  # noqa: PLC0415

    result = PublishResult()
    topic = settings.kafka.topics.corrections
    with psycopg.connect(
        settings.postgres.conninfo, row_factory=dict_row, connect_timeout=5
    ) as conn:
        while True:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (PUBLISH_LOCK,))
                rows = conn.execute(
                    f"SELECT {CORRECTION_COLUMNS} FROM correction_outbox o"
                    " JOIN corrections c USING (correction_id) ORDER BY o.seq LIMIT %s",
                    (BATCH,),
                ).fetchall()
                if not rows:
                    return result
                ids = [row["correction_id"] for row in rows]
                records = [Record(*correction_of(row).message()) for row in rows]
                try:
                    produce(settings, topic, records, timeout_s=timeout_s)
                except MeterstreamError as exc:
                    conn.execute(
                        "UPDATE correction_outbox SET attempts = attempts + 1, last_error = %s"
                        " WHERE correction_id = ANY(%s)",
                        (str(exc)[:1000], ids),
                    )
                    result.error = str(exc)
                    count = conn.execute("SELECT count(*) AS n FROM correction_outbox").fetchone()
                    result.pending = int(count["n"]) if count else len(ids)
                    return result
                conn.execute("DELETE FROM correction_outbox WHERE correction_id = ANY(%s)", (ids,))
                result.sent += ids


def outbox_size(settings: Settings) -> int:
    """Corrections recorded but not yet acknowledged by Kafka."""
    with psycopg.connect(settings.postgres.conninfo) as conn:
        row = conn.execute("SELECT count(*) FROM correction_outbox").fetchone()
    return int(row[0]) if row else 0


class Relay:
    """Drains the outbox every `interval_s` in a serving process (the ingest API)."""

    def __init__(self, settings: Settings, interval_s: float = 5.0) -> None:
        self._settings = settings
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start draining in the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="corrections-relay")

    async def stop(self) -> None:
        """Stop draining (what is left stays in the outbox)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                result = await asyncio.to_thread(publish_pending, self._settings)
            except psycopg.Error:
                continue  # PostgreSQL is down: the rows wait in it
            if result.error:
                log.warning(
                    "%d corrections are not published yet: %s", result.pending, result.error
                )
