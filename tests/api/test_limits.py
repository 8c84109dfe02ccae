"""Rate limits (429 with Retry-After) and daily quotas, while other tenants are served."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from meterstream.testing import LAST_MS_OF_MONTH, cloud_event
from tests.api.conftest import RunningApi, Tenant, read_topic

pytestmark = pytest.mark.integration

BATCH = {"Content-Type": "application/cloudevents-batch+json"}


def batch(prefix: str, account: str, n: int) -> bytes:
    return json.dumps(
        [
            cloud_event(f"{prefix}-{i}", account, "api_calls", LAST_MS_OF_MONTH, {"status": 200})
            for i in range(n)
        ]
    ).encode()


def test_account_burst_past_its_rate_gets_429_while_another_tenant_is_served(
    serve_api: Callable[..., RunningApi], make_tenant: Callable[..., Tenant]
) -> None:
    api = serve_api(account_events_per_second=10, account_event_burst=1000)
    noisy, quiet = make_tenant(1), make_tenant(1)
    statuses: list[int] = []
    retry_after: list[str] = []

    with api.client(noisy.tokens["ingest"]) as loud, api.client(quiet.tokens["ingest"]) as calm:
        for i in range(6):
            response = loud.post(
                "/v1/events", content=batch(f"n{i}", noisy.accounts[0], 300), headers=BATCH
            )
            statuses.append(response.status_code)
            retry_after.append(response.headers.get("retry-after", ""))
            served = calm.post(
                "/v1/events", content=batch(f"q{i}", quiet.accounts[0], 100), headers=BATCH
            )
            assert served.status_code == 202, served.text

    assert statuses[:3] == [202, 202, 202]
    assert 429 in statuses[3:]
    limited = [int(r) for s, r in zip(statuses, retry_after, strict=True) if s == 429]
    assert all(1 <= seconds <= 30 for seconds in limited)
    # A refused request sent nothing: Kafka has the accepted requests' events only.
    expected = 300 * statuses.count(202) + 600
    assert len(read_topic(api.settings, api.topic, expected)) == expected


def test_token_request_burst_gets_429_while_another_token_is_served(
    serve_api: Callable[..., RunningApi], make_tenant: Callable[..., Tenant]
) -> None:
    api = serve_api(token_requests_per_second=1, token_request_burst=5)
    tenant, other = make_tenant(1), make_tenant(1)

    with api.client(tenant.tokens["read"]) as http, api.client(other.tokens["read"]) as calm:
        statuses = [http.get("/v1/usage").status_code for _ in range(8)]
        limited = http.get("/v1/usage")
        served = calm.get("/v1/usage")

    assert statuses[:5] == [200] * 5
    assert statuses[5:] == [429] * 3
    assert limited.headers["retry-after"] == "1"
    assert limited.json()["error"] == "RATE_LIMITED"
    assert served.status_code == 200


def test_daily_quota_rejects_events_past_it_per_event(
    api: RunningApi, make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant(2, quota=5)

    with api.client(tenant.tokens["ingest"]) as http:
        first = http.post("/v1/events", content=batch("a", tenant.accounts[0], 3), headers=BATCH)
        second = http.post("/v1/events", content=batch("b", tenant.accounts[0], 4), headers=BATCH)
        third = http.post("/v1/events", content=batch("c", tenant.accounts[0], 1), headers=BATCH)

    assert first.json()["accepted"] == 3
    assert [r["status"] for r in second.json()["results"]] == ["accepted"] * 2 + ["rejected"] * 2
    assert second.json()["results"][-1]["reason"] == "QUOTA_EXCEEDED"
    assert third.status_code == 422
    assert len(read_topic(api.settings, api.topic, 5)) == 5


def test_daily_quota_is_never_exceeded_by_concurrent_requests(
    api: RunningApi, make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant(2, quota=50)
    hot, other = tenant.accounts

    def send(i: int) -> dict[str, int]:
        body = json.loads(batch(f"r{i}", hot, 8)) + json.loads(batch(f"o{i}", other, 2))
        with api.client(tenant.tokens["ingest"]) as http:
            doc = http.post("/v1/events", content=json.dumps(body).encode(), headers=BATCH).json()
        counts = {"hot": 0, "other": 0}
        for result in doc["results"]:
            if result["status"] == "accepted":
                counts["hot" if result["id"].startswith("r") else "other"] += 1
        return counts

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(send, range(12)))

    assert sum(o["hot"] for o in outcomes) == 50  # 96 wanted, exactly the quota granted
    assert sum(o["other"] for o in outcomes) == 24
    assert len(read_topic(api.settings, api.topic, 74)) == 74
