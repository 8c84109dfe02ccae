"""Webhook delivery on the real stack: a receiver that goes down and comes back, retries that
survive a notifier restart, an endpoint disabled after sustained failure, secret rotation,
resend, the delivery log."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable

import psycopg
import pytest

from meterstream.alerts.receiver import WebhookReceiver
from meterstream.alerts.service import AlertService
from meterstream.config import Settings
from tests.alerts.conftest import RunningApi, Tenant, fast_settings, write_figure
from tests.alerts.test_thresholds import (
    THRESHOLD,
    WAIT_S,
    create_rule,
    subscribe,
    this_month,
)

pytestmark = pytest.mark.integration

DISABLED = "io.meterstream.endpoint.disabled"


def notifications(settings: Settings, org_id: str, type_: str = THRESHOLD) -> dict[str, str]:
    """notification id -> body of the organisation's notifications of one type."""
    with psycopg.connect(settings.postgres.conninfo) as conn:
        rows = conn.execute(
            "SELECT notification_id, body FROM alert_notifications WHERE org_id = %s AND type = %s",
            (org_id, type_),
        ).fetchall()
    return {str(n): b for n, b in rows}


def attempts(settings: Settings, org_id: str) -> list[tuple[str, int, str, int | None]]:
    with psycopg.connect(settings.postgres.conninfo) as conn:
        rows = conn.execute(
            "SELECT notification_id, attempt, outcome, response_code FROM alert_delivery_attempts"
            " WHERE org_id = %s ORDER BY attempt_id",
            (org_id,),
        ).fetchall()
    return [(str(n), a, o, c) for n, a, o, c in rows]


def usage_rule(thresholds: list[int]) -> dict[str, object]:
    return {"kind": "usage_threshold", "name": "u", "meter": "api_calls", "thresholds": thresholds}


def test_receiver_down_then_up_gets_every_notification_duplicates_only_by_id(
    alerts_api: RunningApi,
    alerts_settings: Settings,
    tenant: Callable[..., Tenant],
    receiver: WebhookReceiver,
    start_service: Callable[[Settings], AlertService],
) -> None:
    org = tenant(4)
    subscribe(alerts_api, org.tokens["admin"], receiver)
    create_rule(alerts_api, org.tokens["admin"], usage_rule([1, 2, 3]))
    start_service(alerts_settings)
    receiver.stop()
    for account in org.accounts:
        write_figure(alerts_settings, account, "api_calls", this_month(), 5)
    want = 3 * len(org.accounts)

    def failed_attempts() -> int:
        return sum(1 for a in attempts(alerts_settings, org.org_id) if a[2] == "failed")

    assert receiver.wait_for(lambda _r: failed_attempts() >= 2 * want, WAIT_S), failed_attempts()
    receiver.start()
    assert receiver.wait_for(lambda r: len({x.webhook_id for x in r.events()}) == want, WAIT_S)

    decided = notifications(alerts_settings, org.org_id)
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for got in receiver.events():
        bodies[got.webhook_id].add(got.body)
    assert len(decided) == want
    assert set(bodies) == set(decided)  # none lost, none invented
    assert all(len(b) == 1 for b in bodies.values())  # a repeat is the same message
    assert all(b == {decided[i].encode()} for i, b in bodies.items())
    log = attempts(alerts_settings, org.org_id)
    assert {o for _, _, o, _ in log} == {"failed", "delivered"}
    assert all(code is None for _, _, o, code in log if o == "failed")  # connection refused
    with alerts_api.client(org.tokens["admin"]) as http:
        page = http.get("/v1/alerts/deliveries", params={"outcome": "delivered"}).json()
        states = [
            d["state"]
            for n in http.get("/v1/alerts/notifications").json()["items"]
            for d in n["deliveries"]
        ]
    assert len(page["items"]) == want
    assert states == ["delivered"] * want


def test_retry_schedule_is_in_postgres_and_survives_a_notifier_restart(
    alerts_api: RunningApi,
    stack: Settings,
    tenant: Callable[..., Tenant],
    receiver: WebhookReceiver,
    start_service: Callable[[Settings], AlertService],
) -> None:
    # Slow retries (a 4 s wait after the first failure): the restart happens inside it.
    slow = fast_settings(stack, retry_base_ms=4_000, retry_max_delay_ms=4_000)
    org = tenant(1)
    subscribe(alerts_api, org.tokens["admin"], receiver)
    create_rule(alerts_api, org.tokens["admin"], usage_rule([1]))
    receiver.fail_next(1, status=503)
    first = start_service(slow)
    write_figure(slow, org.accounts[0], "api_calls", this_month(), 1)
    assert receiver.wait_for(lambda _r: len(attempts(slow, org.org_id)) == 1, WAIT_S)
    first.stop()
    with psycopg.connect(slow.postgres.conninfo) as conn:
        state, tries, wait = conn.execute(
            "SELECT state, attempts, extract(epoch FROM next_attempt_at - now())"
            " FROM alert_deliveries WHERE org_id = %s",
            (org.org_id,),
        ).fetchone()  # type: ignore[misc]
    assert (state, tries) == ("pending", 1)
    assert 0 < wait <= 4

    start_service(slow)
    assert receiver.wait_for(lambda r: len(r.events()) == 1, WAIT_S)
    log = attempts(slow, org.org_id)
    assert [(a, o, c) for _, a, o, c in log] == [(1, "failed", 503), (2, "delivered", 204)]


