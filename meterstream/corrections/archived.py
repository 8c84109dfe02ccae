"""Which events were counted, from the audit archive: the first arrival of each key.

An event can be corrected only if it was counted. The archive holds every accepted arrival
(retries and conflicting repeats too) with its Kafka position; as in the stream and in a
recalculation, the first arrival of an (account, idempotency key) counts: the lowest offset in
its partition, then the earliest arrival of those (`meterstream.flink.recalculate`). pyarrow
reads only the columns needed, file by file: the filter columns first, the others only from
files that match, in the arrival days that can matter (bench/correction_lookup.py measures it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from meterstream.archive import committed_files
from meterstream.corrections.model import ArchivedEvent
from meterstream.rules.validate import DEDUP_WINDOW

#: Arrivals that decide a key's first arrival lie within the dedup window of each other.
WINDOW = DEDUP_WINDOW + timedelta(days=1)
COLUMNS = (
    "account_id",
    "event_id",
    "meter",
    "aggregation",
    "event_time_ms",
    "period_start",
    "dimensions",
    "quantity",
    "unique_value",
    "dedup_key",
    "fingerprint",
    "source_topic",
    "source_partition",
    "source_offset",
    "arrived_at",
)

Days = tuple[date, date] | None


def _day(path: Path) -> str:
    return path.parent.name.removeprefix("dt=")


def files_of(root: Path, days: Days) -> list[Path]:
    """The committed files of the arrival days `days` (inclusive; None: every day)."""
    files = committed_files(root)
    if days is None:
        return files
    first, last = (d.isoformat() for d in days)
    return [f for f in files if first <= _day(f) <= last]


#: A filter over a file's filter columns: the mask of the rows wanted.
Condition = Callable[[Any], Any]


def _read(
    files: list[Path], columns: Iterable[str], on: list[str], condition: Condition
) -> list[dict[str, Any]]:
    """`columns` of the rows of `files` that `condition` (over the columns `on`) keeps."""
    import pyarrow.compute as pc  # noqa: PLC0415 - keep `meterstream --help` fast
    import pyarrow.parquet as pq  # noqa: PLC0415

    out: list[dict[str, Any]] = []
    for path in files:
        parquet = pq.ParquetFile(path)
        mask = pc.fill_null(condition(parquet.read(columns=on)), False)
        if pc.any(mask).as_py():
            out += parquet.read(columns=list(columns)).filter(mask).to_pylist()
    return out


def _event(row: dict[str, Any]) -> ArchivedEvent:
    arrived = row["arrived_at"]
    # The archive's timestamps are UTC wall clock (Parquet "not adjusted to UTC").
    arrived = arrived.replace(tzinfo=UTC) if arrived.tzinfo is None else arrived.astimezone(UTC)
    return ArchivedEvent(
        account_id=row["account_id"],
        event_id=row["event_id"],
        meter=row["meter"],
        aggregation=row["aggregation"],
        event_time_ms=int(row["event_time_ms"]),
        period_start=row["period_start"],
        dimensions=row["dimensions"],
        quantity=row["quantity"],
        unique_value=row["unique_value"],
        dedup_key=row["dedup_key"],
        fingerprint=int(row["fingerprint"]),
        source_topic=row["source_topic"],
        source_partition=int(row["source_partition"]),
        source_offset=int(row["source_offset"]),
        arrived_at=arrived,
    )


def first_arrival(arrivals: Iterable[ArchivedEvent]) -> ArchivedEvent:
    """The arrival that counts: each partition's lowest offset, then the earliest of those."""
    firsts: dict[tuple[str, int], ArchivedEvent] = {}
    for a in arrivals:
        key = (a.source_topic, a.source_partition)
        if key not in firsts or a.source_offset < firsts[key].source_offset:
            firsts[key] = a
    return min(firsts.values(), key=lambda a: (a.arrived_at, a.source_topic, a.source_partition))


@dataclass(frozen=True, slots=True)
class KeyArrivals:
    """Every archived arrival of one (account, idempotency key), and the one that counts."""

    dedup_key: str
    arrivals: list[ArchivedEvent]

    @property
    def first(self) -> ArchivedEvent:
        """The first arrival (counted unless it was late)."""
        return first_arrival(self.arrivals)


def _around(rows: list[dict[str, Any]]) -> Days:
    """The arrival days within the dedup window of the rows' arrivals."""
    arrived = [r["arrived_at"] for r in rows]
    return (min(arrived).date() - WINDOW, max(arrived).date() + WINDOW)


def arrivals_of_keys(
    root: Path, account: str, keys: set[str], days: Days = None
) -> dict[str, KeyArrivals]:
    """Every arrival of the account's `keys` in the arrival days `days`, by key."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415

    if not keys:
        return {}
    wanted = pa.array(sorted(keys), type=pa.string())

    def condition(t: Any) -> Any:
        return pc.and_(
            pc.equal(t["account_id"], account), pc.is_in(t["dedup_key"], value_set=wanted)
        )

    by_key: dict[str, list[ArchivedEvent]] = defaultdict(list)
    on = ["account_id", "dedup_key"]
    for row in _read(files_of(root, days), COLUMNS, on, condition):
        by_key[row["dedup_key"]].append(_event(row))
    return {key: KeyArrivals(key, arrivals) for key, arrivals in by_key.items()}


def arrivals_of_event(
    root: Path, account: str, event_id: str, days: Days = None
) -> dict[str, KeyArrivals]:
    """The keys that the account's event `event_id` arrived under, with all their arrivals."""
    import pyarrow.compute as pc  # noqa: PLC0415

    def condition(t: Any) -> Any:
        return pc.and_(pc.equal(t["account_id"], account), pc.equal(t["event_id"], event_id))

    on = ["account_id", "event_id"]
    rows = _read(files_of(root, days), ("dedup_key", "arrived_at"), on, condition)
    if not rows:
        return {}
    return arrivals_of_keys(root, account, {r["dedup_key"] for r in rows}, _around(rows))


def arrivals_in_range(
    root: Path, account: str, *, meter: str, start_ms: int, end_ms: int, extra_keys: set[str]
) -> dict[str, KeyArrivals]:
    """All arrivals of the keys of the account's `meter` events timed in [start_ms, end_ms).

    `extra_keys` are looked up too (keys amended into the range).
    """
    import pyarrow.compute as pc  # noqa: PLC0415

    start = datetime.fromtimestamp(start_ms / 1000, UTC)
    end = datetime.fromtimestamp(end_ms / 1000, UTC)
    # An event arrives at most 5 minutes before its time and 35 days after it.
    days = (start.date() - timedelta(days=1), end.date() + WINDOW)

    def condition(t: Any) -> Any:
        time = t["event_time_ms"]
        return pc.and_(
            pc.and_(pc.equal(t["account_id"], account), pc.equal(t["meter"], meter)),
            pc.and_(pc.greater_equal(time, start_ms), pc.less(time, end_ms)),
        )

    on = ["account_id", "meter", "event_time_ms"]
    rows = _read(files_of(root, days), ("dedup_key", "arrived_at"), on, condition)
    keys = {r["dedup_key"] for r in rows} | extra_keys
    if not keys:
        return {}
    around = (days[0] - WINDOW, days[1])
    return arrivals_of_keys(root, account, keys, around)


def period_days(period_start: date) -> tuple[date, date]:
    """The arrival days that hold a period's events and what decides their first arrivals."""
    from meterstream.recalc import arrival_days  # noqa: PLC0415 - recalc imports psycopg

    return arrival_days(period_start)
