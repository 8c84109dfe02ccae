"""Kafka stopped: 503 and nothing half-accepted; restarted: accepted again; no acked event lost."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from meterstream.client import MeterstreamClient
from meterstream.config import Settings
from meterstream.stack import kafka
from meterstream.testing import LAST_MS_OF_MONTH, cloud_event
from tests.api.conftest import RunningApi, Tenant, read_topic
from tests.api.conftest import post_batch as post

pytestmark = pytest.mark.integration


def test_kafka_down_is_503_and_back_up_is_accepted_without_losing_acked_events(
    serve_api: Callable[..., RunningApi],
    make_tenant: Callable[..., Tenant],
    stack: Settings,
    tmp_path: Path,
) -> None:
    api = serve_api(kafka_delivery_timeout_ms=3000)
    tenant = make_tenant(1)
    account = tenant.accounts[0]
    acknowledged: set[str] = set()
    upload_id = str(uuid.uuid4())
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b"".join(
            json.dumps(
                cloud_event(f"up-{i}", account, "api_calls", LAST_MS_OF_MONTH, {"status": 200})
            ).encode()
            + b"\n"
            for i in range(50)
        )
    )

    def remember(response: httpx.Response) -> None:
        acknowledged.update(
            r["id"] for r in response.json()["results"] if r["status"] == "accepted"
        )

    with api.client(tenant.tokens["ingest"]) as http:
        for i in range(5):
            response = post(http, f"before{i}", account)
            assert response.status_code == 202
            remember(response)
        try:
            kafka.stop(stack)
            down = post(http, "down", account)
            remember(down)
            upload_down = http.post(
                "/v1/uploads",
                params={"format": "jsonl"},
                content=path.read_bytes(),
                headers={"Upload-Id": upload_id},
            )
        finally:
            kafka.start(stack)
        deadline = time.monotonic() + 60
        while (after := post(http, "after", account)).status_code != 202:
            remember(after)
            assert time.monotonic() < deadline, after.text
        remember(after)
        with MeterstreamClient(api.url, tenant.tokens["ingest"], backoff_s=0.2) as client:
            resumed = client.upload(path, upload_id=upload_id)

    assert down.status_code == 503
    assert down.headers["retry-after"]
    doc = down.json()
    assert doc["error"] == "KAFKA_UNAVAILABLE"
    assert doc["failed"] == 20
    assert {r["status"] for r in doc["results"]} == {"failed"}
    assert len(acknowledged) == 120
    assert upload_down.status_code == 503
    assert (upload_down.json()["state"], upload_down.json()["offset"]) == ("interrupted", 0)
    assert (resumed["state"], resumed["accepted"], resumed["rejected"]) == ("done", 50, 0)
    stored = {json.loads(v)["id"] for _, v in read_topic(api.settings, api.topic, 170)}
    assert acknowledged <= stored
    assert {f"up-{i}" for i in range(50)} <= stored
