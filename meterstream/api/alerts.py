"""`/v1/alerts/...`: alert rules, webhook endpoints, notifications and the delivery log.

Reads need `alerts:read`, changes `alerts:write` (`admin` implies both). Every route works
within the token's organisation: another organisation's rule, endpoint or notification is
404, exactly like one that does not exist. Rules on the shared pipeline (job state, consumer
lag, freshness) are for the operator organisation only. The JSON shapes are in docs/alerts.md
and in the served OpenAPI document.
"""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict

from meterstream.alerts.model import (
    OPERATOR_KINDS,
    EndpointIn,
    EndpointPatch,
    RuleError,
    RuleKind,
    RulePatch,
    RuleSpec,
    UsageThresholdRule,
    parse_rule,
    usage_target,
)
from meterstream.alerts.notifications import NotificationType, cloud_event, valid_filter
from meterstream.alerts.signing import new_secret
from meterstream.alerts.store import AlertStore
from meterstream.alerts.urls import url_problem
from meterstream.api.auth import Principal, Scope
from meterstream.api.context import ApiContext, authorize, context
from meterstream.api.errors import ApiError, ErrorCode
from meterstream.api.reads import decode_cursor, encode_cursor
from meterstream.meters.registry import MeterRegistry, load_registry

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

NOTIFICATION_KEY = (datetime, str)
ATTEMPT_KEY = (int,)
MAX_FIRINGS = 1_000


async def reader(request: Request) -> Principal:
    """The caller, who must hold `alerts:read`."""
    return await authorize(request, Scope.ALERTS_READ)


async def writer(request: Request) -> Principal:
    """The caller, who must hold `alerts:write`."""
    return await authorize(request, Scope.ALERTS_WRITE)


Reader = Annotated[Principal, Depends(reader)]
Writer = Annotated[Principal, Depends(writer)]


@functools.cache
def _registry(schemas_dir: Path) -> MeterRegistry:
    return load_registry(schemas_dir)


def _store(request: Request) -> AlertStore:
    return AlertStore(context(request).store.pool)


def _not_found(what: str, ident: object) -> ApiError:
    return ApiError(404, ErrorCode.NOT_FOUND, f"no {what} {ident} in your organisation")


def _iso(value: Any) -> Any:
    return value.isoformat() if value is not None else None


def _plain(value: Any) -> Any:
    """JSON-ready: decimals as exact strings, times as ISO 8601."""
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


# --- rules ------------------------------------------------------------------------------------


def _rule_out(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row["spec"])
    out.update(
        rule_id=str(row["rule_id"]),
        kind=row["kind"],
        name=row["name"],
        enabled=row["enabled"],
        created_at=_iso(row["created_at"]),
        updated_at=_iso(row["updated_at"]),
    )
    if row["kind"] == RuleKind.USAGE_THRESHOLD:
        out["from_period"] = row["from_period"].strftime("%Y-%m")
        out["evaluated_at"] = _iso(row["evaluated_at"])
    return out


async def _checked(request: Request, principal: Principal, rule: RuleSpec) -> tuple[Any, Any]:
    """The rule's stored JSON and its evaluator columns, or a 400/403/404."""
    ctx = context(request)
    try:
        rule = parse_rule(rule.model_dump(mode="json"))
        if RuleKind(rule.kind) in OPERATOR_KINDS and not principal.operator:
            raise ApiError(
                403,
                ErrorCode.FORBIDDEN,
                f"{rule.kind} rules watch the shared pipeline: only the operator may set them",
            )
        account = getattr(rule, "account", None)
        if account is not None and not await ctx.accounts.owned(principal.org_id, [account]):
            raise ApiError(404, ErrorCode.NOT_FOUND, f"no account {account!r} in your organisation")
        target = None
        if isinstance(rule, UsageThresholdRule):
            # A day back: the period in progress in every time zone, west of UTC included.
            today = (datetime.now(UTC) - timedelta(days=1)).date()
            target = usage_target(rule, _registry(ctx.settings.schemas_dir), today)
    except RuleError as exc:
        raise ApiError(400, ErrorCode.BAD_REQUEST, str(exc)) from exc
    return rule.model_dump(mode="json"), target


