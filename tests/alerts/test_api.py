"""The alerts API on the real stack: rule and endpoint shapes, scopes, tenant isolation."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from meterstream.api import admin
from meterstream.config import Settings
from tests.alerts.conftest import RunningApi, Tenant

pytestmark = pytest.mark.integration


def usage_rule(account: str | None = None, **changes: object) -> dict[str, object]:
    rule: dict[str, object] = {
        "kind": "usage_threshold",
        "name": "tokens",
        "meter": "llm_tokens",
        "thresholds": ["1000", 5000],
        "recurring_every": "10000",
    }
    if account is not None:
        rule["account"] = account
    return rule | changes


def test_create_rule_resolves_and_lists_it(
    alerts_api: RunningApi, tenant: Callable[..., Tenant]
) -> None:
    org = tenant()
    with alerts_api.client(org.tokens["admin"]) as http:
        made = http.post(
            "/v1/alerts/rules", json=usage_rule(org.accounts[0], segment={"model": "large"})
        )
        assert made.status_code == 201, made.text
        rule = made.json()
        listed = http.get("/v1/alerts/rules").json()["items"]
        got = http.get(f"/v1/alerts/rules/{rule['rule_id']}").json()

    assert rule["thresholds"] == ["1000", "5000"]
    assert rule["segment"] == {"model": "large"}
    assert rule["from_period"]  # the current period by default
    assert [r["rule_id"] for r in listed] == [rule["rule_id"]]
    assert got == rule


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        (usage_rule(meter="no_such_meter"), "no meter"),
        (usage_rule(segment={"colour": "red"}), "group-by fields"),
        (usage_rule(segment={"model": 7}), "segment.model must be"),
        (usage_rule(thresholds=[], recurring_every=None), "give thresholds"),
        (usage_rule(thresholds=["1", "1"]), "differ"),
        (usage_rule(recurring_every="-5"), "recurring_every"),
        (usage_rule(from_period="2026-13"), "period"),
        ({"kind": "rejections", "name": "r", "above": 1, "reason": "NOPE"}, "reason code"),
        ({"kind": "nope", "name": "x"}, "kind"),
        ({"kind": "late_events", "name": "x", "surprise": 1}, "surprise"),
    ],
)
def test_bad_rules_get_400_saying_why(
    alerts_api: RunningApi, tenant: Callable[..., Tenant], rule: dict[str, object], problem: str
) -> None:
    org = tenant()
    with alerts_api.client(org.tokens["admin"]) as http:
        response = http.post("/v1/alerts/rules", json=rule)

    assert response.status_code == 400, response.text
    assert problem in response.json()["detail"]


def test_whole_meter_rules_on_combinable_or_unsegmented_meters_are_accepted(
    alerts_api: RunningApi, tenant: Callable[..., Tenant]
) -> None:
    org = tenant()
    # compute_peak_cores is MAX by region (the whole is the max); active_users has no group_by.
    with alerts_api.client(org.tokens["admin"]) as http:
        peak = http.post("/v1/alerts/rules", json=usage_rule(meter="compute_peak_cores"))
        users = http.post("/v1/alerts/rules", json=usage_rule(meter="active_users"))

    assert peak.status_code == 201, peak.text
    assert users.status_code == 201, users.text


def test_operator_only_kinds_are_refused_to_tenants(
    alerts_api: RunningApi, tenant: Callable[..., Tenant]
) -> None:
    org, operator = tenant(), tenant(operator=True)
    rule = {"kind": "job_not_running", "name": "job"}
    with alerts_api.client(org.tokens["admin"]) as http:
        refused = http.post("/v1/alerts/rules", json=rule)
    with alerts_api.client(operator.tokens["admin"]) as http:
        accepted = http.post("/v1/alerts/rules", json=rule)

    assert refused.status_code == 403
    assert accepted.status_code == 201, accepted.text


def test_scopes_read_and_write(
    alerts_api: RunningApi, tenant: Callable[..., Tenant], stack: Settings
) -> None:
    org = tenant()
    reader = admin.create_token(stack, org.org_id, ["alerts:read"]).token
    writer = admin.create_token(stack, org.org_id, ["alerts:write"]).token
    with alerts_api.client(writer) as http:
        assert http.post("/v1/alerts/rules", json=usage_rule()).status_code == 201
        assert http.get("/v1/alerts/rules").status_code == 403
    with alerts_api.client(reader) as http:
        assert http.get("/v1/alerts/rules").status_code == 200
        assert http.post("/v1/alerts/rules", json=usage_rule()).status_code == 403
        assert http.get("/v1/alerts/deliveries").status_code == 200
    with alerts_api.client(org.tokens["ingest"]) as http:
        assert http.get("/v1/alerts/rules").status_code == 403
    with alerts_api.client() as http:
        assert http.get("/v1/alerts/rules").status_code == 401


def test_endpoint_urls_on_private_networks_are_refused_unless_allowed(
    serve_alerts_api: Callable[..., RunningApi], tenant: Callable[..., Tenant]
) -> None:
    org = tenant()
    strict = serve_alerts_api(allow_private_urls=False)
    with strict.client(org.tokens["admin"]) as http:
        for url in (
            "http://127.0.0.1:9000/hook",
            "http://10.1.2.3/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://localhost/hook",
            "ftp://example.com/hook",
        ):
            response = http.post("/v1/alerts/endpoints", json={"url": url})
            assert response.status_code == 400, (url, response.text)
        bad_type = http.post(
            "/v1/alerts/endpoints",
            json={"url": "https://93.184.215.14/hook", "event_types": ["io.other.x"]},
        )
        public = http.post("/v1/alerts/endpoints", json={"url": "https://93.184.215.14/hook"})

    assert bad_type.status_code == 400
    assert public.status_code == 201, public.text
    assert public.json()["secret"].startswith("whsec_")


def test_tenant_a_can_neither_see_nor_change_b(
    alerts_api: RunningApi, tenant: Callable[..., Tenant], stack: Settings
) -> None:
    a, b = tenant(), tenant()
    with alerts_api.client(b.tokens["admin"]) as http:
        rule = http.post("/v1/alerts/rules", json=usage_rule(b.accounts[0])).json()
        endpoint = http.post("/v1/alerts/endpoints", json={"url": "http://127.0.0.1:9/x"}).json()
        test = http.post(f"/v1/alerts/endpoints/{endpoint['endpoint_id']}/test").json()
    rule_id, endpoint_id = rule["rule_id"], endpoint["endpoint_id"]
    notification_id = test["notification_id"]

    with alerts_api.client(a.tokens["admin"]) as http:
        assert http.get("/v1/alerts/rules").json()["items"] == []
        assert http.get("/v1/alerts/endpoints").json()["items"] == []
        assert http.get("/v1/alerts/notifications").json()["items"] == []
        assert http.get("/v1/alerts/deliveries").json()["items"] == []
        assert http.get(f"/v1/alerts/deliveries?endpoint_id={endpoint_id}").json()["items"] == []
        for method, path, body in [
            ("GET", f"/v1/alerts/rules/{rule_id}", None),
            ("GET", f"/v1/alerts/rules/{rule_id}/firings", None),
            ("PUT", f"/v1/alerts/rules/{rule_id}", usage_rule()),
            ("PATCH", f"/v1/alerts/rules/{rule_id}", {"enabled": False}),
            ("DELETE", f"/v1/alerts/rules/{rule_id}", None),
            ("GET", f"/v1/alerts/endpoints/{endpoint_id}", None),
            ("PATCH", f"/v1/alerts/endpoints/{endpoint_id}", {"url": "http://127.0.0.1:1/a"}),
            ("POST", f"/v1/alerts/endpoints/{endpoint_id}/rotate-secret", None),
            ("POST", f"/v1/alerts/endpoints/{endpoint_id}/test", None),
            ("DELETE", f"/v1/alerts/endpoints/{endpoint_id}", None),
            ("GET", f"/v1/alerts/notifications/{notification_id}", None),
            ("POST", f"/v1/alerts/notifications/{notification_id}/resend", None),
        ]:
            response = http.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
        # B's account cannot be watched by A, nor a resend aimed at B's endpoint.
        assert http.post("/v1/alerts/rules", json=usage_rule(b.accounts[0])).status_code == 404
        own = http.post("/v1/alerts/endpoints", json={"url": "http://127.0.0.1:9/y"}).json()
        own_test = http.post(f"/v1/alerts/endpoints/{own['endpoint_id']}/test").json()
        cross = http.post(
            f"/v1/alerts/notifications/{own_test['notification_id']}/resend",
            json={"endpoint_id": endpoint_id},
        )
        assert cross.status_code == 404

    with alerts_api.client(b.tokens["admin"]) as http:
        still = http.get(f"/v1/alerts/rules/{rule_id}").json()
        assert still["enabled"] is True and still["name"] == "tokens"
        assert (
            http.get(f"/v1/alerts/endpoints/{endpoint_id}").json()["url"] == "http://127.0.0.1:9/x"
        )
        assert len(http.get("/v1/alerts/notifications").json()["items"]) == 1


def test_rule_patch_put_delete(alerts_api: RunningApi, tenant: Callable[..., Tenant]) -> None:
    org = tenant()
    with alerts_api.client(org.tokens["admin"]) as http:
        rule_id = http.post("/v1/alerts/rules", json=usage_rule()).json()["rule_id"]
        patched = http.patch(f"/v1/alerts/rules/{rule_id}", json={"enabled": False, "name": "n"})
        replaced = http.put(
            f"/v1/alerts/rules/{rule_id}",
            json={"kind": "rejections", "name": "bursts", "above": 10, "window_seconds": 60},
        )
        deleted = http.delete(f"/v1/alerts/rules/{rule_id}")
        gone = http.get(f"/v1/alerts/rules/{rule_id}")
        missing = http.get(f"/v1/alerts/rules/{uuid.uuid4()}")

    assert patched.json()["enabled"] is False and patched.json()["name"] == "n"
    assert replaced.json()["kind"] == "rejections" and replaced.json()["above"] == 10
    assert deleted.status_code == 204
    assert gone.status_code == 404 and missing.status_code == 404
