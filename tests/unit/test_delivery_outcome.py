"""A request's delivery outcome from the broker's reports: which records failed, by index."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from confluent_kafka import KafkaError

from meterstream.api.producer import Delivery, _Pending

RECORDS = [(b"a", b"1"), (b"b", b"2"), (b"a", b"1"), (b"c", b"3")]


@dataclass
class Report:
    """What a delivery report's message offers: its key and value."""

    k: bytes
    v: bytes

    def key(self) -> bytes:
        return self.k

    def value(self) -> bytes:
        return self.v


def outcome(
    reports: list[tuple[int, bool]], refused: tuple[int, ...] = (), *, timed_out: bool = False
) -> tuple[Delivery, bool]:
    """Feed reports (record index, failed?) and refusals; the outcome and whether it resolved."""

    async def run() -> tuple[Delivery, bool]:
        pending = _Pending(asyncio.get_running_loop(), RECORDS)
        for index in refused:
            pending.refused(index, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        for index, failed in reports:
            error = KafkaError(KafkaError._MSG_TIMED_OUT) if failed else None  # noqa: SLF001
            pending.delivered(error, Report(*RECORDS[index]))  # type: ignore[arg-type]
        return pending.outcome(timed_out=timed_out), pending.done.done()

    return asyncio.run(run())


def test_every_record_acknowledged_is_no_failure() -> None:
    assert outcome([(3, False), (0, False), (1, False), (2, False)]) == (Delivery(), True)


def test_failed_reports_are_found_by_key_and_value_equal_records_in_turn() -> None:
    delivery, done = outcome([(1, False), (2, True), (0, True), (3, False)])

    assert done
    assert sorted(delivery.failed) == [0, 2]


def test_a_failed_report_names_the_record_it_is_about() -> None:
    delivery, _ = outcome([(0, False), (1, True), (2, False), (3, False)])

    assert list(delivery.failed) == [1]
    assert "timed out" in delivery.failed[1].lower()


def test_refused_records_keep_their_index_and_reports_skip_them() -> None:
    delivery, done = outcome([(2, True), (1, False), (3, False)], refused=(0,))

    assert done
    assert sorted(delivery.failed) == [0, 2]


def test_after_a_timeout_every_record_not_reported_failed_counts_as_failed() -> None:
    delivery, done = outcome([(1, True), (3, False)], timed_out=True)

    assert not done
    assert sorted(delivery.failed) == [0, 1, 2, 3]
    assert delivery.failed[0] == "no acknowledgement in time"
