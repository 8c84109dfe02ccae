"""Arbitrary bytes, media types and query strings against the real service never give a 500."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import RunningApi, Tenant

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
MEDIA = st.sampled_from(
    [
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/json",
        "application/x-ndjson",
        "text/plain",
        "",
    ]
)


def event_like(account: str) -> st.SearchStrategy[bytes]:
    """JSON documents shaped like (broken) events, and batches of them."""
    value = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.floats()
    fields = st.fixed_dictionaries(
        {},
        optional={
            "id": value,
            "source": value,
            "type": st.sampled_from(["api_calls", "nope"]) | value,
            "subject": st.just(account) | value,
            "time": st.just("2026-10-31T23:59:59Z") | value,
            "data": st.dictionaries(st.text(max_size=5), value, max_size=3) | value,
        },
    )
    return st.one_of(
        fields.map(lambda d: json.dumps(d).encode()),
        st.lists(fields, max_size=5).map(lambda d: json.dumps(d).encode()),
    )


@pytest.fixture
def fuzz_target(
    serve_api: Callable[..., RunningApi], make_tenant: Callable[..., Tenant]
) -> tuple[RunningApi, Tenant]:
    return serve_api(token_request_burst=100_000, token_requests_per_second=100_000), make_tenant(1)


def test_post_events_arbitrary_bodies_never_give_a_500(
    fuzz_target: tuple[RunningApi, Tenant],
) -> None:
    api, tenant = fuzz_target
    with api.client(tenant.tokens["ingest"]) as http:

        @FUZZ
        @given(
            media=MEDIA,
            body=st.binary(max_size=3000) | event_like(tenant.accounts[0]),
        )
        def check(media: str, body: bytes) -> None:
            response = http.post("/v1/events", content=body, headers={"Content-Type": media})
            assert response.status_code < 500, response.text
            assert response.status_code in (202, 400, 413, 415, 422)

        check()


def test_uploads_arbitrary_bodies_never_give_a_500(
    fuzz_target: tuple[RunningApi, Tenant],
) -> None:
    api, tenant = fuzz_target
    with api.client(tenant.tokens["ingest"]) as http:

        @FUZZ
        @given(
            fmt=st.sampled_from(["jsonl", "json"]),
            body=st.binary(max_size=3000) | event_like(tenant.accounts[0]),
        )
        def check(fmt: str, body: bytes) -> None:
            response = http.post("/v1/uploads", params={"format": fmt}, content=body)
            assert response.status_code in (201, 422), response.text

        check()


def test_reads_arbitrary_query_strings_never_give_a_500(
    fuzz_target: tuple[RunningApi, Tenant],
) -> None:
    api, tenant = fuzz_target
    text = st.text(max_size=40)
    with api.client(tenant.tokens["admin"]) as http:

        @FUZZ
        @given(
            path=st.sampled_from(["/v1/usage", "/v1/rejections", "/v1/uploads/" + "0" * 8]),
            params=st.dictionaries(
                st.sampled_from(
                    [
                        "account",
                        "meter",
                        "period_from",
                        "period_to",
                        "reason",
                        "since",
                        "until",
                        "limit",
                        "cursor",
                    ]
                ),
                text,
                max_size=4,
            ),
        )
        def check(path: str, params: dict[str, str]) -> None:
            response = http.get(path, params=params)
            assert response.status_code < 500, (params, response.text)

        check()
