"""`/v1/corrections`, `/v1/audit` and erasure: corrections of counted events over HTTP.

Voids and amends need `usage:correct`; reading corrections and the audit trail `usage:read`
(`admin` implies both). Every route works within the token's organisation: another
organisation's account is 404, exactly like one that does not exist, and a list shows only the
organisation's rows. The work is `meterstream.corrections.service`'s, the same as the CLI's,
run in a thread; the token id is recorded as who did it. docs/corrections.md has the shapes.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from meterstream.api.auth import Principal, Scope
from meterstream.api.context import ApiContext, authorize, context
from meterstream.api.errors import ApiError, ErrorCode
from meterstream.api.reads import decode_cursor, encode_cursor, usage_reader
from meterstream.corrections.model import CorrectionError, Refusal
from meterstream.errors import MeterstreamError

router = APIRouter(tags=["corrections"])

#: The API's error code of each refusal (the status is the refusal's own).
ERROR_CODES = {
    Refusal.NOT_COUNTED: ErrorCode.NOT_COUNTED,
    Refusal.ALREADY_VOIDED: ErrorCode.ALREADY_VOIDED,
    Refusal.INVALID_AMENDMENT: ErrorCode.INVALID_AMENDMENT,
    Refusal.ACCOUNT_ERASED: ErrorCode.ACCOUNT_ERASED,
    Refusal.BAD_REQUEST: ErrorCode.BAD_REQUEST,
    Refusal.BUSY: ErrorCode.CONFLICT,
    Refusal.NOT_FOUND: ErrorCode.NOT_FOUND,
    Refusal.NO_ARCHIVE: ErrorCode.NO_ARCHIVE,
}


async def corrector(request: Request) -> Principal:
    """The caller, who must hold `usage:correct`."""
    return await authorize(request, Scope.USAGE_CORRECT)


Corrector = Annotated[Principal, Depends(corrector)]
Reader = Annotated[Principal, Depends(usage_reader)]
Reason = Annotated[str, Field(min_length=1, max_length=1000, description="why; kept forever")]


class VoidRequest(BaseModel):
    """Void one counted event (`event_id`), or a meter's counted events in [`from`, `to`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    account: str = Field(max_length=128)
    reason: Reason
    event_id: str | None = Field(default=None, max_length=256)
    meter: str | None = Field(default=None, max_length=128)
    start: datetime | None = Field(
        default=None, alias="from", description="event time, with offset"
    )
    end: datetime | None = Field(default=None, alias="to", description="excluded")


class ErasureRequest(BaseModel):
    """Why the account's personal data is erased (kept in the audit trail)."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason


class AmendRequest(BaseModel):
    """The counted event's new content: a full CloudEvent with the same id (key) and meter."""

    model_config = ConfigDict(extra="forbid")

    event: dict[str, Any]
    reason: Reason


async def _owned(ctx: ApiContext, principal: Principal, account: str) -> None:
    if not await ctx.accounts.owned(principal.org_id, [account]):
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no account {account!r} in your organisation")


def refusal(exc: CorrectionError) -> ApiError:
    """The API's answer to a refused correction or erasure."""
    return ApiError(exc.code.status, ERROR_CODES[exc.code], exc.detail)


async def _run(call: Any, *args: Any, **kwargs: Any) -> Any:
    """A service call in a worker thread; refusals become their API errors."""
    try:
        return await asyncio.to_thread(call, *args, **kwargs)
    except CorrectionError as exc:
        raise refusal(exc) from exc
    except MeterstreamError as exc:
        raise ApiError(400, ErrorCode.BAD_REQUEST, str(exc)) from exc


@router.post("/v1/corrections/void", status_code=201, summary="Void counted events")
async def void(
    request: Request, principal: Corrector, body: Annotated[VoidRequest, Body()]
) -> dict[str, Any]:
    """Take counted events out of their figures: one (`event_id`) or a meter's in a time range.

    A range is resolved now to the events counted in it (events sent later are counted).
    201 with one correction per event; 404 NOT_COUNTED, 409 ALREADY_VOIDED.
    """
    from meterstream.corrections import service  # noqa: PLC0415 - pyarrow is heavy

    ctx = context(request)
    await _owned(ctx, principal, body.account)
    actor = service.Actor(principal.token_id, principal.org_id)
    if body.event_id and not (body.meter or body.start or body.end):
        result = await _run(
            service.void_event, ctx.settings, actor, body.account, body.event_id, body.reason
        )
    elif body.meter and body.start and body.end and not body.event_id:
        result = await _run(
            service.void_range,
            ctx.settings,
            actor,
            body.account,
            meter=body.meter,
            start=body.start,
            end=body.end,
            reason=body.reason,
        )
    else:
        msg = "give event_id, or meter with from and to"
        raise ApiError(400, ErrorCode.BAD_REQUEST, msg)
    return result.describe()  # type: ignore[no-any-return]


