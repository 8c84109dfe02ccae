"""Usage thresholds on real PostgreSQL: the service evaluates figures written as the job writes
them, and a real receiver checks every signature. Once per (rule, account, period, threshold)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from meterstream.alerts.receiver import WebhookReceiver
from meterstream.alerts.service import AlertService
from meterstream.config import Settings
from meterstream.recalc import STAGING, RecalcScope, apply_recalculation
from tests.alerts.conftest import RunningApi, Tenant, write_figure

pytestmark = pytest.mark.integration

THRESHOLD = "io.meterstream.usage.threshold_reached"
WAIT_S = 20


def this_month() -> date:
    return datetime.now(UTC).date().replace(day=1)


def last_month() -> date:
    return (this_month() - timedelta(days=1)).replace(day=1)


def subscribe(api: RunningApi, token: str, receiver: WebhookReceiver, **extra: object) -> str:
    """An endpoint pointing at `receiver`, whose secret the receiver then checks."""
    with api.client(token) as http:
        made = http.post("/v1/alerts/endpoints", json={"url": receiver.url, **extra})
    assert made.status_code == 201, made.text
    receiver.secrets.append(made.json()["secret"])
    return str(made.json()["endpoint_id"])


def create_rule(api: RunningApi, token: str, rule: dict[str, object]) -> str:
    with api.client(token) as http:
        made = http.post("/v1/alerts/rules", json=rule)
    assert made.status_code == 201, made.text
    return str(made.json()["rule_id"])


def crossings(receiver: WebhookReceiver) -> Counter[tuple[str, str, str, str]]:
    """(rule, account, period, threshold) of every threshold notification received, counted
    by distinct webhook-id (a retry of one notification counts once)."""
    by_id = {r.webhook_id: r.event["data"] for r in receiver.events(THRESHOLD)}
    return Counter(
        (d["rule_id"], d["account_id"], d["period_start"], d["threshold"]) for d in by_id.values()
    )


def firings(settings: Settings, rule_ids: list[str]) -> set[tuple[str, str, str, str]]:
    with psycopg.connect(settings.postgres.conninfo) as conn:
        rows = conn.execute(
            "SELECT rule_id, account_id, period_start, threshold FROM alert_firings"
            " WHERE rule_id = ANY(%s)",
            ([uuid.UUID(r) for r in rule_ids],),
        ).fetchall()
    return {(str(r), a, p.isoformat(), f"{t.normalize():f}") for r, a, p, t in rows}


def test_thresholds_fire_once_each_across_accounts_periods_dips_and_restarts(
    alerts_api: RunningApi,
    alerts_settings: Settings,
    tenant: Callable[..., Tenant],
    receiver: WebhookReceiver,
    start_service: Callable[[Settings], AlertService],
) -> None:
    org = tenant(3)
    a0, a1, a2 = org.accounts
    now, before = this_month(), last_month()
    token = org.tokens["admin"]
    # Usage counted before the rule exists is seen when it is created.
    write_figure(alerts_settings, a2, "api_calls", now, 130)
    subscribe(alerts_api, token, receiver)
    every = create_rule(
        alerts_api,
        token,
        {
            "kind": "usage_threshold",
            "name": "calls",
            "meter": "api_calls",
            "thresholds": [10, 20],
            "recurring_every": 50,
            "from_period": before.strftime("%Y-%m"),
        },
    )
    large = create_rule(
        alerts_api,
        token,
        {
            "kind": "usage_threshold",
            "name": "large tokens",
            "account": a1,
            "meter": "llm_tokens",
            "segment": {"model": "large"},
            "thresholds": ["100.5"],
            "from_period": before.strftime("%Y-%m"),
        },
    )
    service = start_service(alerts_settings)
    for quantity in (5, 12, 25):
        write_figure(alerts_settings, a0, "api_calls", now, quantity)
    write_figure(alerts_settings, a1, "api_calls", before, 15)
    write_figure(alerts_settings, a1, "llm_tokens", now, 99, dimensions='{"model":"large"}')
    write_figure(alerts_settings, a1, "llm_tokens", now, 500, dimensions='{"model":"small"}')
    expected = {
        (every, a2, now.isoformat(), "10"),
        (every, a2, now.isoformat(), "20"),
        (every, a2, now.isoformat(), "120"),  # 70 and 120 crossed at once: the highest fires
        (every, a0, now.isoformat(), "10"),
        (every, a0, now.isoformat(), "20"),
        (every, a1, before.isoformat(), "10"),
    }
    assert receiver.wait_for(lambda r: set(crossings(r)) >= expected, WAIT_S), crossings(receiver)

    # The notifier and the evaluator stop and start again; a replay takes a figure back
    # (as a checkpoint restore does for a moment) and up again: nothing fires twice.
    service.stop()
    write_figure(alerts_settings, a0, "api_calls", now, 8)
    start_service(alerts_settings)
    write_figure(alerts_settings, a0, "api_calls", now, 30)
    write_figure(alerts_settings, a1, "llm_tokens", now, "100.5", dimensions='{"model":"large"}')
    expected.add((large, a1, now.isoformat(), "100.5"))
    assert receiver.wait_for(lambda r: set(crossings(r)) >= expected, WAIT_S), crossings(receiver)
    receiver.wait_for(lambda _r: False, 2)  # anything more would arrive now

    got = crossings(receiver)
    assert set(got) == expected
    assert set(got.values()) == {1}
    assert firings(alerts_settings, [every, large]) == expected
    jump = next(
        r.event["data"] for r in receiver.events(THRESHOLD) if r.event["data"]["threshold"] == "120"
    )
    assert jump["recurring"] is True and jump["passed_thresholds"] == 1
    assert jump["quantity"] == "130" and jump["segment"] is None
    first = receiver.events(THRESHOLD)[0].event
    assert first["specversion"] == "1.0" and first["source"] == "/meterstream/alerts"
    assert first["id"] == receiver.events(THRESHOLD)[0].webhook_id


def recalculate(settings: Settings, account: str, meter: str, period: date, quantity: int) -> None:
    """Replace one account's figure of a period through the recalculation's own apply step."""
    with psycopg.connect(
        settings.postgres.conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor
    ) as conn:
        conn.execute(
            f"INSERT INTO {STAGING} SELECT account_id, meter, period_start, dimensions,"  # noqa: S608
            " aggregation, %s, event_count, first_event_at, last_event_at, last_arrived_at"
            " FROM usage_aggregates WHERE account_id = %s AND meter = %s AND period_start = %s",
            (quantity, account, meter, period),
        )
        apply_recalculation(
            conn,
            RecalcScope(period, account),
            run_id=uuid.uuid4(),
            reason="test",
            archive_dir=settings.stack_dir / "archive",
            started_at=datetime.now(UTC),
        )


def test_recalculation_lowering_a_fired_threshold_is_recorded_and_never_refires(
    alerts_api: RunningApi,
    alerts_settings: Settings,
    tenant: Callable[..., Tenant],
    receiver: WebhookReceiver,
    start_service: Callable[[Settings], AlertService],
) -> None:
    org = tenant(1)
    (account,) = org.accounts
    now = this_month()
    subscribe(alerts_api, org.tokens["admin"], receiver)
    rule = create_rule(
        alerts_api,
        org.tokens["admin"],
        {"kind": "usage_threshold", "name": "x", "meter": "api_calls", "thresholds": [10, 20]},
    )
    start_service(alerts_settings)
    write_figure(alerts_settings, account, "api_calls", now, 25)
    assert receiver.wait_for(lambda r: len(crossings(r)) == 2, WAIT_S)

    recalculate(alerts_settings, account, "api_calls", now, 15)

    def lowered() -> list[tuple[Decimal, Decimal | None]]:
        with psycopg.connect(alerts_settings.postgres.conninfo) as conn:
            return conn.execute(
                "SELECT threshold, lowered_quantity FROM alert_firings"
                " WHERE rule_id = %s AND lowered_at IS NOT NULL",
                (uuid.UUID(rule),),
            ).fetchall()

    receiver.wait_for(lambda _r: bool(lowered()), WAIT_S)
    assert lowered() == [(Decimal(20), Decimal(15))]
    with alerts_api.client(org.tokens["admin"]) as http:
        shown = http.get(f"/v1/alerts/rules/{rule}/firings").json()["firings"]
    assert {f["threshold"]: f["lowered_quantity"] for f in shown} == {"20": "15", "10": None}

    # Up again, by the stream and by another recalculation: 20 does not fire a second time.
    write_figure(alerts_settings, account, "api_calls", now, 22)
    recalculate(alerts_settings, account, "api_calls", now, 26)
    receiver.wait_for(lambda _r: False, 2)
    assert sorted(crossings(receiver).values()) == [1, 1]
    assert firings(alerts_settings, [rule]) == {
        (rule, account, now.isoformat(), "10"),
        (rule, account, now.isoformat(), "20"),
    }


def test_rules_are_tenant_scoped_in_evaluation(
    alerts_api: RunningApi,
    alerts_settings: Settings,
    tenant: Callable[..., Tenant],
    receiver: WebhookReceiver,
    start_service: Callable[[Settings], AlertService],
) -> None:
    a, b = tenant(1), tenant(1)
    subscribe(alerts_api, a.tokens["admin"], receiver)
    rule = create_rule(
        alerts_api,
        a.tokens["admin"],
        {"kind": "usage_threshold", "name": "all", "meter": "api_calls", "thresholds": [1]},
    )
    start_service(alerts_settings)
    # B's figure changes first: any pass that sees A's change has seen B's.
    write_figure(alerts_settings, b.accounts[0], "api_calls", this_month(), 100)
    write_figure(alerts_settings, a.accounts[0], "api_calls", this_month(), 100)

    assert receiver.wait_for(lambda r: len(crossings(r)) >= 1, WAIT_S)
    receiver.wait_for(lambda _r: False, 1)
    assert {k[1] for k in firings(alerts_settings, [rule])} == {a.accounts[0]}
    assert [k[1] for k in crossings(receiver)] == [a.accounts[0]]
