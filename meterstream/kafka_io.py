"""Producing records to Kafka durably (idempotent producer, acks=all)."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Message, Producer

from meterstream.config import Settings
from meterstream.errors import StackError
from meterstream.testing import Record


def produce(
    settings: Settings,
    topic: str,
    records: Iterable[Record],
    positions: list[tuple[int, int]] | None = None,
    timeout_s: float = 60,
) -> int:
    """Produce `records` to `topic` and wait until every one is acknowledged; return the count.

    `positions`, if given, receives the (partition, offset) of every record Kafka stored.
    Raises StackError if any record is not acknowledged within `timeout_s`.
    """
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "lz4",
            "message.timeout.ms": int(timeout_s * 1000),
        }
    )
    failures: list[str] = []

    def on_delivery(err: object, msg: Message) -> None:
        if err is not None:
            failures.append(str(err))
        elif positions is not None:
            positions.append((msg.partition() or 0, msg.offset() or 0))

    count = 0
    for record in records:
        while True:
            try:
                producer.produce(topic, record.value, key=record.key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        producer.poll(0)
    remaining = producer.flush(timeout_s + 5)
    if remaining or failures:
        msg = f"{remaining} records unacknowledged, {len(failures)} failed: {failures[:3]}"
        raise StackError(msg)
    return count