@router.post("/v1/corrections/amend", status_code=201, summary="Amend a counted event")
async def amend(
    request: Request, principal: Corrector, body: Annotated[AmendRequest, Body()]
) -> dict[str, Any]:
    """Replace a counted event's content by `event` (same id or key, meter, billing period).

    201 with the correction; 422 INVALID_AMENDMENT says which rule the content breaks.
    """
    from meterstream.corrections import service  # noqa: PLC0415

    ctx = context(request)
    account = body.event.get("subject")
    if not isinstance(account, str):
        raise ApiError(422, ErrorCode.INVALID_AMENDMENT, "event.subject (the account) is missing")
    await _owned(ctx, principal, account)
    actor = service.Actor(principal.token_id, principal.org_id)
    payload = orjson.dumps(body.event)
    result = await _run(service.amend_event, ctx.settings, actor, payload, body.reason)
    return result.describe()  # type: ignore[no-any-return]


def _page(ctx: ApiContext, limit: int) -> int:
    if limit > ctx.settings.api.max_page_size:
        msg = f"limit is at most {ctx.settings.api.max_page_size}"
        raise ApiError(400, ErrorCode.BAD_REQUEST, msg)
    return limit


def _paged(rows: list[dict[str, Any]], limit: int, position: str) -> dict[str, Any]:
    """A page of `limit` rows (fetched `limit + 1`), its cursor at the last row's `position`."""
    page = rows[:limit]
    more = len(rows) > limit and page
    return {"items": page, "next_cursor": encode_cursor([page[-1][position]]) if more else None}


@router.get("/v1/corrections", summary="Your organisation's corrections")
async def list_corrections(
    request: Request,
    principal: Reader,
    account: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Every correction of your organisation's accounts, in the order they were made."""
    from meterstream.corrections import service  # noqa: PLC0415

    ctx = context(request)
    if account is not None:
        await _owned(ctx, principal, account)
    limit = _page(ctx, limit)
    after = decode_cursor(cursor, (int,))[0] if cursor else None
    rows = await asyncio.to_thread(
        service.list_corrections,
        ctx.settings,
        org_id=principal.org_id,
        account=account,
        after_seq=after,
        limit=limit + 1,
    )
    return _paged(rows, limit, "seq")


@router.get("/v1/audit", summary="Your organisation's audit trail")
async def list_audit(
    request: Request,
    principal: Reader,
    account: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Who corrected or erased what, when and why, for your organisation's accounts."""
    from meterstream.corrections import service  # noqa: PLC0415

    ctx = context(request)
    limit = _page(ctx, limit)
    after = decode_cursor(cursor, (int,))[0] if cursor else None
    rows = await asyncio.to_thread(
        service.audit_entries,
        ctx.settings,
        org_id=principal.org_id,
        account=account,
        after_id=after,
        limit=limit + 1,
    )
    return _paged(rows, limit, "audit_id")


@router.post("/v1/accounts/{account}/erasure", summary="Erase an account's personal data")
async def erase(
    request: Request,
    account: str,
    body: Annotated[ErasureRequest, Body()],
) -> dict[str, Any]:
    """Remove the account's personal data from every store (needs `admin`).

    An organisation's admin token erases its own accounts; the operator's, any account. The
    billing figures are treated as the deployment says (`erasure.figures`). The answer counts
    what was erased per store, and names tables that still mention the account (`remaining`:
    events still on their way; erase again once the account is quiet).
    """
    from meterstream.corrections.erasure import erase_account  # noqa: PLC0415

    principal = await authorize(request, Scope.ADMIN)
    ctx = context(request)
    if not principal.operator:
        await _owned(ctx, principal, account)
    result = await _run(
        erase_account,
        ctx.settings,
        account,
        reason=body.reason,
        actor_who=principal.token_id,
        actor_org=None if principal.operator else principal.org_id,
    )
    return result.describe()  # type: ignore[no-any-return]
