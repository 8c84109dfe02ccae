"""Tokens and scopes on every route, tenant isolation of reads, the operator routes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from meterstream.api import admin
from meterstream.config import Settings
from tests.api.conftest import RunningApi, Tenant

pytestmark = pytest.mark.integration

UPLOAD = str(uuid.uuid4())
#: (method, path, scope that is enough). Every route but /health and the OpenAPI documents.
ROUTES = [
    ("POST", "/v1/events", "ingest"),
    ("POST", "/v1/uploads?format=jsonl", "ingest"),
    ("PATCH", f"/v1/uploads/{UPLOAD}", "ingest"),
    ("GET", f"/v1/uploads/{UPLOAD}", "ingest"),
    ("GET", "/v1/usage", "read"),
    ("GET", "/v1/rejections", "read"),
    ("GET", "/health/ready", "operator"),
    ("GET", "/metrics", "operator"),
]


@pytest.fixture
def auth_api(serve_api: Callable[..., RunningApi]) -> RunningApi:
    """A server that does not cache tokens, so a revocation applies at once."""
    return serve_api(token_cache_seconds=0)


def test_every_route_refuses_missing_malformed_wrong_and_revoked_tokens(
    auth_api: RunningApi, make_tenant: Callable[..., Tenant], stack: Settings
) -> None:
    tenant = make_tenant()
    token_id = tenant.tokens["admin"].split("_")[1]
    wrong_secret = f"ms_{token_id}_{'A' * 43}"
    revoked = admin.create_token(stack, tenant.org_id, ["admin"])
    admin.revoke_token(stack, revoked.token_id)
    bad_headers: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Bearer {wrong_secret}"},
        {"Authorization": f"Bearer {revoked.token}"},
    ]

    with auth_api.client() as http:
        for method, path, _ in ROUTES:
            for headers in bad_headers:
                response = http.request(method, path, headers={**headers, "Upload-Offset": "0"})
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.json()["error"] == "UNAUTHENTICATED"


def test_every_route_refuses_a_token_without_its_scope(
    auth_api: RunningApi, make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant()
    wrong = {"ingest": ["read"], "read": ["ingest"], "operator": ["ingest", "read", "admin"]}

    for method, path, needed in ROUTES:
        for name in wrong[needed]:
            with auth_api.client(tenant.tokens[name]) as http:
                response = http.request(method, path, headers={"Upload-Offset": "0"})
            assert response.status_code == 403, (method, path, name, response.text)
            assert response.json()["error"] == "FORBIDDEN"


def test_open_routes_need_no_token(auth_api: RunningApi) -> None:
    with auth_api.client() as http:
        assert http.get("/health").json() == {"status": "ok"}
        spec = http.get("/openapi.json").json()

    assert {"/v1/events", "/v1/uploads", "/v1/usage", "/v1/rejections"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_operator_admin_reads_readiness_and_metrics(
    auth_api: RunningApi, make_tenant: Callable[..., Tenant]
) -> None:
    operator = make_tenant(operator=True)

    with auth_api.client(operator.tokens["admin"]) as http:
        ready = http.get("/health/ready")
        metrics = http.get("/metrics")

    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["kafka"]["ok"] and body["postgres"]["ok"]
    assert "events_in_last_minute" in body["kafka"]
    assert "consumer_lag" in body["kafka"]
    assert "job_state" in body["flink"]
    assert body["api"] == {
        "accepted_last_minute": 0,
        "rejected_last_minute": 0,
        "postgres_up": True,
        "quota_unreconciled_events": 0,
    }
    assert metrics.status_code == 200
    assert "meterstream_api_requests_total" in metrics.text
    assert "meterstream_api_postgres_up 1.0" in metrics.text


# --- tenant isolation of reads -------------------------------------------------------------


def seed_rows(settings: Settings, account: str, n: int) -> None:
    """Rows as the pipeline writes them: usage totals and validation-log entries."""
    now = datetime.now(UTC)
    with psycopg.connect(settings.postgres.conninfo, autocommit=True) as conn:
        for i in range(n):
            conn.execute(
                "INSERT INTO usage_aggregates (account_id, meter, period_start, quantity,"
                " event_count, first_event_at, last_event_at, last_arrived_at)"
                " VALUES (%s, 'api_calls', %s, %s, 1, %s, %s, %s)",
                (account, date(2026, 1 + i, 1), Decimal("1.5") * (i + 1), now, now, now),
            )
            conn.execute(
                "INSERT INTO rejected_events (source_topic, source_partition, source_offset,"
                " reason_code, detail, raw_payload, arrived_at)"
                " VALUES (%s, 0, %s, %s, 'd', %s, %s)",
                (
                    f"test-{account}",
                    i,
                    "UNKNOWN_METER",
                    json.dumps({"id": f"r{i}", "subject": account}),
                    now - timedelta(seconds=n - i),
                ),
            )


def test_reads_show_only_the_tokens_organisation(
    auth_api: RunningApi, make_tenant: Callable[..., Tenant], stack: Settings
) -> None:
    a, b = make_tenant(1), make_tenant(1)
    seed_rows(stack, a.accounts[0], 3)
    seed_rows(stack, b.accounts[0], 2)

    with auth_api.client(a.tokens["read"]) as http:
        usage = http.get("/v1/usage").json()["items"]
        rejections = http.get("/v1/rejections").json()["items"]
        other_usage = http.get("/v1/usage", params={"account": b.accounts[0]})
        other_rejections = http.get("/v1/rejections", params={"account": b.accounts[0]})

    assert {row["account_id"] for row in usage} == {a.accounts[0]}
    assert [row["quantity"] for row in usage] == ["1.5", "3", "4.5"]
    assert {row["account_id"] for row in rejections} == {a.accounts[0]}
    assert len(rejections) == 3
    assert other_usage.status_code == other_rejections.status_code == 404


def test_reads_filter_by_meter_period_reason_and_time(
    auth_api: RunningApi, make_tenant: Callable[..., Tenant], stack: Settings
) -> None:
    tenant = make_tenant(1)
    seed_rows(stack, tenant.accounts[0], 4)

    with auth_api.client(tenant.tokens["read"]) as http:
        periods = http.get(
            "/v1/usage", params={"period_from": "2026-02-01", "period_to": "2026-03-01"}
        ).json()["items"]
        other_meter = http.get("/v1/usage", params={"meter": "llm_tokens"}).json()["items"]
        by_reason = http.get("/v1/rejections", params={"reason": "UNKNOWN_METER"}).json()
        other_reason = http.get("/v1/rejections", params={"reason": "MALFORMED_JSON"}).json()

    assert [row["period_start"] for row in periods] == ["2026-02-01", "2026-03-01"]
    assert other_meter == []
    assert len(by_reason["items"]) == 4
    assert other_reason["items"] == []


def test_reads_paginate_with_cursors(
    auth_api: RunningApi, make_tenant: Callable[..., Tenant], stack: Settings
) -> None:
    tenant = make_tenant(1)
    seed_rows(stack, tenant.accounts[0], 5)
    pages: dict[str, list[str]] = {"/v1/usage": [], "/v1/rejections": []}

    with auth_api.client(tenant.tokens["read"]) as http:
        for path, seen in pages.items():
            params: dict[str, str | int] = {"limit": 2}
            while True:
                doc = http.get(path, params=params).json()
                seen += [row.get("period_start") or row["raw_payload"] for row in doc["items"]]
                if not doc["next_cursor"]:
                    break
                params["cursor"] = doc["next_cursor"]
            bad = http.get(path, params={"cursor": "garbage"})
            assert bad.status_code == 400

    assert pages["/v1/usage"] == [f"2026-0{m}-01" for m in range(1, 6)]
    assert [json.loads(p)["id"] for p in pages["/v1/rejections"]] == [f"r{i}" for i in range(5)]
