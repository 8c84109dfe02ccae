"""`GET /v1/usage` and `GET /v1/rejections`: a token's own organisation's rows, paginated.

Pages are keyset-paginated: `next_cursor` is an opaque string naming the last row's key;
pass it back as `cursor` to get the rows after it. Quantities are decimal strings (exact).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from meterstream.api.auth import Principal, Scope
from meterstream.api.context import ApiContext, authorize, context
from meterstream.api.errors import ApiError, ErrorCode

router = APIRouter(tags=["reads"])

USAGE_KEY = (str, str, date, str)
REJECTION_KEY = (datetime, str, int, int)


async def usage_reader(request: Request) -> Principal:
    """The caller, who must hold `usage:read`."""
    return await authorize(request, Scope.USAGE_READ)


def encode_cursor(key: list[Any]) -> str:
    """An opaque cursor for a row key.

    >>> decode_cursor(encode_cursor(["acct-1", "api_calls", "2026-10-01", ""]))
    ['acct-1', 'api_calls', '2026-10-01', '']
    >>> decode_cursor(encode_cursor(["acct-1", "api_calls", "2026-10-01", ""]), USAGE_KEY)[2]
    datetime.date(2026, 10, 1)
    """
    return base64.urlsafe_b64encode(json.dumps(key, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: tuple[type, ...] = (str, str, str, str)) -> list[Any]:
    """The row key in a cursor, checked against the key's types (`date`, `datetime`, ...).

    Raises `ApiError` (400) for anything this API did not hand out.
    """
    bad = ApiError(400, ErrorCode.BAD_REQUEST, "cursor is not one this API returned")
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError) as exc:
        raise bad from exc
    if not isinstance(key, list) or len(key) != len(kinds):
        raise bad
    out: list[Any] = []
    for value, kind in zip(key, kinds, strict=True):
        try:
            if kind is date and isinstance(value, str):
                out.append(date.fromisoformat(value))
            elif kind is datetime and isinstance(value, str):
                moment = datetime.fromisoformat(value)
                if moment.tzinfo is None:
                    raise bad
                out.append(moment)
            elif kind in (str, int) and type(value) is kind and (kind is str or abs(value) < 2**62):
                out.append(value)
            else:
                raise bad
        except ValueError as exc:
            raise bad from exc
    return out


async def _check_account(ctx: ApiContext, org_id: str, account: str | None) -> None:
    if account is not None and not await ctx.accounts.owned(org_id, [account]):
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no account {account!r} in your organisation")


def _limit(ctx: ApiContext, limit: int) -> int:
    if limit > ctx.settings.api.max_page_size:
        raise ApiError(
            400, ErrorCode.BAD_REQUEST, f"limit is at most {ctx.settings.api.max_page_size}"
        )
    return limit


def _quantity(value: Decimal) -> str:
    return f"{value.normalize():f}"


@router.get("/v1/usage", summary="Usage totals per account, meter and billing period")
async def get_usage(
    request: Request,
    *,
    principal: Annotated[Principal, Depends(usage_reader)],
    account: Annotated[str | None, Query(max_length=128)] = None,
    meter: Annotated[str | None, Query(max_length=128)] = None,
    period_from: Annotated[date | None, Query(description="first period_start to include")] = None,
    period_to: Annotated[date | None, Query(description="last period_start to include")] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Rows of `usage_aggregates` for your organisation's accounts, in key order."""
    ctx = context(request)
    await _check_account(ctx, principal.org_id, account)
    limit = _limit(ctx, limit)
    after = decode_cursor(cursor, USAGE_KEY) if cursor else None
    filters = {
        "account": account,
        "meter": meter,
        "period_from": period_from,
        "period_to": period_to,
    }
    rows = await ctx.store.usage_page(principal.org_id, filters, after, limit + 1)
    page = rows[:limit]
    items = [
        {
            "account_id": r["account_id"],
            "meter": r["meter"],
            "period_start": r["period_start"].isoformat(),
            "dimensions": r["dimensions"],
            "quantity": _quantity(r["quantity"]),
            "event_count": r["event_count"],
            "first_event_at": r["first_event_at"].isoformat(),
            "last_event_at": r["last_event_at"].isoformat(),
            "last_arrived_at": r["last_arrived_at"].isoformat(),
            "updated_at": r["updated_at"].isoformat(),
        }
        for r in page
    ]
    last = page[-1] if page else None
    next_cursor = (
        encode_cursor(
            [
                last["account_id"],
                last["meter"],
                last["period_start"].isoformat(),
                last["dimensions"],
            ]
        )
        if last is not None and len(rows) > limit
        else None
    )
    return {"items": items, "next_cursor": next_cursor}


@router.get("/v1/rejections", summary="The validation log of your accounts")
async def get_rejections(
    request: Request,
    *,
    principal: Annotated[Principal, Depends(usage_reader)],
    account: Annotated[str | None, Query(max_length=128)] = None,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="arrived at or after")] = None,
    until: Annotated[datetime | None, Query(description="arrived before")] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Rows of `rejected_events` whose subject is one of your accounts, oldest arrival first.

    A record that is not a JSON object with a string `subject` belongs to no account and is
    shown to nobody here; the operator sees it with `meterstream rejections`.
    """
    ctx = context(request)
    await _check_account(ctx, principal.org_id, account)
    limit = _limit(ctx, limit)
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise ApiError(400, ErrorCode.BAD_REQUEST, f"{name} needs a UTC offset (e.g. Z)")
    after = decode_cursor(cursor, REJECTION_KEY) if cursor else None
    filters = {"account": account, "reason": reason, "since": since, "until": until}
    rows = await ctx.store.rejections_page(principal.org_id, filters, after, limit + 1)
    page = rows[:limit]
    items = [
        {
            "account_id": r["account_id"],
            "reason": r["reason_code"],
            "detail": r["detail"],
            "raw_payload": r["raw_payload"],
            "arrived_at": r["arrived_at"].isoformat(),
            "rejected_at": r["rejected_at"].isoformat(),
            "source": {
                "topic": r["source_topic"],
                "partition": r["source_partition"],
                "offset": r["source_offset"],
            },
        }
        for r in page
    ]
    last = page[-1] if page else None
    next_cursor = (
        encode_cursor(
            [
                last["arrived_at"].isoformat(),
                last["source_topic"],
                last["source_partition"],
                last["source_offset"],
            ]
        )
        if last is not None and len(rows) > limit
        else None
    )
    return {"items": items, "next_cursor": next_cursor}
