"""The Python client replays clients/vectors/, the scenarios every SDK in clients/ replays too."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from meterstream import client as ms
from meterstream.alerts.signing import signed_headers
from meterstream.client import BatchResult, MeterstreamClient, make_event
from tests.clients import webhook_vectors

VECTORS = Path(__file__).resolve().parents[2] / "clients" / "vectors"
UA = re.compile(r"^meterstream-python/\d+\.\d+\.\d+")
KINDS: dict[str, type[ms.ClientError]] = {
    "authentication": ms.AuthenticationError,
    "permission": ms.PermissionDeniedError,
    "not_found": ms.NotFoundError,
    "payload_too_large": ms.PayloadTooLargeError,
    "unprocessable": ms.UnprocessableError,
    "retries_exhausted": ms.RetriesExhaustedError,
    "api": ms.ClientError,
}


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text())


def scenarios(name: str) -> list[Any]:
    doc = load(name)
    return [pytest.param(doc, s, id=s["name"]) for s in doc["scenarios"]]


class Replay:
    """A fake transport serving a scenario's exchanges in order and checking each request."""

    def __init__(self, doc: dict[str, Any], scenario: dict[str, Any]) -> None:
        self.token = doc["token"]
        self.exchanges = list(scenario["exchanges"])
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert self.exchanges, f"unexpected request {request.method} {request.url}"
        exchange = self.exchanges.pop(0)
        want, answer = exchange["request"], exchange["response"]
        body = request.read()
        self.bodies.append(body)
        assert request.method == want["method"]
        assert request.url.path == want["path"]
        assert dict(parse_qsl(request.url.query.decode(), keep_blank_values=True)) == want.get(
            "query", {}
        )
        assert request.headers["authorization"] == f"Bearer {self.token}"
        assert UA.match(request.headers["user-agent"]), request.headers["user-agent"]
        for name, value in want.get("headers", {}).items():
            assert request.headers.get(name) == value, name
        if "json" in want:
            assert json.loads(body) == want["json"]
        if "body" in want:
            assert body.decode() == want["body"]
        if answer.get("network_error"):
            msg = "connection reset by the vector"
            raise httpx.ConnectError(msg, request=request)
        if "json" in answer:
            return httpx.Response(
                answer["status"], headers=answer.get("headers", {}), json=answer["json"]
            )
        return httpx.Response(
            answer["status"], headers=answer.get("headers", {}), text=answer.get("body", "")
        )

    def done(self) -> None:
        assert not self.exchanges, f"{len(self.exchanges)} exchanges never asked for"


def make_client(
    doc: dict[str, Any], scenario: dict[str, Any], replay: Replay, **kwargs: Any
) -> tuple[MeterstreamClient, list[float]]:
    slept: list[float] = []
    randoms = iter(scenario.get("random", []))
    options = dict(scenario.get("client", {}))
    client = MeterstreamClient(
        doc["base_url"],
        doc["token"],
        transport=httpx.MockTransport(replay),
        sleep=slept.append,
        random=lambda: next(randoms),
        flush_interval_s=None,
        **options,
        **kwargs,
    )
    return client, slept


def check_error(exc: ms.ClientError, want: dict[str, Any]) -> None:
    assert type(exc) is KINDS[want["kind"]]
    assert exc.status == want["status"]
    for field in ("code", "detail"):
        if field in want:
            assert getattr(exc, field) == want[field]


def as_json(result: BatchResult) -> dict[str, Any]:
    results = []
    for r in result.results:
        item: dict[str, Any] = {"index": r.index, "id": r.id, "status": r.status}
        if r.reason is not None:
            item["reason"] = r.reason
        if r.detail is not None and r.status != "failed":
            item["detail"] = r.detail
        results.append(item)
    return {
        "accepted": result.accepted,
        "rejected": result.rejected,
        "failed": result.failed,
        "results": results,
    }


