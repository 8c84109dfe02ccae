"""`POST /v1/events`: one CloudEvent or a batch, checked synchronously, acknowledged once in Kafka.

Order of checks: token and scope, request size and media type, each event's envelope
(`parse_envelope`), the account's owner, the account's rate, the account's daily quota. Then
the accepted events go to Kafka (key: account id, value: the event's bytes as sent), and the
answer is 202 only when the broker has acknowledged every one of them; otherwise 503.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from meterstream.api.auth import Scope
from meterstream.api.context import ApiContext, authorize, context
from meterstream.api.errors import ApiError, ErrorCode
from meterstream.api.parsing import Piece, split_batch
from meterstream.api.producer import Delivery
from meterstream.api.ratelimit import Limit, retry_after
from meterstream.config import ApiSettings
from meterstream.events import Envelope, parse_envelope
from meterstream.rules.reasons import ReasonCode, Rejection

router = APIRouter(tags=["ingest"])

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


@dataclass(frozen=True, slots=True)
class Checked:
    """One event of a request after the synchronous checks."""

    index: int
    raw: bytes
    result: Envelope | Rejection


def media_type(content_type: str | None) -> str:
    """The media type without parameters, lower case.

    >>> media_type("Application/CloudEvents-Batch+JSON; charset=utf-8")
    'application/cloudevents-batch+json'
    """
    return (content_type or "").split(";", 1)[0].strip().lower()


def split_request(content_type: str | None, body: bytes, api: ApiSettings) -> list[Piece]:
    """The events of a request body, or raise `ApiError` (400, 413, 415). Never anything else.

    `application/cloudevents+json` is one event, `application/cloudevents-batch+json` a JSON
    array of events; plain `application/json` is a batch when it starts with `[`.
    """
    kind = media_type(content_type)
    if kind == "application/json":
        kind = BATCH if body.lstrip()[:1] == b"[" else SINGLE
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
    if not pieces:
        raise ApiError(400, ErrorCode.BAD_REQUEST, "the batch is empty")
    if len(pieces) > api.max_events_per_request:
        raise ApiError(
            413,
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"{len(pieces)} events in one request; at most {api.max_events_per_request}",
        )
    return pieces


def check_envelopes(pieces: list[Piece]) -> list[Checked]:
    """The synchronous envelope checks of each event (`parse_envelope`)."""
    out = []
    for index, piece in enumerate(pieces):
        if piece.too_large:
            result: Envelope | Rejection = Rejection(
                ReasonCode.EVENT_TOO_LARGE, "the event is larger than api.max_event_bytes"
            )
        else:
            result = parse_envelope(piece.raw)
        out.append(Checked(index, piece.raw, result))
    return out


def event_id_of(checked: Checked) -> str | None:
    """The event's id when it has a string one, for the per-event result."""
    if isinstance(checked.result, Envelope):
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


def _reject(checked: Checked, code: ReasonCode, detail: str) -> Checked:
    return Checked(checked.index, checked.raw, Rejection(code, detail))


async def apply_tenancy_and_limits(
    ctx: ApiContext, org_id: str, checked: list[Checked], day: datetime
) -> list[Checked]:
    """Reject events of other organisations' accounts and over quota; 429 if over the rate.

    The quota is reserved for exactly the events that stay accepted.
    """
    accounts = {c.result.account_id for c in checked if isinstance(c.result, Envelope)}
    owned = await ctx.accounts.owned(org_id, accounts) if accounts else set()
    checked = [
        _reject(
            c,
            ReasonCode.ACCOUNT_NOT_IN_ORGANISATION,
            f"account {c.result.account_id!r} is not an account of organisation {org_id!r}",
        )
        if isinstance(c.result, Envelope) and c.result.account_id not in owned
        else c
        for c in checked
    ]
    per_account = Counter(c.result.account_id for c in checked if isinstance(c.result, Envelope))
    if not per_account:
        return checked
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
    grants = await ctx.store.reserve_quota(
        dict(per_account), day.date(), ctx.settings.api.account_daily_event_quota
    )
    left = dict(grants)  # reserved for exactly the events accepted below
    out = []
    for c in checked:
        if isinstance(c.result, Envelope):
            account = c.result.account_id
            if left.get(account, 0) <= 0:
                out.append(
                    _reject(
                        c,
                        ReasonCode.QUOTA_EXCEEDED,
                        f"account {account!r} used its daily event quota",
                    )
                )
                continue
            left[account] -= 1
        out.append(c)
    return out


def _result(c: Checked, failed: dict[int, str], position: dict[int, int]) -> dict[str, Any]:
    item: dict[str, Any] = {"index": c.index, "id": event_id_of(c)}
    if isinstance(c.result, Rejection):
        item |= {"status": "rejected", "reason": c.result.code, "detail": c.result.detail}
    elif position[c.index] in failed:
        item |= {"status": "failed", "detail": failed[position[c.index]]}
    else:
        item["status"] = "accepted"
    return item


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
        503: {"description": "Kafka did not acknowledge; retry with the same event ids"},
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
async def post_events(request: Request) -> JSONResponse:
    """Check each event's envelope now and send the accepted ones to Kafka.

    The answer lists every event: `accepted`, `rejected` (with its reason code) or, with a
    503, `failed` (not acknowledged by Kafka: send the whole request again with the same
    ids; the pipeline drops the duplicates of events that did get through).
    """
    ctx = context(request)
    principal = await authorize(request, Scope.INGEST_WRITE)
    api = ctx.settings.api
    body = await read_body(request, api.max_request_bytes)
    pieces = split_request(request.headers.get("content-type"), body, api)
    now = datetime.now(UTC)
    checked = await apply_tenancy_and_limits(ctx, principal.org_id, check_envelopes(pieces), now)
    accepted = [c for c in checked if isinstance(c.result, Envelope)]
    position = {c.index: i for i, c in enumerate(accepted)}
    delivery = Delivery()
    if accepted:
        records = [
            (c.result.account_id.encode(), c.raw)
            for c in accepted
            if isinstance(c.result, Envelope)
        ]
        delivery = await (await ctx.producer.enqueue(ctx.topic, records))
    rejected = Counter(str(c.result.code) for c in checked if isinstance(c.result, Rejection))
    results = [_result(c, delivery.failed, position) for c in checked]
    summary = {
        "accepted": len(accepted) - len(delivery.failed),
        "rejected": sum(rejected.values()),
        "failed": len(delivery.failed),
        "results": results,
    }
    ctx.metrics.count_events(summary["accepted"], dict(rejected), len(delivery.failed))
    if delivery.failed:
        ctx.metrics.kafka_failures.inc()
        unused = Counter(
            accepted[i].result.account_id
            for i in delivery.failed
            if isinstance(accepted[i].result, Envelope)
        )
        await ctx.store.release_quota(dict(unused), now.date())
        return JSONResponse(
            {
                "error": ErrorCode.KAFKA_UNAVAILABLE,
                "detail": "Kafka did not acknowledge every event; retry with the same ids",
                **summary,
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )
    return JSONResponse(summary, status_code=202 if accepted else 422)
