"""Sending accepted events to Kafka and awaiting their acknowledgement (idempotent, acks=all).

The API answers only after `EventProducer.send` returns: an event counts as accepted when the
broker has acknowledged it, never when it is merely queued in the client.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from confluent_kafka import KafkaError, Message, Producer

from meterstream.config import Settings

#: Records the client may hold (queued or in flight) before `enqueue` waits.
MAX_QUEUED = 200_000


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of sending records: the indexes that failed, with why."""

    failed: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every record was acknowledged."""
        return not self.failed


class EventProducer(Protocol):
    """What the API needs from Kafka; a fake implements it in unit tests."""

    async def enqueue(
        self, topic: str, records: Sequence[tuple[bytes, bytes]]
    ) -> Awaitable[Delivery]:
        """Hand (key, value) records to the client, in order; await the result for the outcome."""
        ...

    def close(self) -> None:
        """Flush and stop."""
        ...


async def send(
    producer: EventProducer, topic: str, records: Sequence[tuple[bytes, bytes]]
) -> Delivery:
    """Send records and wait until each is acknowledged or has failed."""
    return await (await producer.enqueue(topic, records))


class _Pending:
    """Counts one `send`'s outstanding acknowledgements; resolved from the poll thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.remaining = count
        self.failed: dict[int, str] = {}
        self.acked: set[int] = set()
        self.done = loop.create_future()
        self.lock = threading.Lock()
        if count == 0:
            self.done.set_result(None)

    def callback(self, index: int, err: KafkaError | None, _msg: Message | None = None) -> None:
        with self.lock:
            if err is not None:
                self.failed[index] = str(err)
            else:
                self.acked.add(index)
            self.remaining -= 1
            finished = self.remaining == 0
        if finished:
            self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class KafkaEventProducer:
    """A confluent-kafka producer with a poll thread that resolves asyncio waiters."""

    def __init__(self, settings: Settings, extra: dict[str, object] | None = None) -> None:
        timeout_ms = settings.api.kafka_delivery_timeout_ms
        self._timeout_s = timeout_ms / 1000 + 5
        self._max_queued = MAX_QUEUED
        self._producer = Producer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                # Durable before acknowledged: every in-sync replica has it, no duplicates
                # from the producer's own retries, order kept per partition.
                "enable.idempotence": True,
                "acks": "all",
                # A request's records are queued at once (`produce_batch`), so they batch
                # without lingering; every ms of linger is a ms more before the 202.
                "linger.ms": 1,
                "compression.type": "lz4",
                # After this a record counts as failed and the request is answered 503.
                "message.timeout.ms": timeout_ms,
                "socket.connection.setup.timeout.ms": min(timeout_ms, 10_000),
                # Bounded client memory: a full queue makes `send` wait, not grow.
                "queue.buffering.max.kbytes": 64 * 1024,
                "queue.buffering.max.messages": MAX_QUEUED,
                **(extra or {}),
            }
        )
        self._running = True
        self._thread = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while self._running:
            self._producer.poll(0.05)

    async def enqueue(
        self, topic: str, records: Sequence[tuple[bytes, bytes]]
    ) -> Awaitable[Delivery]:
        """Produce `records` (key, value) to `topic` in order; return an awaitable outcome."""
        pending = _Pending(asyncio.get_running_loop(), len(records))
        # One `produce_batch` call per request, not one `produce` per record: the records are
        # handed to librdkafka in one C loop (each still partitioned by its key).
        messages = [
            {"key": key, "value": value, "callback": partial(pending.callback, index)}
            for index, (key, value) in enumerate(records)
        ]
        while messages:
            await self._room_for(len(messages))
            try:
                self._producer.produce_batch(topic, messages)
            except Exception as exc:  # noqa: BLE001 - e.g. an invalid topic: failed records
                for message in messages:
                    message["callback"](KafkaError(KafkaError._FAIL, str(exc)), None)  # noqa: SLF001
                break
            refused = [m for m in messages if "_error" in m]
            full = [m for m in refused if m["_error"].code() == KafkaError._QUEUE_FULL]  # noqa: SLF001
            for message in refused:
                if message["_error"].code() != KafkaError._QUEUE_FULL:  # noqa: SLF001
                    message["callback"](message["_error"], None)  # e.g. too large: failed
            for message in full:
                del message["_error"]
            # The queue filled during the call (rare: `_room_for` waited for room): the refused
            # records go again, in their order, after the ones it took.
            messages = full
        return self._outcome(pending)

    async def _room_for(self, count: int) -> None:
        """Wait until the client's queue has room for `count` more records.

        The poll thread drains it; waiting first means a batch is rarely refused halfway.
        """
        while len(self._producer) + count > self._max_queued and len(self._producer) > 0:
            await asyncio.sleep(0.005)

    async def _outcome(self, pending: _Pending) -> Delivery:
        try:
            await asyncio.wait_for(asyncio.shield(pending.done), self._timeout_s)
        except TimeoutError:
            with pending.lock:
                unknown = {
                    i: "no acknowledgement in time"
                    for i in range(len(pending.acked) + len(pending.failed) + pending.remaining)
                    if i not in pending.acked
                }
                return Delivery(unknown | pending.failed)
        return Delivery(dict(pending.failed))

    def close(self) -> None:
        """Flush what is queued (bounded by the delivery timeout) and stop the poll thread."""
        self._producer.flush(self._timeout_s)
        self._running = False
        self._thread.join(timeout=5)
