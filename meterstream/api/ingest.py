"""`POST /v1/events`: one CloudEvent or a batch, checked synchronously, acknowledged once in Kafka.

Order of checks: token and scope, request size and media type, each event's envelope
(`parse_envelope`), the account's owner, the account's rate, the account's daily quota. Then
the accepted events go to Kafka (key: account id, value: the event's bytes as sent), and the
answer is 202 only when the broker has acknowledged every one of them; otherwise 503.

While PostgreSQL is down, tokens, owners and quotas are decided from the last good state
(meterstream/api/outage.py); an event whose account cannot be decided that way is `failed`
(not sent), and the answer is 503: send the same request again.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from meterstream.api.auth import Scope
from meterstream.api.context import ApiContext, authorize, context
from meterstream.api.envelope import accepted_ids
from meterstream.api.errors import ApiError, ErrorCode
from meterstream.api.outage import Reservation
from meterstream.api.parsing import Piece, split_batch, split_objects
from meterstream.api.producer import Delivery
from meterstream.api.ratelimit import Limit, retry_after
from meterstream.config import ApiSettings
from meterstream.events import Envelope, parse_envelope
from meterstream.rules.reasons import ReasonCode, Rejection

router = APIRouter(tags=["ingest"])

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


# Checked and Accepted are NamedTuples, not frozen dataclasses: a request makes one of each per
# event, and a frozen dataclass costs about twice as much to build.


class Accepted(NamedTuple):
    """An event whose envelope passed the checks: what the API needs of it."""

    event_id: str
    account_id: str


class Deferred(NamedTuple):
    """An event whose account could not be checked (PostgreSQL down): not sent, send it again."""

    event_id: str
    account_id: str


class Checked(NamedTuple):
    """One event of a request after the synchronous checks."""

    index: int
    raw: bytes
    result: Accepted | Rejection | Deferred


def media_type(content_type: str | None) -> str:
    """The media type without parameters, lower case.

    >>> media_type("Application/CloudEvents-Batch+JSON; charset=utf-8")
    'application/cloudevents-batch+json'
    """
    return (content_type or "").split(";", 1)[0].strip().lower()


def _batch_kind(content_type: str | None, body: bytes) -> str:
    kind = media_type(content_type)
    if kind == "application/json":
        return BATCH if body.lstrip()[:1] == b"[" else SINGLE
    return kind


def _check_count(count: int, api: ApiSettings) -> None:
    if not count:
        raise ApiError(400, ErrorCode.BAD_REQUEST, "the batch is empty")
    if count > api.max_events_per_request:
        raise ApiError(
            413,
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"{count} events in one request; at most {api.max_events_per_request}",
        )


def split_request(content_type: str | None, body: bytes, api: ApiSettings) -> list[Piece]:
    """The events of a request body, or raise `ApiError` (400, 413, 415). Never anything else.

    `application/cloudevents+json` is one event, `application/cloudevents-batch+json` a JSON
    array of events; plain `application/json` is a batch when it starts with `[`.
    """
    kind = _batch_kind(content_type, body)
    if kind == SINGLE:
        if len(body) > api.max_event_bytes:
            return [Piece(0, len(body), body[:200], too_large=True)]
        return [Piece(0, len(body), body)]
    if kind != BATCH:
        raise ApiError(
            415,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"send {SINGLE}, {BATCH} or application/json, not {kind or 'no Content-Type'!r}",
        )
    pieces = split_batch(body, api.max_event_bytes)
    if not isinstance(pieces, list):
        raise ApiError(
            400,
            ErrorCode.BAD_REQUEST,
            f"the batch is not a JSON array of events: {pieces.detail} (at byte {pieces.offset})",
            extra={"reason": ReasonCode.MALFORMED_JSON},
        )
    _check_count(len(pieces), api)
    return pieces


def _check(raw: bytes) -> Accepted | Rejection:
    envelope = parse_envelope(raw)
    if isinstance(envelope, Envelope):
        return Accepted(envelope.event_id, envelope.account_id)
    return envelope


def check_envelopes(pieces: list[Piece]) -> list[Checked]:
    """The synchronous envelope checks of each event (`parse_envelope`)."""
    too_large = Rejection(
        ReasonCode.EVENT_TOO_LARGE, "the event is larger than api.max_event_bytes"
    )
    return [
        Checked(index, piece.raw, too_large if piece.too_large else _check(piece.raw))
        for index, piece in enumerate(pieces)
    ]


def check_request(content_type: str | None, body: bytes, api: ApiSettings) -> list[Checked]:
    """`check_envelopes(split_request(...))`, faster for the usual batch of objects.

    Such a batch is split and parsed in one pass (`split_objects`), and an event that passes
    `accepted_ids` is not parsed again; anything else takes the general path.
    """
    if _batch_kind(content_type, body) == BATCH:
        batch = split_objects(body, api.max_event_bytes)
        if batch is not None:
            raws, docs = batch
            _check_count(len(raws), api)
            out = []
            for index, (raw, doc) in enumerate(zip(raws, docs, strict=True)):
                ids = accepted_ids(doc)
                out.append(Checked(index, raw, _check(raw) if ids is None else Accepted(*ids)))
            return out
    return check_envelopes(split_request(content_type, body, api))


def event_id_of(checked: Checked) -> str | None:
    """The event's id when it has a string one, for the per-event result."""
    if isinstance(checked.result, Accepted):
        return checked.result.event_id
    if checked.result.event_id is not None:
        return checked.result.event_id
    if checked.result.code in (ReasonCode.MALFORMED_JSON, ReasonCode.EVENT_TOO_LARGE):
        return None
    try:
        doc = json.loads(checked.raw)
    except (ValueError, RecursionError):
        return None
    value = doc.get("id") if isinstance(doc, dict) else None
    return value[:256] if isinstance(value, str) else None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than `limit` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, ErrorCode.PAYLOAD_TOO_LARGE, f"at most {limit} bytes per request")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, ErrorCode.PAYLOAD_TOO_LARGE, f"at most {limit} bytes per request")
        chunks.append(chunk)
    return b"".join(chunks)


