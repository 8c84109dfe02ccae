"""Fixtures for alerts: fast service settings, the service in-process, the API, a receiver."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from meterstream.alerts.receiver import WebhookReceiver
from meterstream.alerts.service import AlertService
from meterstream.config import Settings
from tests.api.conftest import RunningApi, Tenant, free_port, make_tenant, start_api  # noqa: F401

#: Loops fast, retries fast (0.2 s doubling to 1 s), loopback allowed: tests take seconds.
FAST = {
    "evaluator_poll_ms": 100,
    "rescan_interval_ms": 60_000,
    "health_interval_ms": 300,
    "notifier_poll_ms": 200,
    "delivery_timeout_ms": 2_000,
    "retry_base_ms": 200,
    "retry_multiplier": 2,
    "retry_max_delay_ms": 1_000,
    "max_attempts": 200,
    "disable_after_ms": 3_600_000,
    "disable_after_failures": 10_000,
    "allow_private_urls": True,
    "metrics_port": 0,
}


def fast_settings(stack: Settings, **changes: Any) -> Settings:
    """The stack's settings with the alerts service made fast (and `changes`)."""
    return dataclasses.replace(stack, alerts=dataclasses.replace(stack.alerts, **(FAST | changes)))


@pytest.fixture
def alerts_settings(stack: Settings) -> Settings:
    return fast_settings(stack)


@pytest.fixture
def start_service() -> Iterator[Callable[..., AlertService]]:
    """Start alert services in this process; each is stopped at the end of the test."""
    started: list[AlertService] = []

    def start(settings: Settings) -> AlertService:
        service = AlertService(settings)
        service.start(serve_metrics=False)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A signature-checking receiver on loopback; give it the endpoint's secret."""
    running = WebhookReceiver().start()
    yield running
    running.stop()


@pytest.fixture
def serve_alerts_api(stack: Settings) -> Iterator[Callable[..., RunningApi]]:
    """Start the real API app under uvicorn with fast alerts settings (and `changes`)."""
    started: list[RunningApi] = []

    def start(**changes: Any) -> RunningApi:
        port = free_port()
        base = fast_settings(stack, **changes)
        running = start_api(
            dataclasses.replace(
                base, api=dataclasses.replace(base.api, port=port, token_cache_seconds=0)
            )
        )
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def alerts_api(serve_alerts_api: Callable[..., RunningApi]) -> RunningApi:
    """The API with fast alerts settings: loopback endpoint URLs allowed, no token cache."""
    return serve_alerts_api()


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant], stack: Settings) -> Iterator[Callable[..., Tenant]]:  # noqa: F811
    """Organisations for one test; their alert rules and endpoints are deleted afterwards, so
    services of later tests do not keep checking them."""
    made: list[Tenant] = []

    def make(n_accounts: int = 3, *, operator: bool = False) -> Tenant:
        created = make_tenant(n_accounts, operator=operator)
        made.append(created)
        return created

    yield make
    with psycopg.connect(stack.postgres.conninfo, autocommit=True) as conn:
        for org in made:
            conn.execute("DELETE FROM alert_rules WHERE org_id = %s", (org.org_id,))
            conn.execute("DELETE FROM alert_endpoints WHERE org_id = %s", (org.org_id,))


def write_figure(
    settings: Settings,
    account: str,
    meter: str,
    period: date,
    quantity: Decimal | int | str,
    *,
    dimensions: str = "",
    arrived_at: datetime | None = None,
) -> None:
    """Upsert one absolute figure into `usage_aggregates`, as the job's sink does."""
    with psycopg.connect(settings.postgres.conninfo, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO usage_aggregates (account_id, meter, period_start, dimensions,"
            " aggregation, quantity, event_count, first_event_at, last_event_at, last_arrived_at)"
            " VALUES (%s, %s, %s, %s, 'SUM', %s, 1, now(), now(), coalesce(%s, now()))"
            " ON CONFLICT (account_id, meter, period_start, dimensions) DO UPDATE SET"
            " quantity = excluded.quantity, event_count = usage_aggregates.event_count + 1,"
            " last_arrived_at = excluded.last_arrived_at",
            (account, meter, period, dimensions, Decimal(quantity), arrived_at),
        )


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
