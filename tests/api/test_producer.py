"""The API's Kafka producer: a request's records go in one batch; each one's outcome is its own."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from confluent_kafka import Message

from meterstream.api.producer import Delivery, KafkaEventProducer, _Pending, send
from meterstream.config import Settings
from tests.api.conftest import read_topic

pytestmark = pytest.mark.integration


def test_producer_batch_is_in_kafka_in_order_by_key(
    stack: Settings, topics: tuple[str, str]
) -> None:
    raw, _ = topics
    records = [(f"acct-{i % 3}".encode(), f"event-{i}".encode()) for i in range(300)]
    producer = KafkaEventProducer(stack)
    try:
        delivery = asyncio.run(send(producer, raw, records))
    finally:
        producer.close()

    assert delivery.ok
    stored = read_topic(stack, raw, 300)
    for key in {k for k, _ in records}:
        assert [v for k, v in stored if k == key] == [v for k, v in records if k == key]


def test_producer_record_the_client_refuses_fails_alone(
    stack: Settings, topics: tuple[str, str]
) -> None:
    raw, _ = topics
    records = [(b"acct-1", b"small"), (b"acct-1", b"x" * 5_000), (b"acct-2", b"small too")]
    producer = KafkaEventProducer(stack, extra={"message.max.bytes": 2_000})
    try:
        delivery = asyncio.run(send(producer, raw, records))
    finally:
        producer.close()

    assert list(delivery.failed) == [1]
    assert sorted(v for _, v in read_topic(stack, raw, 2)) == [b"small", b"small too"]


def test_producer_unknown_topic_fails_every_record_in_time(stack: Settings) -> None:
    settings = dataclasses.replace(
        stack, api=dataclasses.replace(stack.api, kafka_delivery_timeout_ms=2_000)
    )
    producer = KafkaEventProducer(settings)  # the stack does not create topics on demand
    try:
        delivery = asyncio.run(send(producer, "no-such-topic-for-the-api", [(b"a", b"1")] * 3))
    finally:
        producer.close()

    assert sorted(delivery.failed) == [0, 1, 2]


def test_producer_keeps_serving_reports_after_a_callback_raised(
    stack: Settings, topics: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, _ = topics
    settings = dataclasses.replace(
        stack, api=dataclasses.replace(stack.api, kafka_delivery_timeout_ms=2_000)
    )
    delivered = _Pending.delivered

    def fails_on_boom(self: _Pending, err: object, msg: Message | None) -> None:
        if msg is not None and msg.value() == b"boom":
            problem = "a delivery callback that fails"
            raise RuntimeError(problem)
        delivered(self, err, msg)  # type: ignore[arg-type]

    monkeypatch.setattr(_Pending, "delivered", fails_on_boom)
    producer = KafkaEventProducer(settings)

    async def both() -> list[Delivery]:
        # Both in flight at once: the second's reports come after the one that raises.
        return await asyncio.gather(
            send(producer, raw, [(b"acct-1", b"boom")]),
            send(producer, raw, [(b"acct-1", b"fine"), (b"acct-2", b"fine too")]),
        )

    try:
        first, second = asyncio.run(both())
    finally:
        producer.close()

    assert first.failed == {0: "no acknowledgement in time"}  # its report was lost: backstop
    assert second.ok
