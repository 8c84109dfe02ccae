"""Prometheus metrics of one API instance (`GET /metrics`) and last-minute event rates.

Each app gets its own registry, so several apps in one process (tests) never collide.
Labels never carry account or organisation ids: the series count stays fixed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class MinuteWindow:
    """Counts of the last 60 seconds, in one-second slots.

    >>> w = MinuteWindow(clock=lambda: 100.0)
    >>> w.add(3); w.add(2); w.total()
    5
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._slots: deque[tuple[int, int]] = deque()

    def add(self, n: int) -> None:
        """Count `n` now."""
        second = int(self._clock())
        if self._slots and self._slots[-1][0] == second:
            self._slots[-1] = (second, self._slots[-1][1] + n)
        else:
            self._slots.append((second, n))
        self._trim(second)

    def total(self) -> int:
        """The count over the last minute."""
        self._trim(int(self._clock()))
        return sum(n for _, n in self._slots)

    def _trim(self, second: int) -> None:
        while self._slots and self._slots[0][0] <= second - 60:
            self._slots.popleft()


class ApiMetrics:
    """The API's counters and histograms, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "meterstream_api_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "meterstream_api_request_seconds",
            "Time to answer a request, by route template.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
            registry=self.registry,
        )
        self.events = Counter(
            "meterstream_api_events",
            "Events received, by outcome (accepted/rejected/failed) and reason code.",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "meterstream_api_rate_limited",
            "Requests refused with 429, by the bucket that was empty (token/account).",
            ["bucket"],
            registry=self.registry,
        )
        self.kafka_failures = Counter(
            "meterstream_api_kafka_failures",
            "Requests answered 503 because Kafka did not acknowledge every event.",
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "meterstream_api_upload_bytes",
            "Bytes of uploaded files received.",
            registry=self.registry,
        )
        self.uploads_active = Gauge(
            "meterstream_api_uploads_active",
            "Uploads being received right now.",
            registry=self.registry,
        )
        self.accepted_window = MinuteWindow()
        self.rejected_window = MinuteWindow()

    def watch_postgres(self, up: Callable[[], bool], unreconciled: Callable[[], int]) -> None:
        """Export whether PostgreSQL answers, and the quota use not yet added to it."""
        Gauge(
            "meterstream_api_postgres_up",
            "1 while PostgreSQL answers; 0 while ingestion runs from the last good state.",
            registry=self.registry,
        ).set_function(lambda: float(up()))
        Gauge(
            "meterstream_api_quota_unreconciled_events",
            "Events granted from daily quotas during a PostgreSQL outage, not yet added to it.",
            registry=self.registry,
        ).set_function(lambda: float(unreconciled()))

    def count_events(self, accepted: int, rejected: dict[str, int], failed: int = 0) -> None:
        """Record a request's or an upload segment's outcome."""
        if accepted:
            self.events.labels("accepted", "").inc(accepted)
            self.accepted_window.add(accepted)
        for reason, n in rejected.items():
            self.events.labels("rejected", reason).inc(n)
        if rejected:
            self.rejected_window.add(sum(rejected.values()))
        if failed:
            self.events.labels("failed", "").inc(failed)
