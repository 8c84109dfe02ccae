"""Batch file uploads: a JSON Lines file or a JSON array of any size, streamed and resumable.

    POST  /v1/uploads?format=jsonl   body: the file (optional `Upload-Id: <uuid>` header)
    GET   /v1/uploads/{id}           counts, committed offset, state, first rejections
    PATCH /v1/uploads/{id}           `Upload-Offset: <committed offset>`, body: the rest

The body is read chunk by chunk and never held whole. At least every `api.upload_commit_events`
events the upload waits until Kafka has acknowledged what it sent, then records the byte offset
and the counts in one transaction. A broken connection loses nothing: resume from the recorded
offset. Events after it may be sent twice; they keep their ids, so the pipeline drops the
repeats, and the counts stay exact because only committed stretches are counted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from meterstream.api.auth import Principal, Scope
from meterstream.api.context import ApiContext, authorize, context
from meterstream.api.errors import ApiError, ErrorCode
from meterstream.api.ingest import (
    Accepted,
    check_envelopes,
    media_type,
    not_in_organisation,
    over_quota,
)
from meterstream.api.parsing import Format, Piece, new_splitter
from meterstream.api.producer import Delivery

router = APIRouter(tags=["uploads"])

JSONL_TYPES = ("application/x-ndjson", "application/jsonl", "application/jsonlines")
#: Quota is reserved from PostgreSQL in blocks of this many events per account.
QUOTA_BLOCK = 1_000
STATUS_REJECTIONS = 100


async def ingest_writer(request: Request) -> Principal:
    """The caller, who must hold `ingest:write`."""
    return await authorize(request, Scope.INGEST_WRITE)


class KafkaFailure(Exception):
    """Kafka did not acknowledge a stretch of the upload."""


class UploadRun:
    """Receives one request's bytes of an upload, from the upload's committed offset on."""

    def __init__(
        self, ctx: ApiContext, principal: Principal, upload_id: uuid.UUID, fmt: Format, offset: int
    ) -> None:
        self.ctx = ctx
        self.principal = principal
        self.upload_id = upload_id
        self.splitter = new_splitter(fmt, ctx.settings.api.max_event_bytes, offset)
        self.offset = offset
        self.day = datetime.now(UTC).date()
        self.allowance: dict[str, int] = {}  # quota reserved and not used yet; -1: exhausted
        self._reset()

    def _reset(self) -> None:
        self.events = 0
        self.accepted = Counter[str]()
        self.rejected = Counter[str]()
        self.rejections: list[tuple[int, str, str, str]] = []
        self.waiters: list[Awaitable[Delivery]] = []

    async def feed(self, chunk: bytes) -> None:
        """Handle the events the chunk completes; commit when the stretch is long enough."""
        self.ctx.metrics.upload_bytes.inc(len(chunk))
        await self._handle(list(self.splitter.feed(chunk)))
        if self.events >= self.ctx.settings.api.upload_commit_events:
            await self.commit("open")

    async def finish(self, *, complete: bool) -> str:
        """The body ended: handle the last event (if the file is complete) and commit."""
        if complete:
            await self._handle(list(self.splitter.finish()))
        error = self.splitter.error
        if error is not None:
            await self.commit("failed", f"at byte {error.offset}: {error.detail}")
            return "failed"
        state = "done" if complete else "open"
        await self.commit(state)
        return state

    async def _handle(self, pieces: list[Piece]) -> None:
        if not pieces:
            return
        checked = check_envelopes(pieces)
        accounts = {c.result.account_id for c in checked if isinstance(c.result, Accepted)}
        owned = (
            await self.ctx.accounts.owned(self.principal.org_id, accounts) if accounts else set()
        )
        needed = Counter(
            c.result.account_id
            for c in checked
            if isinstance(c.result, Accepted) and c.result.account_id in owned
        )
        await self._reserve(needed)
        records: list[tuple[bytes, bytes]] = []
        for piece, c in zip(pieces, checked, strict=True):
            result = c.result
            if isinstance(result, Accepted):
                if result.account_id not in owned:
                    result = not_in_organisation(result.account_id, self.principal.org_id)
                elif self.allowance.get(result.account_id, 0) <= 0:
                    result = over_quota(result.account_id)
                else:
                    self.allowance[result.account_id] -= 1
                    self.accepted[result.account_id] += 1
                    records.append((result.account_id.encode(), piece.raw))
                    continue
            self.rejected[str(result.code)] += 1
            self.rejections.append(
                (
                    piece.start,
                    str(result.code),
                    _text(result.detail),
                    _text(piece.raw[:200].decode(errors="replace")),
                )
            )
        self.events += len(pieces)
        if records:
            await self.ctx.limiter.wait_take(
                ("upload", self.principal.token_id), self.ctx.upload_limit(), len(records)
            )
            self.waiters.append(await self.ctx.producer.enqueue(self.ctx.topic, records))

    async def _reserve(self, needed: Counter[str]) -> None:
        short = {
            account: max(n, QUOTA_BLOCK)
            for account, n in needed.items()
            if 0 <= self.allowance.get(account, 0) < n
        }
        if not short:
            return
        grants = await self.ctx.store.reserve_quota(
            short, self.day, self.ctx.settings.api.account_daily_event_quota
        )
        for account in short:
            granted = grants.get(account, 0)
            have = self.allowance.get(account, 0) + granted
            # Nothing granted: the quota is used up; do not ask again during this request.
            self.allowance[account] = have if granted > 0 or have > 0 else -1

    async def commit(self, state: str, error: str = "") -> None:
        """Wait for Kafka, then record the new offset and this stretch's counts."""
        deliveries = await asyncio.gather(*self.waiters)
        failed = sum(len(d.failed) for d in deliveries)
        if failed:
            await self.ctx.store.release_quota(dict(self.accepted), self.day)
            self.accepted.clear()
            self.ctx.metrics.kafka_failures.inc()
            self.ctx.metrics.count_events(0, {}, failed)
            await self._record(self.offset, "interrupted", "Kafka did not acknowledge every event")
            raise KafkaFailure
        new_offset = self.splitter.safe_offset
        accepted, rejected = sum(self.accepted.values()), sum(self.rejected.values())
        ok = await self.ctx.store.commit_upload(
            self.upload_id,
            old_offset=self.offset,
            new_offset=new_offset,
            accepted=accepted,
            rejected=rejected,
            state=state,
            error=error,
            rejections=self.rejections,
        )
        if not ok:
            raise ApiError(409, ErrorCode.CONFLICT, "the upload was moved on by another request")
        self.ctx.metrics.count_events(accepted, dict(self.rejected))
        self.offset = new_offset
        self._reset()

    async def _record(self, offset: int, state: str, error: str) -> None:
        await self.ctx.store.commit_upload(
            self.upload_id,
            old_offset=offset,
            new_offset=offset,
            accepted=0,
            rejected=0,
            state=state,
            error=error,
            rejections=[],
        )

    async def close(self) -> None:
        """Give back quota reserved but not used."""
        unused = {a: n for a, n in self.allowance.items() if n > 0}
        self.allowance.clear()
        if unused:
            await self.ctx.store.release_quota(unused, self.day)