def test_endpoint_failing_for_long_is_disabled_and_the_organisation_told(
    alerts_api: RunningApi,
    stack: Settings,
    tenant: Callable[..., Tenant],
    receiver: WebhookReceiver,
    start_service: Callable[[Settings], AlertService],
) -> None:
    settings = fast_settings(stack, disable_after_ms=1_500, disable_after_failures=3)
    org = tenant(1)
    with alerts_api.client(org.tokens["admin"]) as http:
        dead = http.post("/v1/alerts/endpoints", json={"url": "http://127.0.0.1:9/gone"}).json()
    subscribe(alerts_api, org.tokens["admin"], receiver, event_types=[DISABLED])
    create_rule(alerts_api, org.tokens["admin"], usage_rule([1]))
    start_service(settings)
    write_figure(settings, org.accounts[0], "api_calls", this_month(), 1)

    assert receiver.wait_for(lambda r: len(r.events(DISABLED)) == 1, WAIT_S)
    told = receiver.events(DISABLED)[0].event
    assert told["data"]["endpoint_id"] == dead["endpoint_id"]
    assert told["subject"] == dead["endpoint_id"]
    assert not receiver.events(THRESHOLD)  # this endpoint did not subscribe to thresholds
    with alerts_api.client(org.tokens["admin"]) as http:
        shown = http.get(f"/v1/alerts/endpoints/{dead['endpoint_id']}").json()
        assert shown["enabled"] is False
        assert "in a row" in shown["disabled_reason"]
        assert shown["consecutive_failures"] >= 3
        # Enabled again, pointing at a live receiver: the pending delivery goes out.
        receiver.secrets.append(dead["secret"])
        enabled = http.patch(
            f"/v1/alerts/endpoints/{dead['endpoint_id']}",
            json={"enabled": True, "url": receiver.url},
        ).json()
    assert enabled["enabled"] is True and enabled["consecutive_failures"] == 0
    assert receiver.wait_for(lambda r: len(r.events(THRESHOLD)) == 1, WAIT_S)


def test_secret_rotation_signs_with_both_secrets_during_the_overlap(
    alerts_api: RunningApi,
    alerts_settings: Settings,
    tenant: Callable[..., Tenant],
    receiver: WebhookReceiver,
    start_service: Callable[[Settings], AlertService],
) -> None:
    from standardwebhooks import Webhook, WebhookVerificationError  # noqa: PLC0415

    org = tenant(1)
    endpoint = subscribe(alerts_api, org.tokens["admin"], receiver)
    old = receiver.secrets[0]
    with alerts_api.client(org.tokens["admin"]) as http:
        new = http.post(f"/v1/alerts/endpoints/{endpoint}/rotate-secret").json()["secret"]
        receiver.secrets.append(new)
        start_service(alerts_settings)
        http.post(f"/v1/alerts/endpoints/{endpoint}/test")
        assert receiver.wait_for(lambda r: len(r.events()) == 1, WAIT_S)
        # The overlap ends: the next message is signed with the new secret only.
        with psycopg.connect(alerts_settings.postgres.conninfo, autocommit=True) as conn:
            conn.execute(
                "UPDATE alert_endpoints SET previous_secret_expires_at = now() - interval '1 s'"
                " WHERE endpoint_id = %s",
                (endpoint,),
            )
        http.post(f"/v1/alerts/endpoints/{endpoint}/test")
        assert receiver.wait_for(lambda r: len(r.events()) == 2, WAIT_S)

    during, after = receiver.events()
    assert new != old
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(during.body, during.headers)
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(after.body, after.headers)


def test_resend_sends_the_same_message_again_and_logs_it(
    alerts_api: RunningApi,
    alerts_settings: Settings,
    tenant: Callable[..., Tenant],
    receiver: WebhookReceiver,
    start_service: Callable[[Settings], AlertService],
) -> None:
    org = tenant(1)
    endpoint = subscribe(alerts_api, org.tokens["admin"], receiver)
    create_rule(alerts_api, org.tokens["admin"], usage_rule([1]))
    start_service(alerts_settings)
    write_figure(alerts_settings, org.accounts[0], "api_calls", this_month(), 1)
    assert receiver.wait_for(lambda r: len(r.events()) == 1, WAIT_S)
    notification_id = receiver.events()[0].webhook_id

    with alerts_api.client(org.tokens["admin"]) as http:
        queued = http.post(f"/v1/alerts/notifications/{notification_id}/resend").json()
        assert queued["deliveries_queued"] == 1
        assert receiver.wait_for(lambda r: len(r.events()) == 2, WAIT_S)
        log = http.get(
            "/v1/alerts/deliveries",
            params={"notification_id": notification_id, "endpoint_id": endpoint},
        ).json()["items"]
        missing = http.post(f"/v1/alerts/notifications/{uuid.uuid4()}/resend")

    first, again = receiver.events()
    assert again.webhook_id == first.webhook_id and again.body == first.body
    assert [(e["attempt"], e["outcome"], e["response_code"]) for e in log] == [
        (1, "delivered", 204),
        (1, "delivered", 204),
    ]
    assert missing.status_code == 404