@router.post("/rules", status_code=201, summary="Create an alert rule")
async def create_rule(
    request: Request, principal: Writer, rule: Annotated[RuleSpec, Body()]
) -> dict[str, Any]:
    """Create a usage-threshold or ingestion-health rule (docs/alerts.md lists the shapes).

    A usage threshold is evaluated at once against the figures already counted.
    """
    spec, target = await _checked(request, principal, rule)
    row = await _store(request).create_rule(principal.org_id, spec, target)
    if row is None:
        raise ApiError(409, ErrorCode.CONFLICT, "your organisation has the most rules allowed")
    return _rule_out(row)


@router.get("/rules", summary="Your organisation's alert rules")
async def list_rules(request: Request, principal: Reader) -> dict[str, Any]:
    """Every rule, oldest first."""
    return {"items": [_rule_out(r) for r in await _store(request).rules(principal.org_id)]}


@router.get("/rules/{rule_id}", summary="One alert rule")
async def get_rule(request: Request, principal: Reader, rule_id: uuid.UUID) -> dict[str, Any]:
    """The rule, or 404."""
    row = await _store(request).rule(principal.org_id, rule_id)
    if row is None:
        raise _not_found(what="rule", ident=rule_id)
    return _rule_out(row)


@router.put("/rules/{rule_id}", summary="Replace an alert rule")
async def replace_rule(
    request: Request, principal: Writer, rule_id: uuid.UUID, rule: Annotated[RuleSpec, Body()]
) -> dict[str, Any]:
    """Replace the rule's definition; it is evaluated afresh. Fired thresholds stay fired."""
    spec, target = await _checked(request, principal, rule)
    row = await _store(request).replace_rule(principal.org_id, rule_id, spec, target)
    if row is None:
        raise _not_found(what="rule", ident=rule_id)
    return _rule_out(row)


@router.patch("/rules/{rule_id}", summary="Rename, enable or disable an alert rule")
async def patch_rule(
    request: Request, principal: Writer, rule_id: uuid.UUID, patch: RulePatch
) -> dict[str, Any]:
    """Change `name` and/or `enabled`. A rule enabled again sees the figures counted meanwhile."""
    row = await _store(request).patch_rule(principal.org_id, rule_id, patch.name, patch.enabled)
    if row is None:
        raise _not_found(what="rule", ident=rule_id)
    return _rule_out(row)


@router.delete("/rules/{rule_id}", status_code=204, summary="Delete an alert rule")
async def delete_rule(request: Request, principal: Writer, rule_id: uuid.UUID) -> Response:
    """Delete the rule, its firings and its health state; its notifications stay."""
    if not await _store(request).delete_rule(principal.org_id, rule_id):
        raise _not_found(what="rule", ident=rule_id)
    return Response(status_code=204)


@router.get("/rules/{rule_id}/firings", summary="What an alert rule fired")
async def rule_firings(
    request: Request,
    principal: Reader,
    rule_id: uuid.UUID,
    limit: Annotated[int, Query(ge=1, le=MAX_FIRINGS)] = 100,
) -> dict[str, Any]:
    """A rule's newest firings and the health conditions that hold now.

    A usage rule's firings carry `lowered_*` when a recalculation took the figure back below.
    """
    store = _store(request)
    if await store.rule(principal.org_id, rule_id) is None:
        raise _not_found(what="rule", ident=rule_id)
    fired, conditions = await store.firings(principal.org_id, rule_id, limit)
    return {
        "firings": [{k: _plain(v) for k, v in row.items()} for row in fired],
        "conditions": [{k: _plain(v) for k, v in row.items()} for row in conditions],
    }


# --- endpoints --------------------------------------------------------------------------------


def _endpoint_out(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in row.items()}


def _check_endpoint(ctx: ApiContext, url: str | None, event_types: list[str] | None) -> None:
    if url is not None:
        problem = url_problem(url, allow_private=ctx.settings.alerts.allow_private_urls)
        if problem is not None:
            raise ApiError(400, ErrorCode.BAD_REQUEST, f"url: {problem}")
    for entry in event_types or []:
        if not valid_filter(entry):
            known = ", ".join(t.value for t in NotificationType)
            raise ApiError(
                400, ErrorCode.BAD_REQUEST, f"event_types: {entry!r} matches no type ({known})"
            )