def _text(value: str) -> str:
    """Text PostgreSQL can store: NUL characters become U+FFFD."""
    return value.replace("\x00", "\ufffd")


def _complete(header: str | None) -> bool:
    """`Upload-Complete: ?0` (or false/0) says more bytes will follow in a later request."""
    return (header or "?1").strip().lower() not in ("?0", "0", "false", "no")


async def status_of(ctx: ApiContext, upload_id: uuid.UUID, org_id: str) -> dict[str, Any]:
    """An upload's status document, or 404."""
    row = await ctx.store.upload(upload_id, org_id)
    if row is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no upload {upload_id} in your organisation")
    rejections = await ctx.store.upload_rejections(upload_id, STATUS_REJECTIONS)
    return {
        "upload_id": str(row["upload_id"]),
        "format": row["format"],
        "filename": row["filename"],
        "state": row["state"],
        "done": row["state"] == "done",
        "offset": row["committed_offset"],
        "accepted": row["accepted"],
        "rejected": row["rejected"],
        "error": row["error"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "rejections": [
            {
                "offset": r["byte_offset"],
                "reason": r["reason_code"],
                "detail": r["detail"],
                "excerpt": r["excerpt"],
            }
            for r in rejections
        ],
    }


async def receive(
    request: Request,
    principal: Principal,
    upload_id: uuid.UUID,
    offset: int | None,
    *,
    created: bool,
) -> JSONResponse:
    """Stream the request body into the upload, holding the upload's lock meanwhile."""
    ctx = context(request)
    complete = _complete(request.headers.get("upload-complete"))
    async with ctx.store.pool.connection() as lock:
        cur = await lock.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 7)) AS locked", (str(upload_id),)
        )
        row = await cur.fetchone()
        if not (row and row["locked"]):
            raise ApiError(409, ErrorCode.CONFLICT, "another request is sending this upload")
        try:
            return await _receive_locked(
                request, ctx, principal, upload_id, offset, complete=complete, created=created
            )
        finally:
            await lock.execute(
                "SELECT pg_advisory_unlock(hashtextextended(%s, 7))", (str(upload_id),)
            )


