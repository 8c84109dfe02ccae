"""POST /v1/events against the real service, Kafka and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from meterstream.testing import LAST_MS_OF_MONTH, cloud_event
from tests.api.conftest import RunningApi, Tenant, read_topic

pytestmark = pytest.mark.integration

BATCH = {"Content-Type": "application/cloudevents-batch+json"}
SINGLE = {"Content-Type": "application/cloudevents+json"}


def event(event_id: str, account: str, **changes: Any) -> dict[str, Any]:
    doc = cloud_event(
        event_id, account, "api_calls", LAST_MS_OF_MONTH, {"endpoint": "/v1/x", "status": 200}
    )
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not ...}


def test_post_events_batch_is_in_kafka_keyed_by_account_with_exact_bytes(
    api: RunningApi, make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant()
    a, b = tenant.accounts
    elements = [
        json.dumps(event(f"e{i}", a if i % 2 else b), indent=i % 3).encode() for i in range(50)
    ]
    body = b"[" + b",\n".join(elements) + b"]"

    with api.client(tenant.tokens["ingest"]) as http:
        response = http.post("/v1/events", content=body, headers=BATCH)

    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 50
    records = read_topic(api.settings, api.topic, 50)
    assert sorted(records) == sorted(((a if i % 2 else b).encode(), elements[i]) for i in range(50))


def test_post_events_single_event_is_accepted(
    api: RunningApi, make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant()
    body = json.dumps(event("single-1", tenant.accounts[0])).encode()

    with api.client(tenant.tokens["admin"]) as http:
        response = http.post("/v1/events", content=body, headers=SINGLE)

    assert response.status_code == 202
    assert response.json()["results"] == [{"index": 0, "id": "single-1", "status": "accepted"}]
    assert read_topic(api.settings, api.topic, 1) == [(tenant.accounts[0].encode(), body)]


def bad_events(account: str, foreign: str) -> list[tuple[bytes, str]]:
    def raw(doc: dict[str, Any]) -> bytes:
        return json.dumps(doc).encode()

    return [
        (b'{"id": "x", ', "MALFORMED_JSON"),
        (b"\xff\xfe", "MALFORMED_JSON"),
        (b"[1, 2]", "INVALID_ENVELOPE"),
        (raw(event("b1", account, source=7)), "INVALID_ENVELOPE"),
        (raw(event("b2", account, data=[1])), "INVALID_ENVELOPE"),
        (raw(event("x" * 300, account)), "INVALID_ENVELOPE"),
        (raw(event("b3", account, time=...)), "MISSING_FIELD"),
        (raw(event("b4", account, data=None)), "MISSING_FIELD"),
        (raw(event("b5", account, time="2026-10-31 23:59:59")), "INVALID_TIMESTAMP"),
        (raw(event("b6", "bad account!")), "INVALID_ACCOUNT"),
        (raw(event("b7", foreign)), "ACCOUNT_NOT_IN_ORGANISATION"),
        (raw(event("b8", account, data={"pad": "x" * 70_000})), "EVENT_TOO_LARGE"),
    ]


def test_post_events_every_bad_envelope_is_answered_with_its_reason(
    api: RunningApi, make_tenant: Callable[..., Tenant]
) -> None:
    tenant, other = make_tenant(), make_tenant()
    cases = bad_events(tenant.accounts[0], other.accounts[0])

    with api.client(tenant.tokens["ingest"]) as http:
        for raw, reason in cases:
            response = http.post("/v1/events", content=raw, headers=SINGLE)
            assert response.status_code == 422, (raw[:60], response.text)
            [result] = response.json()["results"]
            assert (result["status"], result["reason"]) == ("rejected", reason), raw[:60]
            assert result["detail"]


def test_post_events_batch_mixes_accepted_and_rejected_per_event(
    api: RunningApi, make_tenant: Callable[..., Tenant]
) -> None:
    tenant, other = make_tenant(), make_tenant()
    good = [json.dumps(event(f"g{i}", tenant.accounts[0])).encode() for i in range(3)]
    bad = [
        raw
        for raw, reason in bad_events(tenant.accounts[0], other.accounts[0])
        if reason != "MALFORMED_JSON"
    ]
    body = b"[" + b",".join([good[0], *bad, good[1], good[2]]) + b"]"

    with api.client(tenant.tokens["ingest"]) as http:
        response = http.post("/v1/events", content=body, headers=BATCH)

    doc = response.json()
    assert response.status_code == 202
    assert (doc["accepted"], doc["rejected"]) == (3, len(bad))
    statuses = [r["status"] for r in doc["results"]]
    assert statuses[0] == statuses[-1] == statuses[-2] == "accepted"
    assert sorted(v for _, v in read_topic(api.settings, api.topic, 3)) == sorted(good)


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        (BATCH, b'{"id": 1}', 400),
        (BATCH, b"[{}", 400),
        (BATCH, b"[]", 400),
        ({"Content-Type": "text/csv"}, b"a,b", 415),
        (BATCH, json.dumps([{}] * 1001).encode(), 413),
        (BATCH, b"[" + b" " * (600 * 1024) + b"]", 413),
    ],
)
def test_post_events_unusable_request_is_refused_whole(
    api: RunningApi,
    make_tenant: Callable[..., Tenant],
    headers: dict[str, str],
    body: bytes,
    status: int,
) -> None:
    tenant = make_tenant()

    with api.client(tenant.tokens["ingest"]) as http:
        response = http.post("/v1/events", content=body, headers=headers)

    assert response.status_code == status
    assert response.json()["error"]