@router.post("/endpoints", status_code=201, summary="Create a webhook endpoint")
async def create_endpoint(
    request: Request, principal: Writer, endpoint: EndpointIn
) -> dict[str, Any]:
    """Create an endpoint. The answer holds its signing `secret`, shown only here."""
    _check_endpoint(context(request), endpoint.url, endpoint.event_types)
    secret = new_secret()
    row = await _store(request).create_endpoint(
        principal.org_id,
        url=endpoint.url,
        description=endpoint.description,
        event_types=endpoint.event_types,
        enabled=endpoint.enabled,
        secret=secret,
    )
    if row is None:
        raise ApiError(409, ErrorCode.CONFLICT, "your organisation has the most endpoints allowed")
    return {**_endpoint_out(row), "secret": secret}


@router.get("/endpoints", summary="Your organisation's webhook endpoints")
async def list_endpoints(request: Request, principal: Reader) -> dict[str, Any]:
    """Every endpoint, oldest first (never their secrets)."""
    rows = await _store(request).endpoints(principal.org_id)
    return {"items": [_endpoint_out(r) for r in rows]}


@router.get("/endpoints/{endpoint_id}", summary="One webhook endpoint")
async def get_endpoint(
    request: Request, principal: Reader, endpoint_id: uuid.UUID
) -> dict[str, Any]:
    """The endpoint (without its secret), or 404."""
    row = await _store(request).endpoint(principal.org_id, endpoint_id)
    if row is None:
        raise _not_found(what="endpoint", ident=endpoint_id)
    return _endpoint_out(row)


@router.patch("/endpoints/{endpoint_id}", summary="Change a webhook endpoint")
async def patch_endpoint(
    request: Request, principal: Writer, endpoint_id: uuid.UUID, patch: EndpointPatch
) -> dict[str, Any]:
    """Change its URL, description, event types or `enabled`.

    Enabling a disabled endpoint clears its failure record; its pending deliveries are tried
    again.
    """
    _check_endpoint(context(request), patch.url, patch.event_types)
    changes = patch.model_dump(exclude_none=True)
    row = await _store(request).patch_endpoint(principal.org_id, endpoint_id, changes)
    if row is None:
        raise _not_found(what="endpoint", ident=endpoint_id)
    return _endpoint_out(row)


@router.delete("/endpoints/{endpoint_id}", status_code=204, summary="Delete a webhook endpoint")
async def delete_endpoint(request: Request, principal: Writer, endpoint_id: uuid.UUID) -> Response:
    """Delete the endpoint with its pending deliveries and its delivery log."""
    if not await _store(request).delete_endpoint(principal.org_id, endpoint_id):
        raise _not_found(what="endpoint", ident=endpoint_id)
    return Response(status_code=204)


@router.post("/endpoints/{endpoint_id}/rotate-secret", summary="Rotate an endpoint's secret")
async def rotate_secret(
    request: Request, principal: Writer, endpoint_id: uuid.UUID
) -> dict[str, Any]:
    """A new signing secret, shown once.

    Until `previous_secret_expires_at` (alerts.secret_overlap_ms) each message carries a
    signature with the old secret too, so receivers can switch over.
    """
    ctx = context(request)
    secret = new_secret()
    overlap = timedelta(milliseconds=ctx.settings.alerts.secret_overlap_ms)
    expires = await _store(request).rotate_secret(principal.org_id, endpoint_id, secret, overlap)
    if expires is None:
        raise _not_found(what="endpoint", ident=endpoint_id)
    return {
        "endpoint_id": str(endpoint_id),
        "secret": secret,
        "previous_secret_expires_at": expires.isoformat(),
    }


@router.post(
    "/endpoints/{endpoint_id}/test", status_code=202, summary="Send a test event to an endpoint"
)
async def test_endpoint(
    request: Request, principal: Writer, endpoint_id: uuid.UUID
) -> dict[str, Any]:
    """Queue an `io.meterstream.endpoint.test` notification for this endpoint only."""
    store = _store(request)
    if await store.endpoint(principal.org_id, endpoint_id) is None:
        raise _not_found(what="endpoint", ident=endpoint_id)
    notification_id = uuid.uuid4()
    body = cloud_event(
        str(notification_id),
        NotificationType.ENDPOINT_TEST,
        str(endpoint_id),
        {"organisation": principal.org_id, "endpoint_id": str(endpoint_id)},
    )
    await store.test_notification(principal.org_id, endpoint_id, notification_id, body.decode())
    return {"notification_id": str(notification_id)}