async def _receive_locked(
    request: Request,
    ctx: ApiContext,
    principal: Principal,
    upload_id: uuid.UUID,
    offset: int | None,
    *,
    complete: bool,
    created: bool,
) -> JSONResponse:
    row = await ctx.store.upload(upload_id, principal.org_id)
    if row is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no upload {upload_id} in your organisation")
    if row["state"] == "done":
        raise ApiError(
            409,
            ErrorCode.CONFLICT,
            "the upload is complete",
            extra={"offset": row["committed_offset"]},
        )
    if offset is not None and offset != row["committed_offset"]:
        raise ApiError(
            409,
            ErrorCode.CONFLICT,
            f"Upload-Offset must be the committed offset {row['committed_offset']}",
            extra={"offset": row["committed_offset"]},
        )
    run = UploadRun(ctx, principal, upload_id, row["format"], row["committed_offset"])
    ctx.metrics.uploads_active.inc()
    status_code = 201 if created else 200
    try:
        try:
            async for chunk in request.stream():
                await run.feed(chunk)
                if run.splitter.error is not None:
                    break  # a broken JSON array: the rest cannot be split, stop reading it
        except ClientDisconnect:
            # Keep what is safely in Kafka; the client resumes from the committed offset.
            await run.commit("interrupted", "the connection closed before the end of the file")
            return JSONResponse(await status_of(ctx, upload_id, principal.org_id), 200)
        state = await run.finish(complete=complete)
        if state == "failed":
            status_code = 422
    except KafkaFailure:
        body = await status_of(ctx, upload_id, principal.org_id)
        return JSONResponse(
            {"error": ErrorCode.KAFKA_UNAVAILABLE, **body},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    finally:
        ctx.metrics.uploads_active.dec()
        await run.close()
    return JSONResponse(
        await status_of(ctx, upload_id, principal.org_id),
        status_code=status_code,
        headers={"Location": f"/v1/uploads/{upload_id}"},
    )


def _format(query: str | None, content_type: str | None) -> Format:
    if query in ("jsonl", "json"):
        return query  # type: ignore[return-value] - checked just above
    kind = media_type(content_type)
    if kind in JSONL_TYPES:
        return "jsonl"
    if kind == "application/json":
        return "json"
    raise ApiError(
        415,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        "say the file's format: ?format=jsonl or ?format=json, or Content-Type "
        "application/x-ndjson or application/json",
    )


@router.post(
    "/v1/uploads",
    status_code=201,
    summary="Upload a JSON Lines file or a JSON array of events (streamed, resumable)",
    responses={
        409: {"description": "Upload-Id already used"},
        422: {"description": "The JSON array is not valid JSON; counts up to the error kept"},
        503: {"description": "Kafka unavailable; resume from `offset` with PATCH"},
    },
)
async def create_upload(
    request: Request,
    principal: Annotated[Principal, Depends(ingest_writer)],
    format: Annotated[Literal["jsonl", "json"] | None, Query()] = None,  # noqa: A002
    filename: Annotated[str, Query(max_length=255)] = "",
    upload_id: Annotated[uuid.UUID | None, Header(alias="Upload-Id")] = None,
) -> JSONResponse:
    """Create an upload and stream the file into it.

    Send your own `Upload-Id` (a UUID) to be able to resume even if the connection breaks
    before the answer arrives. `Upload-Complete: ?0` means more bytes follow in a PATCH.
    """
    ctx = context(request)
    fmt = _format(format, request.headers.get("content-type"))
    upload_id = upload_id or uuid.uuid4()
    if not await ctx.store.create_upload(
        upload_id, principal.org_id, principal.token_id, fmt, filename
    ):
        raise ApiError(409, ErrorCode.CONFLICT, f"upload {upload_id} exists; resume it with PATCH")
    return await receive(request, principal, upload_id, 0, created=True)


@router.patch(
    "/v1/uploads/{upload_id}",
    summary="Resume an upload from its committed offset",
    responses={409: {"description": "Wrong Upload-Offset, upload complete, or in progress"}},
)
async def resume_upload(
    request: Request,
    upload_id: uuid.UUID,
    principal: Annotated[Principal, Depends(ingest_writer)],
    upload_offset: Annotated[int, Header(alias="Upload-Offset", ge=0)],
) -> JSONResponse:
    """Send the file from `Upload-Offset` (which must equal the upload's `offset`) on."""
    return await receive(request, principal, upload_id, upload_offset, created=False)


@router.get("/v1/uploads/{upload_id}", summary="An upload's progress and counts")
async def get_upload(
    request: Request,
    upload_id: uuid.UUID,
    principal: Annotated[Principal, Depends(ingest_writer)],
) -> dict[str, Any]:
    """State (`open`, `interrupted`, `done`, `failed`), committed `offset`, counts, rejections."""
    return await status_of(context(request), upload_id, principal.org_id)
