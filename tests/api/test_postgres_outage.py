"""PostgreSQL stopped: 503 with a reason, nothing sent to Kafka; restarted: accepted again."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from meterstream.config import Settings
from meterstream.stack import postgres
from tests.api.conftest import RunningApi, Tenant, post_batch, read_topic

pytestmark = pytest.mark.integration


def test_postgres_down_is_503_and_no_event_reaches_kafka_without_its_quota(
    api: RunningApi, make_tenant: Callable[..., Tenant], stack: Settings
) -> None:
    tenant = make_tenant(1)
    account = tenant.accounts[0]
    with api.client(tenant.tokens["ingest"]) as http:
        # The token and the account's owner are now cached: the quota is what needs PostgreSQL.
        assert post_batch(http, "before", account).status_code == 202
        try:
            postgres.stop(stack)
            down = post_batch(http, "down", account)
        finally:
            postgres.start(stack)
        deadline = time.monotonic() + 60
        while (after := post_batch(http, "after", account)).status_code != 202:
            assert after.status_code == 503, after.text
            assert time.monotonic() < deadline, after.text
            time.sleep(0.5)

    assert down.status_code == 503, down.text
    assert down.headers["retry-after"]
    assert down.json()["error"] == "DATABASE_UNAVAILABLE"
    stored = [json.loads(v)["id"] for _, v in read_topic(api.settings, api.topic, 40)]
    assert sorted(stored) == sorted(
        [f"before-{i}" for i in range(20)] + [f"after-{i}" for i in range(20)]
    )
