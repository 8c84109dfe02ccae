"""The alerts service (`meterstream alerts serve`): evaluator, health checks and notifier.

Three loops in one process, each on its own PostgreSQL connection, plus a listener that wakes
the notifier on NOTIFY and the Prometheus endpoint. Every loop survives PostgreSQL going away
(it logs, counts the error, waits and reconnects). All state is in PostgreSQL: the process can
be killed at any point and started again, and several may run (their writes are serialised by
advisory locks and made once by primary keys).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg

from meterstream.alerts.evaluator import Evaluator
from meterstream.alerts.health import HealthChecker
from meterstream.alerts.metrics import AlertMetrics
from meterstream.alerts.notifier import Claimed, Notifier
from meterstream.alerts.outbox import CHANNEL
from meterstream.config import Settings

log = logging.getLogger("meterstream.alerts")

#: A loop that failed waits this long before it tries again (doubling up to the maximum).
ERROR_BACKOFF_S = (0.5, 10.0)
#: The pending-deliveries gauges are refreshed at most this often.
BACKLOG_EVERY_S = 5.0


def connect(settings: Settings) -> psycopg.Connection[Any]:
    """A connection of the service's own (autocommit; named in pg_stat_activity)."""
    return psycopg.connect(
        settings.postgres.conninfo,
        autocommit=True,
        connect_timeout=5,
        application_name="meterstream-alerts",
    )


class AlertService:
    """Runs the loops in threads until `stop()`."""

    def __init__(self, settings: Settings, metrics: AlertMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or AlertMetrics()
        self.evaluator = Evaluator(settings, self.metrics)
        self.health = HealthChecker(settings, self.metrics)
        self.notifier = Notifier(settings, self.metrics)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._local = threading.local()
        self._metrics_server: Any = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, *, serve_metrics: bool = True) -> None:
        """Start the loops (and the metrics endpoint, when a port is set)."""
        alerts = self.settings.alerts
        if serve_metrics and alerts.metrics_port:
            from prometheus_client import start_http_server  # noqa: PLC0415

            self._metrics_server, _ = start_http_server(
                alerts.metrics_port, addr=alerts.metrics_host, registry=self.metrics.registry
            )
        loops: list[tuple[str, Callable[[], None]]] = [
            ("evaluator", self._evaluator_loop),
            ("health", self._health_loop),
            ("notifier", self._notifier_loop),
            ("listener", self._listener_loop),
        ]
        for name, target in loops:
            thread = threading.Thread(target=target, name=f"alerts-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every loop and wait for them (deliveries in flight finish or time out)."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=timeout_s)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()

    def wait(self) -> None:
        """Block until `stop()` is called (from a signal handler)."""
        while not self._stop.wait(1.0):
            pass

    # --- loops -------------------------------------------------------------------------------

    def _loop(
        self, name: str, interval_s: float, body: Callable[[psycopg.Connection[Any]], Any]
    ) -> None:
        """Run `body` every `interval_s` on a connection of its own, riding out failures."""
        backoff = ERROR_BACKOFF_S[0]
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = connect(self.settings)
                body(conn)
                backoff = ERROR_BACKOFF_S[0]
                self._stop.wait(interval_s)
            except Exception:  # noqa: BLE001 - keep the loop alive, say why it failed
                log.warning(
                    "%s: round failed; trying again in %.1f s", name, backoff, exc_info=True
                )
                self.metrics.errors.labels(name).inc()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                self._stop.wait(backoff)
                backoff = min(ERROR_BACKOFF_S[1], backoff * 2)
        if conn is not None:
            conn.close()

    def _evaluator_loop(self) -> None:
        self._loop(
            "evaluator", self.settings.alerts.evaluator_poll_ms / 1000, self.evaluator.run_pass
        )

    def _health_loop(self) -> None:
        self._loop("health", self.settings.alerts.health_interval_ms / 1000, self.health.run_pass)

    def _listener_loop(self) -> None:
        """LISTEN for new notifications and resends; wake the notifier on each."""

        def listen(conn: psycopg.Connection[Any]) -> None:
            conn.execute(f"LISTEN {CHANNEL}")
            while not self._stop.is_set():
                for _ in conn.notifies(timeout=1.0, stop_after=1):
                    self._wake.set()

        self._loop("listener", 0.0, listen)

    def _notifier_loop(self) -> None:
        alerts = self.settings.alerts
        slots = alerts.delivery_concurrency
        running: set[Future[None]] = set()
        last_backlog = 0.0
        with ThreadPoolExecutor(slots, thread_name_prefix="alerts-delivery") as pool:

            def round_(conn: psycopg.Connection[Any]) -> None:
                nonlocal last_backlog
                while not self._stop.is_set():
                    # Cleared before looking, so a wake-up that comes meanwhile is not lost.
                    self._wake.clear()
                    running.difference_update({f for f in running if f.done()})
                    free = slots - len(running)
                    for item in self.notifier.claim(conn, free) if free > 0 else []:
                        running.add(pool.submit(self._deliver, item))
                    if time.monotonic() - last_backlog > BACKLOG_EVERY_S:
                        self.notifier.backlog(conn)
                        last_backlog = time.monotonic()
                    # Woken by NOTIFY (new work) or by a delivery that finished (a free slot).
                    self._wake.wait(alerts.notifier_poll_ms / 1000)

            self._loop("notifier", 0.0, round_)
            for future in running:
                with contextlib.suppress(Exception):
                    future.result(timeout=alerts.delivery_timeout_ms / 1000 + 5)

    def _deliver(self, item: Claimed) -> None:
        """Send one delivery and record it on a connection of this worker thread."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        try:
            outcome = self.notifier.send(item)
            if conn is None or conn.closed:
                conn = self._local.conn = connect(self.settings)
            self.notifier.record(conn, item, outcome)
        except Exception:  # noqa: BLE001 - the lease runs out and it is tried again
            log.warning("delivery of %s failed to record", item.notification_id, exc_info=True)
            self.metrics.errors.labels("delivery").inc()
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            self._local.conn = None
        finally:
            self._wake.set()


def run(settings: Settings) -> None:
    """Run the service in the foreground until SIGINT or SIGTERM."""
    import signal  # noqa: PLC0415

    service = AlertService(settings)

    def stop(_signum: int, _frame: object) -> None:
        service._stop.set()  # noqa: SLF001 - the handler only flags; stop() joins below

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    service.start()
    log.info(
        "alerts service running (metrics on %s:%s)",
        settings.alerts.metrics_host,
        settings.alerts.metrics_port,
    )
    service.wait()
    service.stop()