def not_in_organisation(account: str, org_id: str) -> Rejection:
    """The rejection of an event for an account of another organisation."""
    return Rejection(
        ReasonCode.ACCOUNT_NOT_IN_ORGANISATION,
        f"account {account!r} is not an account of organisation {org_id!r}",
    )


def over_quota(account: str) -> Rejection:
    """The rejection of an event beyond its account's daily quota."""
    return Rejection(ReasonCode.QUOTA_EXCEEDED, f"account {account!r} used its daily event quota")


def _reject(checked: Checked, rejection: Rejection) -> Checked:
    return Checked(checked.index, checked.raw, rejection)


#: The per-event detail of a `Deferred` event.
DEFERRED_DETAIL = (
    "PostgreSQL is unavailable and this account's owner or quota was not read recently enough"
    " to decide; send the same request again"
)


def _defer(checked: Checked) -> Checked:
    assert isinstance(checked.result, Accepted)  # noqa: S101 - only accepted events are deferred
    return Checked(checked.index, checked.raw, Deferred(*checked.result))


async def apply_tenancy_and_limits(
    ctx: ApiContext, org_id: str, checked: list[Checked], day: datetime
) -> tuple[list[Checked], Reservation]:
    """Reject events of other organisations' accounts and over quota; 429 if over the rate.

    The quota is reserved for exactly the events that stay accepted. Events whose account
    cannot be decided (PostgreSQL down, nothing recent enough known) become `Deferred`.
    """
    per_account = Counter(c.result.account_id for c in checked if isinstance(c.result, Accepted))
    if not per_account:
        return checked, Reservation({})
    answer = await ctx.accounts.ownership(org_id, per_account)
    strangers = per_account.keys() - answer.owned - answer.undecided
    if strangers or answer.undecided:
        checked = [
            _reject(c, not_in_organisation(c.result.account_id, org_id))
            if isinstance(c.result, Accepted) and c.result.account_id in strangers
            else _defer(c)
            if isinstance(c.result, Accepted) and c.result.account_id in answer.undecided
            else c
            for c in checked
        ]
        for account in strangers | answer.undecided:
            del per_account[account]
    if not per_account:
        return checked, Reservation({})
    limit = ctx.account_limit()
    wanted: dict[Hashable, tuple[Limit, float]] = {
        ("account", account): (limit, n) for account, n in per_account.items()
    }
    wait = ctx.limiter.try_take(wanted)
    if wait > 0:
        ctx.metrics.rate_limited.labels("account").inc()
        raise ApiError(
            429,
            ErrorCode.RATE_LIMITED,
            "an account in this request sends events faster than its rate limit",
            headers={"Retry-After": retry_after(wait)},
        )
    reservation = await ctx.quota.reserve(
        dict(per_account), day.date(), ctx.settings.api.account_daily_event_quota
    )
    grants = reservation.grants
    if not reservation.undecided and all(
        grants.get(account, 0) >= n for account, n in per_account.items()
    ):
        return checked, reservation  # the usual case: every event is within its quota
    left = dict(grants)  # reserved for exactly the events accepted below
    out = []
    for c in checked:
        if isinstance(c.result, Accepted):
            account = c.result.account_id
            if account in reservation.undecided:
                out.append(_defer(c))
                continue
            if left.get(account, 0) <= 0:
                out.append(_reject(c, over_quota(account)))
                continue
            left[account] -= 1
        out.append(c)
    return out, reservation