def expect_failure(call: Callable[[], Any], want: dict[str, Any] | None) -> Any:
    if want is None:
        return call()
    with pytest.raises(ms.ClientError) as info:
        call()
    check_error(info.value, want)
    return None


# --- events ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", load("events.json")["cases"], ids=lambda c: c["name"])
def test_make_event_matches_vector(case: dict[str, Any]) -> None:
    given = case["input"]
    kwargs: dict[str, Any] = {"time": datetime.fromisoformat(given["time"])}
    if "id" in given:
        kwargs["event_id"] = given["id"]
    if "source" in given:
        kwargs["source"] = given["source"]
    event = make_event(given["meter"], given["account"], given["data"], **kwargs)

    if case.get("id") == "uuid":
        assert re.match(load("events.json")["uuid_pattern"], event.pop("id"))
    assert event == case["event"]


# --- send ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("doc", "scenario"), scenarios("send.json"))
def test_send_batch_matches_vector(doc: dict[str, Any], scenario: dict[str, Any]) -> None:
    replay = Replay(doc, scenario)
    client, slept = make_client(doc, scenario, replay)
    expect = scenario["expect"]

    result = expect_failure(
        lambda: client.send_batch(scenario["call"]["events"]), expect.get("error")
    )

    if "result" in expect:
        assert as_json(result) == expect["result"]
    assert slept == pytest.approx(expect["sleeps_s"])
    assert len(set(replay.bodies)) == 1, "a retry must send the same bytes"
    replay.done()


@pytest.mark.parametrize(("doc", "scenario"), scenarios("batching.json"))
def test_batching_matches_vector(doc: dict[str, Any], scenario: dict[str, Any]) -> None:
    replay = Replay(doc, scenario)
    reported: list[BatchResult] = []
    client, _ = make_client(doc, scenario, replay, on_result=reported.append)
    expect, call = scenario["expect"], scenario["call"]

    def run() -> None:
        for event in call["events"]:
            client.add(event)
        if call["then"] == "close":
            client.close()
        else:
            client.flush()

    expect_failure(run, expect.get("error"))

    assert [len(json.loads(b)) for b in replay.bodies] == expect["batches"]
    if "event_bytes" in expect:
        sizes = {len(json.dumps(e, separators=(",", ":"))) for e in call["events"]}
        assert sizes == {expect["event_bytes"]}
    if "reported" in expect:
        assert [as_json(r) for r in reported] == expect["reported"]
        assert all(r.error is not None for r in reported)
    replay.done()


# --- reads -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("doc", "scenario"), scenarios("reads.json"))
def test_reads_match_vector(doc: dict[str, Any], scenario: dict[str, Any]) -> None:
    replay = Replay(doc, scenario)
    client, slept = make_client(doc, scenario, replay)
    call, expect = scenario["call"], scenario["expect"]
    read: Callable[..., Iterator[dict[str, Any]]] = getattr(client, call["op"])

    items = expect_failure(lambda: list(read(**call["filters"])), expect.get("error"))

    if "items" in expect:
        assert items == expect["items"]
    assert slept == pytest.approx(expect.get("sleeps_s", []))
    replay.done()


# --- uploads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("doc", "scenario"), scenarios("uploads.json"))
def test_upload_matches_vector(
    doc: dict[str, Any], scenario: dict[str, Any], tmp_path: Path
) -> None:
    replay = Replay(doc, scenario)
    client, slept = make_client(doc, scenario, replay)
    call, expect = scenario["call"], scenario["expect"]
    path = tmp_path / call["filename"]
    path.write_bytes(call["content"].encode())
    progress: list[tuple[int, int]] = []

    status = expect_failure(
        lambda: client.upload(
            path,
            fmt=call.get("format"),
            upload_id=call["upload_id"],
            progress=lambda sent, size: progress.append((sent, size)),
        ),
        expect.get("error"),
    )

    if "status" in expect:
        assert status == expect["status"]
        assert list(progress[-1]) == expect["progress_last"]
        assert slept == pytest.approx(expect["sleeps_s"])
    replay.done()