# --- notifications and the delivery log -------------------------------------------------------


def _limit(ctx: ApiContext, limit: int) -> int:
    if limit > ctx.settings.api.max_page_size:
        raise ApiError(
            400, ErrorCode.BAD_REQUEST, f"limit is at most {ctx.settings.api.max_page_size}"
        )
    return limit


def _notification_out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "notification_id": str(row["notification_id"]),
        "type": row["type"],
        "subject": row["subject"],
        "rule_id": _plain(row["rule_id"]),
        "created_at": _iso(row["created_at"]),
        "event": orjson.loads(row["body"]),
        "deliveries": row["deliveries"],
    }


@router.get("/notifications", summary="Your organisation's notifications")
async def list_notifications(
    request: Request,
    *,
    principal: Reader,
    type_: Annotated[str | None, Query(alias="type", max_length=128)] = None,
    since: Annotated[datetime | None, Query(description="created at or after")] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Notifications oldest first, each with its CloudEvent and its deliveries' states."""
    ctx = context(request)
    limit = _limit(ctx, limit)
    if since is not None and since.tzinfo is None:
        raise ApiError(400, ErrorCode.BAD_REQUEST, "since needs a UTC offset (e.g. Z)")
    after = decode_cursor(cursor, NOTIFICATION_KEY) if cursor else None
    rows = await _store(request).notifications(principal.org_id, type_, since, after, limit + 1)
    page = rows[:limit]
    last = page[-1] if page else None
    next_cursor = (
        encode_cursor([last["created_at"].isoformat(), str(last["notification_id"])])
        if last is not None and len(rows) > limit
        else None
    )
    return {"items": [_notification_out(r) for r in page], "next_cursor": next_cursor}


@router.get("/notifications/{notification_id}", summary="One notification")
async def get_notification(
    request: Request, principal: Reader, notification_id: uuid.UUID
) -> dict[str, Any]:
    """The notification, its CloudEvent and its deliveries."""
    row = await _store(request).notification(principal.org_id, notification_id)
    if row is None:
        raise _not_found(what="notification", ident=notification_id)
    return _notification_out(row)


class ResendIn(BaseModel):
    """Which endpoint to send to again (default: every endpoint it went to)."""

    model_config = ConfigDict(extra="forbid")

    endpoint_id: uuid.UUID | None = None


@router.post(
    "/notifications/{notification_id}/resend",
    status_code=202,
    summary="Send a notification again",
)
async def resend(
    request: Request,
    principal: Writer,
    notification_id: uuid.UUID,
    target: Annotated[ResendIn | None, Body()] = None,
) -> dict[str, Any]:
    """Queue it again with the same id (`webhook-id`): receivers that deduplicate ignore it."""
    endpoint_id = target.endpoint_id if target else None
    queued = await _store(request).resend(principal.org_id, notification_id, endpoint_id)
    if queued is None:
        what = "notification or endpoint" if endpoint_id else "notification"
        raise _not_found(what=what, ident=notification_id)
    return {"notification_id": str(notification_id), "deliveries_queued": queued}


@router.get("/deliveries", summary="The delivery log: every attempt")
async def list_attempts(
    request: Request,
    *,
    principal: Reader,
    endpoint_id: uuid.UUID | None = None,
    notification_id: uuid.UUID | None = None,
    outcome: Annotated[str | None, Query(pattern="^(delivered|failed)$")] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """Every delivery attempt, oldest first: outcome, HTTP status (null: no answer), error."""
    ctx = context(request)
    limit = _limit(ctx, limit)
    after = decode_cursor(cursor, ATTEMPT_KEY)[0] if cursor else None
    filters = {"endpoint_id": endpoint_id, "notification_id": notification_id, "outcome": outcome}
    rows = await _store(request).attempts(principal.org_id, filters, after, limit + 1)
    page = rows[:limit]
    next_cursor = encode_cursor([page[-1]["attempt_id"]]) if page and len(rows) > limit else None
    return {
        "items": [{k: _plain(v) for k, v in row.items()} for row in page],
        "next_cursor": next_cursor,
    }