def _results(
    checked: list[Checked], failed: dict[int, str]
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Each event's result, and the rejections counted by reason.

    `failed` is keyed by position among the accepted events (the order they were sent in).
    """
    results: list[dict[str, Any]] = []
    rejected = Counter[str]()
    position = 0
    for c in checked:
        result = c.result
        if isinstance(result, Deferred):
            item = {
                "index": c.index,
                "id": result.event_id,
                "status": "failed",
                "detail": DEFERRED_DETAIL,
            }
        elif isinstance(result, Accepted):
            if position in failed:
                item = {
                    "index": c.index,
                    "id": result.event_id,
                    "status": "failed",
                    "detail": failed[position],
                }
            else:
                item = {"index": c.index, "id": result.event_id, "status": "accepted"}
            position += 1
        else:
            rejected[str(result.code)] += 1
            item = {
                "index": c.index,
                "id": event_id_of(c),
                "status": "rejected",
                "reason": result.code,
                "detail": result.detail,
            }
        results.append(item)
    return results, rejected


def _json(
    content: dict[str, Any], status_code: int, headers: dict[str, str] | None = None
) -> Response:
    """The JSON answer `JSONResponse` would send, rendered by orjson.

    For a 1,000-event batch's results orjson is several times faster than `json.dumps`.
    """
    try:
        body = orjson.dumps(content)
    except TypeError:  # e.g. a lone surrogate in an id: let JSONResponse decide
        return JSONResponse(content, status_code=status_code, headers=headers)
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


@router.post(
    "/v1/events",
    status_code=202,
    summary="Send one CloudEvent or a batch",
    responses={
        202: {"description": "At least one event accepted and acknowledged by Kafka"},
        400: {"description": "The batch is not a JSON array"},
        401: {"description": "No valid token"},
        403: {"description": "The token lacks ingest:write"},
        413: {"description": "Too many events or bytes"},
        415: {"description": "Unsupported Content-Type"},
        422: {"description": "No event was accepted (each result says why)"},
        429: {"description": "Rate limit; see Retry-After"},
        503: {
            "description": "Kafka did not acknowledge, or PostgreSQL is down and an event's"
            " token, account or quota was not read recently enough to decide: retry with the"
            " same event ids"
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                SINGLE: {"schema": {"type": "object"}},
                BATCH: {"schema": {"type": "array", "items": {"type": "object"}}},
                "application/json": {"schema": {}},
            },
        }
    },
)
async def post_events(request: Request) -> Response:
    """Check each event's envelope now and send the accepted ones to Kafka.

    The answer lists every event: `accepted`, `rejected` (with its reason code) or, with a
    503, `failed` (not acknowledged by Kafka, or not decidable while PostgreSQL is down: send
    the whole request again with the same ids; the pipeline drops the duplicates of events
    that did get through).
    """
    ctx = context(request)
    principal = await authorize(request, Scope.INGEST_WRITE)
    api = ctx.settings.api
    body = await read_body(request, api.max_request_bytes)
    checked = check_request(request.headers.get("content-type"), body, api)
    now = datetime.now(UTC)
    checked, reservation = await apply_tenancy_and_limits(ctx, principal.org_id, checked, now)
    accepted = [c.result for c in checked if isinstance(c.result, Accepted)]
    deferred = sum(1 for c in checked if isinstance(c.result, Deferred))
    delivery = Delivery()
    if accepted:
        records = [
            (c.result.account_id.encode(), c.raw) for c in checked if isinstance(c.result, Accepted)
        ]
        delivery = await (await ctx.producer.enqueue(ctx.topic, records))
    results, rejected = _results(checked, delivery.failed)
    summary = {
        "accepted": len(accepted) - len(delivery.failed),
        "rejected": sum(rejected.values()),
        "failed": len(delivery.failed) + deferred,
        "results": results,
    }
    ctx.metrics.count_events(summary["accepted"], dict(rejected), summary["failed"])
    if delivery.failed:
        ctx.metrics.kafka_failures.inc()
        unused = Counter(accepted[i].account_id for i in delivery.failed)
        await ctx.quota.release(reservation, dict(unused), now.date())
        return _json(
            {
                "error": ErrorCode.KAFKA_UNAVAILABLE,
                "detail": "Kafka did not acknowledge every event; retry with the same ids",
                **summary,
            },
            503,
            {"Retry-After": "5"},
        )
    if deferred:
        return _json(
            {
                "error": ErrorCode.DATABASE_UNAVAILABLE,
                "detail": f"{deferred} events not sent: {DEFERRED_DETAIL}",
                **summary,
            },
            503,
            {"Retry-After": "5"},
        )
    return _json(summary, 202 if accepted else 422)