# --- webhooks --------------------------------------------------------------------------------


def webhook_body(case: dict[str, Any]) -> bytes:
    if "body_base64" in case:
        return base64.b64decode(case["body_base64"])
    return case["body"].encode()


@pytest.mark.parametrize("case", load("webhooks.json")["cases"], ids=lambda c: c["name"])
def test_verify_webhook_matches_vector(case: dict[str, Any]) -> None:
    kwargs: dict[str, Any] = {"now": datetime.fromtimestamp(case["now"], UTC)}
    if "tolerance_s" in case:
        kwargs["tolerance_s"] = case["tolerance_s"]
    verify = partial(
        ms.verify_webhook, webhook_body(case), case["headers"], case["secret"], **kwargs
    )

    if "event" in case["expect"]:
        assert verify() == case["expect"]["event"]
    else:
        with pytest.raises(ms.WebhookVerificationError) as info:
            verify()
        assert info.value.code == case["expect"]["error"]
        assert info.value.status is None
        assert info.value.detail


def test_webhook_vectors_are_what_the_reference_library_makes() -> None:
    assert (VECTORS / "webhooks.json").read_text() == webhook_vectors.render(), (
        "clients/vectors/webhooks.json is stale: run `.venv/bin/python -m "
        "tests.clients.webhook_vectors` and commit it"
    )


def test_verify_webhook_reads_the_clock_by_default() -> None:
    doc = load("webhooks.json")
    fresh = next(c for c in doc["cases"] if c["name"].startswith("a threshold notification"))
    body, secret, msg_id = fresh["body"].encode(), fresh["secret"], fresh["headers"]["webhook-id"]
    now = int(time.time())

    event = ms.verify_webhook(body, signed_headers([secret], msg_id, now, body), secret)
    assert event == fresh["expect"]["event"]
    with pytest.raises(ms.WebhookVerificationError) as info:
        ms.verify_webhook(body, signed_headers([secret], msg_id, now - 3600, body), secret)
    assert info.value.code == ms.WebhookErrorCode.TIMESTAMP_TOO_OLD


# --- the Python client's own behaviour beyond the vectors ------------------------------------


def accept_all(request: httpx.Request) -> httpx.Response:
    events = json.loads(request.read())
    results = [{"index": i, "id": e["id"], "status": "accepted"} for i, e in enumerate(events)]
    return httpx.Response(
        202, json={"accepted": len(events), "rejected": 0, "failed": 0, "results": results}
    )


def test_timer_sends_what_is_buffered_without_flush() -> None:
    arrived = threading.Event()
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        if sum(len(json.loads(b)) for b in bodies) == 3:  # one batch, or more if adding was slow
            arrived.set()
        return accept_all(request)

    reported: list[BatchResult] = []
    client = MeterstreamClient(
        "http://api.test",
        "ms_x",
        transport=httpx.MockTransport(handler),
        flush_interval_s=0.02,
        on_result=reported.append,
    )
    for i in range(3):
        client.add(make_event("api_calls", "acct-1", {"i": i}))

    assert arrived.wait(60)  # no flush() or close() was needed
    client.close()
    assert sum(r.accepted for r in reported) == 3


def test_timer_failure_is_reported_and_raised_once_by_the_next_flush() -> None:
    reported: list[BatchResult] = []
    done = threading.Event()

    def report(result: BatchResult) -> None:
        reported.append(result)
        done.set()

    client = MeterstreamClient(
        "http://api.test",
        "ms_x",
        transport=httpx.MockTransport(
            lambda _r: httpx.Response(403, json={"error": "FORBIDDEN", "detail": "no scope"})
        ),
        flush_interval_s=0.01,
        on_result=report,
    )
    client.add(make_event("api_calls", "acct-1", {}, event_id="e-1"))
    assert done.wait(60)

    with pytest.raises(ms.PermissionDeniedError):
        client.flush()
    assert [(r.id, r.status) for r in reported[0].results] == [("e-1", "failed")]
    client.close()  # raised once
