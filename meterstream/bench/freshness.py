"""Freshness: how long after an event reaches Kafka its effect is visible in PostgreSQL.

A paced producer sends the workload at a fixed rate and, every 50 ms, a probe: one event for an
account of its own, so the probe's row appears in `usage_aggregates` exactly when that event is
written. The topic stamps records with the broker's append time (`LogAppendTime`), which the job
stores as `last_arrived_at`; a poller notes when each probe row first becomes visible.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Producer

from meterstream.config import Settings
from meterstream.testing import Record, cloud_event

PROBE_INTERVAL_S = 0.05
POLL_INTERVAL_S = 0.05
TICK_S = 0.01


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe event, as observed: when it arrived in Kafka and when it became visible."""

    account: str
    arrived_at: float
    committed_at: float
    visible_at: float

    @property
    def freshness_s(self) -> float:
        """Arrival in Kafka -> first seen by a reader of PostgreSQL."""
        return self.visible_at - self.arrived_at


def probe_record(account: str, meter: str, data: dict[str, Any], moment: datetime) -> Record:
    """A probe: one event for an account nobody else uses."""
    event = cloud_event(f"probe-{uuid.uuid4()}", account, meter, moment, data)
    return Record(account.encode(), json.dumps(event, separators=(",", ":")).encode())


@dataclass(slots=True)
class PacedProducer:
    """Produce `records` (made as they are sent) at `rate` per second, plus a probe every 50 ms."""

    settings: Settings
    topic: str
    records: Iterator[Record]
    rate: float
    probe_prefix: str
    probe_meter: str
    probe_data: dict[str, Any]
    sent: int = 0
    probes_sent: int = 0
    #: (account, wall-clock time) of every probe, in the order sent.
    probe_log: list[tuple[str, float]] = field(default_factory=list)
    rate_samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start producing in a background thread."""
        self._thread = threading.Thread(target=self._run, name="paced-producer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop producing and flush."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self.settings.kafka.bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
            }
        )
        start = time.monotonic()
        next_probe = start
        while not self._stop.is_set():
            now = time.monotonic()
            due = int((now - start) * self.rate)
            while self.sent < due:
                record = next(self.records, None)
                if record is None:
                    break
                with contextlib.suppress(BufferError):
                    producer.produce(self.topic, record.value, key=record.key)
                self.sent += 1
            if now >= next_probe:
                account = f"{self.probe_prefix}-{self.probes_sent:06d}"
                probe = probe_record(account, self.probe_meter, self.probe_data, datetime.now(UTC))
                producer.produce(self.topic, probe.value, key=probe.key)
                self.probe_log.append((account, time.time()))
                self.probes_sent += 1
                next_probe += PROBE_INTERVAL_S
            producer.poll(0)
            self.rate_samples.append((time.time(), self.sent))
            time.sleep(TICK_S)
        producer.flush(30)


@dataclass(slots=True)
class ProbePoller:
    """Poll PostgreSQL for probe rows; note when each first becomes visible."""

    settings: Settings
    probe_prefix: str
    seen: dict[str, Probe] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start polling in a background thread."""
        self._thread = threading.Thread(target=self._run, name="probe-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        query = (
            "SELECT account_id, last_arrived_at, updated_at FROM usage_aggregates"
            " WHERE account_id LIKE %s AND updated_at > %s"
        )
        since = datetime.now(UTC)
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.settings.postgres.conninfo, autocommit=True) as conn:
                    while not self._stop.is_set():
                        rows = conn.execute(query, (self.probe_prefix + "-%", since)).fetchall()
                        now = time.time()
                        for account, arrived, updated in rows:
                            if account not in self.seen:
                                self.seen[account] = Probe(
                                    account, arrived.timestamp(), updated.timestamp(), now
                                )
                        time.sleep(POLL_INTERVAL_S)
            except psycopg.Error:
                time.sleep(0.5)  # PostgreSQL busy or restarting: keep trying

    def between(self, start: float, end: float) -> list[Probe]:
        """Probes that arrived in Kafka within [start, end)."""
        return sorted(
            (p for p in self.seen.values() if start <= p.arrived_at < end),
            key=lambda p: p.arrived_at,
        )


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by the inclusive method; None for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    """
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]


def first_fresh_at(probes: list[Probe], limit_s: float) -> float | None:
    """When the first of `probes` visible within `limit_s` of its arrival became visible."""
    return min((p.visible_at for p in probes if p.freshness_s <= limit_s), default=None)


def live_again_at(
    sent: list[tuple[str, float]],
    seen: dict[str, Probe],
    *,
    since: float,
    limit_s: float,
    settle_s: float,
    now: float,
) -> float | None:
    """When the pipeline was live again for good after `since`; None if not yet known.

    A probe sent after `since` is late when it became visible more than `limit_s` after it
    reached Kafka, or is still not visible `limit_s` after it was sent. The answer is the
    moment the first probe after the last late one became visible, once the probes of the
    `settle_s` after it were all on time: a lagging partition keeps it from counting early.

    >>> seen = {"a": Probe("a", 10.0, 10.0, 13.0), "b": Probe("b", 11.0, 11.0, 12.5)}
    >>> live_again_at([("a", 10.0), ("b", 11.0)], seen, since=9.0, limit_s=2.0,
    ...               settle_s=5.0, now=16.5)
    12.5
    >>> live_again_at([("a", 10.0), ("b", 11.0)], seen, since=9.0, limit_s=2.0,
    ...               settle_s=5.0, now=15.0) is None
    True
    """
    after = [(account, at) for account, at in sent if at >= since]
    late = -1
    for index, (account, at) in enumerate(after):
        probe = seen.get(account)
        if (probe.freshness_s if probe else now - at) > limit_s:
            late = index
    if late + 1 >= len(after):
        return None
    account, at = after[late + 1]
    first = seen.get(account)
    if first is None or now - at < settle_s:
        return None
    return first.visible_at


@dataclass(frozen=True, slots=True)
class Freshness:
    """Probe freshness over a steady window at a fixed input rate."""

    rate: float
    seconds: float
    probes_sent: int
    probes_seen: int
    p50_s: float | None
    p99_s: float | None
    max_s: float | None
    commit_p50_s: float | None
    commit_p99_s: float | None
    achieved_rate: float
    series: list[tuple[float, float]]


def summarize(
    probes: list[Probe], *, rate: float, seconds: float, sent: int, achieved_rate: float, t0: float
) -> Freshness:
    """Percentiles of probe freshness (visible in PostgreSQL) and of the commit time."""
    fresh = [p.freshness_s for p in probes]
    commit = [p.committed_at - p.arrived_at for p in probes]
    return Freshness(
        rate=rate,
        seconds=seconds,
        probes_sent=sent,
        probes_seen=len(probes),
        p50_s=percentile(fresh, 50),
        p99_s=percentile(fresh, 99),
        max_s=max(fresh) if fresh else None,
        commit_p50_s=percentile(commit, 50),
        commit_p99_s=percentile(commit, 99),
        achieved_rate=achieved_rate,
        series=[(p.arrived_at - t0, p.freshness_s) for p in probes],
    )
