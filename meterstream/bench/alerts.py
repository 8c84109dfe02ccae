"""Alerts in the benchmark: threshold -> webhook latency, with the alerts service as deployed.

An organisation owns accounts that have no usage yet; a rule fires at the first unit of a
meter on any of them, and an endpoint points at a receiver in this process that checks every
signature. Each probe of the live phase is the first event of such an account, so it crosses
the threshold: its latency is from its arrival in Kafka (the broker's timestamp, which the
notification carries as `last_arrived_at`) to the verified webhook's arrival. The service runs
as its own process (`meterstream alerts serve`) with the default settings, loopback URLs
allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from meterstream.alerts.model import UsageThresholdRule, parse_rule, usage_target
from meterstream.alerts.receiver import WebhookReceiver
from meterstream.alerts.signing import new_secret
from meterstream.alerts.store import AlertStore
from meterstream.api import admin
from meterstream.bench.freshness import percentile
from meterstream.config import Settings
from meterstream.meters.registry import load_registry

THRESHOLD_REACHED = "io.meterstream.usage.threshold_reached"


@dataclass(frozen=True, slots=True)
class AlertLatency:
    """Threshold -> webhook latency over a window at a fixed input rate."""

    rate: float
    seconds: float
    probes_sent: int
    notifications: int
    p50_s: float | None
    p99_s: float | None
    max_s: float | None
    #: Probe freshness (Kafka -> PostgreSQL) in the same window, the service running.
    fresh_p50_s: float | None
    fresh_p99_s: float | None
    #: The service's own part: from the probe's row visible in PostgreSQL to the webhook.
    service_p50_s: float | None = None
    service_p99_s: float | None = None
    series: list[tuple[float, float]] = field(default_factory=list)


async def _create(
    settings: Settings, org_id: str, rules: list[dict[str, Any]], url: str
) -> list[str]:
    """The organisation's rules and its endpoint, through the API's own store; the secret."""
    from psycopg.rows import dict_row  # noqa: PLC0415
    from psycopg_pool import AsyncConnectionPool  # noqa: PLC0415

    pool = AsyncConnectionPool(
        settings.postgres.conninfo,
        min_size=1,
        max_size=2,
        open=False,
        kwargs={"autocommit": True, "row_factory": dict_row},
    )
    await pool.open()
    try:
        store = AlertStore(pool)
        registry = load_registry(settings.schemas_dir)
        today = (datetime.now(UTC) - timedelta(days=1)).date()
        for raw in rules:
            rule = parse_rule(raw)
            target = (
                usage_target(rule, registry, today)
                if isinstance(rule, UsageThresholdRule)
                else None
            )
            await store.create_rule(org_id, rule.model_dump(mode="json"), target)
        secret = new_secret()
        await store.create_endpoint(
            org_id, url=url, description="bench", event_types=[], enabled=True, secret=secret
        )
        return [secret]
    finally:
        await pool.close()


@dataclass(slots=True)
class AlertsHarness:
    """An organisation with rules, a receiver, and the alerts service as a process."""

    settings: Settings
    org_id: str
    log: Path
    receiver: WebhookReceiver = field(default_factory=WebhookReceiver)
    process: subprocess.Popen[bytes] | None = None

    def setup(self, accounts: Iterable[str], rules: list[dict[str, Any]]) -> None:
        """Create the organisation, give it `accounts`, its rules and an endpoint."""
        admin.create_org(self.settings, self.org_id)
        self.add_accounts(accounts)
        self.receiver.start()
        self.receiver.secrets += asyncio.run(
            _create(self.settings, self.org_id, rules, self.receiver.url)
        )

    def add_accounts(self, accounts: Iterable[str]) -> None:
        """Give the organisation more accounts."""
        admin.add_accounts(self.settings, self.org_id, list(accounts))

    def replace_rules(self, rules: list[dict[str, Any]]) -> None:
        """Delete the rules (and what they fired) and create them again: a fresh start."""
        with psycopg.connect(self.settings.postgres.conninfo, autocommit=True) as conn:
            conn.execute("DELETE FROM alert_rules WHERE org_id = %s", (self.org_id,))
            conn.execute("DELETE FROM alert_endpoints WHERE org_id = %s", (self.org_id,))
        self.receiver.secrets[:] = asyncio.run(
            _create(self.settings, self.org_id, rules, self.receiver.url)
        )

    def start_service(self, **alerts_env: str) -> None:
        """Start `meterstream alerts serve` (defaults, loopback URLs allowed, no metrics port)."""
        env = {
            **os.environ,
            "METERSTREAM_ALERTS_ALLOW_PRIVATE_URLS": "true",
            "METERSTREAM_ALERTS_METRICS_PORT": "0",
            **{f"METERSTREAM_ALERTS_{k.upper()}": v for k, v in alerts_env.items()},
        }
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "meterstream", "alerts", "serve"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def cpu_seconds(self) -> float | None:
        """CPU time the service process has used so far (user + system), from /proc."""
        if self.process is None:
            return None
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop_service(self) -> None:
        """Stop the service (SIGTERM, then SIGKILL after 30 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def close(self) -> None:
        """Stop everything and delete the organisation with all it owns."""
        self.stop_service()
        self.receiver.stop()
        with psycopg.connect(self.settings.postgres.conninfo, autocommit=True) as conn:
            for table in ("alert_rules", "alert_endpoints", "alert_notifications", "accounts"):
                conn.execute(f"DELETE FROM {table} WHERE org_id = %s", (self.org_id,))  # noqa: S608
            conn.execute("DELETE FROM organisations WHERE org_id = %s", (self.org_id,))


def latencies(
    receiver: WebhookReceiver, sent: list[tuple[str, float]], start: float, end: float
) -> list[tuple[float, float]]:
    """(sent at, latency) of the first notification of each probe sent within [start, end)."""
    window = {account for account, at in sent if start <= at < end}
    first: dict[str, float] = {}
    for got in receiver.events(THRESHOLD_REACHED):
        data = got.event["data"]
        account = data["account_id"]
        if account in window and account not in first and data.get("last_arrived_at"):
            arrived = datetime.fromisoformat(data["last_arrived_at"]).timestamp()
            first[account] = got.received_at - arrived
    sent_at = dict(sent)
    return sorted((sent_at[a] - start, latency) for a, latency in first.items())


def after_visible(receiver: WebhookReceiver, visible_at: dict[str, float]) -> list[float]:
    """Per probe: seconds from its row becoming visible in PostgreSQL to its webhook."""
    first: dict[str, float] = {}
    for got in receiver.events(THRESHOLD_REACHED):
        account = got.event["data"]["account_id"]
        if account in visible_at and account not in first:
            first[account] = got.received_at - visible_at[account]
    return list(first.values())


def summarize(
    points: list[tuple[float, float]],
    *,
    rate: float,
    seconds: float,
    probes_sent: int,
    fresh: list[float],
    service: list[float],
) -> AlertLatency:
    """Percentiles of the threshold -> webhook latencies."""
    values = [latency for _, latency in points]
    return AlertLatency(
        rate=rate,
        seconds=seconds,
        probes_sent=probes_sent,
        notifications=len(values),
        p50_s=percentile(values, 50),
        p99_s=percentile(values, 99),
        max_s=max(values, default=None),
        fresh_p50_s=percentile(fresh, 50),
        fresh_p99_s=percentile(fresh, 99),
        service_p50_s=percentile(service, 50),
        service_p99_s=percentile(service, 99),
        series=points,
    )


def wait_quiet(receiver: WebhookReceiver, seconds: float = 3.0, limit_s: float = 30.0) -> None:
    """Wait until no notification has arrived for `seconds` (at most `limit_s`)."""
    deadline = time.monotonic() + limit_s
    count, since = len(receiver.received), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < seconds:
        time.sleep(0.2)
        if len(receiver.received) != count:
            count, since = len(receiver.received), time.monotonic()
