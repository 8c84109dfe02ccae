"""Unit tests of the API's pure parts: token format, buckets, cursors, and the client's retries."""

from __future__ import annotations

import json
from datetime import date

import httpx
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from meterstream.api.auth import Principal, Scope, bearer, hash_secret, new_token, split_token
from meterstream.api.errors import ApiError
from meterstream.api.health import committed_offsets
from meterstream.api.ratelimit import Limit, RateLimiter, TokenBucket, retry_after
from meterstream.api.reads import REJECTION_KEY, USAGE_KEY, decode_cursor, encode_cursor
from meterstream.client import ClientError, MeterstreamClient, make_event
from meterstream.config import env_names, load_settings
from meterstream.errors import ConfigError

# --- tokens ----------------------------------------------------------------------------------


def test_new_token_splits_back_and_stores_only_the_hash() -> None:
    made = new_token()
    parts = split_token(made.token)

    assert parts is not None
    assert parts[0] == made.token_id
    assert hash_secret(parts[1]) == made.secret_hash
    assert parts[1] not in made.secret_hash.hex()


@pytest.mark.parametrize(
    "token", ["", "ms_", "ms_0123456789ab", "ms_0123456789ab_", "ms_XYZ456789abc_s", "xx_0123_s"]
)
def test_split_token_malformed_is_none(token: str) -> None:
    assert split_token(token) is None


def test_bearer_needs_the_bearer_scheme() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None
    assert bearer(None) is None


def test_principal_admin_implies_other_scopes() -> None:
    admin = Principal("t", "o", frozenset({Scope.ADMIN}))
    reader = Principal("t", "o", frozenset({Scope.USAGE_READ}))

    assert admin.allows(Scope.INGEST_WRITE)
    assert reader.allows(Scope.USAGE_READ)
    assert not reader.allows(Scope.INGEST_WRITE)


# --- rate limits -----------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate_up_to_burst() -> None:
    bucket = TokenBucket(rate=10, burst=20, tokens=0, updated=0.0)

    assert not bucket.take(10, now=0.5)
    assert bucket.take(10, now=1.0)
    assert bucket.wait_for(20, now=100.0) == 0
    assert bucket.tokens == 20


def test_rate_limiter_takes_all_buckets_or_none() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    small, big = Limit(1, 5), Limit(1, 100)

    assert limiter.try_take({"a": (small, 5)}) == 0
    wait = limiter.try_take({"b": (big, 50), "a": (small, 1)})

    assert wait == pytest.approx(1.0)
    assert limiter.try_take({"b": (big, 100)}) == 0  # "b" lost nothing to the refused request


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after(0.01) == "1"
    assert retry_after(1.01) == "2"
    assert retry_after(float("inf")) == "3600"


# --- cursors ---------------------------------------------------------------------------------


def test_decode_cursor_round_trips_typed_keys() -> None:
    key = decode_cursor(encode_cursor(["a", "m", "2026-10-01", ""]), USAGE_KEY)

    assert key == ["a", "m", date(2026, 10, 1), ""]


@settings(max_examples=300, deadline=None)
@given(cursor=st.text(max_size=200) | st.builds(encode_cursor, st.lists(st.integers() | st.text())))
def test_decode_cursor_anything_else_is_a_400(cursor: str) -> None:
    for kinds in (USAGE_KEY, REJECTION_KEY):
        try:
            decode_cursor(cursor, kinds)
        except ApiError as exc:
            assert exc.status == 400


# --- the client ------------------------------------------------------------------------------


def accepted_all(request: httpx.Request) -> httpx.Response:
    events = json.loads(request.content)
    results = [{"index": i, "id": e["id"], "status": "accepted"} for i, e in enumerate(events)]
    return httpx.Response(202, json={"accepted": len(events), "rejected": 0, "results": results})


def test_client_retries_429_and_503_with_the_same_bytes() -> None:
    bodies: list[bytes] = []
    answers = [
        httpx.Response(429, headers={"Retry-After": "2"}, json={}),
        httpx.Response(503, json={}),
    ]
    slept: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return answers.pop(0) if answers else accepted_all(request)

    client = MeterstreamClient(
        "http://api", "ms_x", transport=httpx.MockTransport(handler), sleep=slept.append
    )
    events = [make_event("api_calls", "acct-1", {"endpoint": "/", "status": 200}) for _ in range(3)]
    result = client.send_batch(events)

    assert result.accepted == 3
    assert len(bodies) == 3
    assert len(set(bodies)) == 1
    assert slept[0] == 2


def test_client_batches_by_batch_size_and_flushes_on_close() -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sizes.append(len(json.loads(request.content)))
        return accepted_all(request)

    with MeterstreamClient(
        "http://api", "ms_x", batch_size=4, transport=httpx.MockTransport(handler)
    ) as client:
        for i in range(10):
            client.add(make_event("api_calls", "acct-1", {"i": i}))

    assert sizes == [4, 4, 2]


def test_client_refusal_is_a_client_error_without_retry() -> None:
    calls: list[int] = []

    def handler(_request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(401, json={"error": "UNAUTHENTICATED"})

    client = MeterstreamClient("http://api", "ms_x", transport=httpx.MockTransport(handler))
    with pytest.raises(ClientError) as info:
        client.send_batch([make_event("api_calls", "acct-1", {})])

    assert info.value.status == 401
    assert len(calls) == 1


def test_make_event_keeps_its_id() -> None:
    event = make_event("api_calls", "acct-1", {}, event_id="evt-1")

    assert event["id"] == "evt-1"
    assert event["time"].endswith("Z")


# --- settings --------------------------------------------------------------------------------


def test_api_settings_defaults_bind_loopback_port_18080() -> None:
    api = load_settings({}).api

    assert (api.host, api.port) == ("127.0.0.1", 18080)
    assert (api.max_events_per_request, api.max_request_bytes) == (1_000, 512 * 1024)


def test_api_settings_env_overrides_and_problems_are_reported_together() -> None:
    env = {
        "METERSTREAM_API_PORT": "28080",
        "METERSTREAM_API_TLS_CERTFILE": "/etc/cert.pem",
        "METERSTREAM_API_MAX_PAGE_SIZE": "0",
    }

    with pytest.raises(ConfigError) as info:
        load_settings(env)

    assert "api.max_page_size must be >= 1" in str(info.value)
    assert "tls_certfile and api.tls_keyfile must be set together" in str(info.value)
    assert "METERSTREAM_API_ACCOUNT_DAILY_EVENT_QUOTA" in env_names()


# --- health --------------------------------------------------------------------------------


class FlakyCoordinator:
    """A consumer whose group coordinator is still loading for the first `failures` calls."""

    def __init__(self, failures: int, code: int = KafkaError.NOT_COORDINATOR) -> None:
        self.failures, self.code, self.calls = failures, code, 0

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(self.code))
        return partitions


def test_committed_offsets_ride_out_a_coordinator_that_is_still_loading() -> None:
    consumer = FlakyCoordinator(failures=2)
    asked = [TopicPartition("t", 0)]
    assert committed_offsets(consumer, asked) == asked  # type: ignore[arg-type]
    assert consumer.calls == 3


def test_committed_offsets_give_up_on_other_errors_at_once() -> None:
    consumer = FlakyCoordinator(failures=1, code=KafkaError.GROUP_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        committed_offsets(consumer, [TopicPartition("t", 0)])  # type: ignore[arg-type]
    assert consumer.calls == 1
