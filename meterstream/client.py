"""A small Python client for the ingest API: batches events, retries with the same ids, uploads.

    from meterstream.client import MeterstreamClient, make_event

    with MeterstreamClient("http://127.0.0.1:18080", token) as client:
        client.add(make_event("api_calls", "acct-42", {"endpoint": "/v1/search", "status": 200}))
        ...                                   # sent in batches of `batch_size`
    # leaving the block flushes the rest

An event gets its id when it is made, and a batch is encoded once: a retry after a timeout, a
429 or a 503 sends exactly the same bytes, so the pipeline's dedup by (account, id) makes the
retry safe even when the first attempt did reach Kafka.
"""

from __future__ import annotations

import json
import ssl
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from meterstream.errors import MeterstreamError

BATCH_TYPE = "application/cloudevents-batch+json"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
UPLOAD_CHUNK = 256 * 1024


class ClientError(MeterstreamError):
    """The API refused a request (not retryable), or retries ran out."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True, slots=True)
class EventResult:
    """What the API said about one event of a batch."""

    index: int
    id: str | None
    status: str  # accepted | rejected
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of one batch: every event accepted or rejected with its reason code."""

    accepted: int
    rejected: int
    results: tuple[EventResult, ...]

    @property
    def rejections(self) -> list[EventResult]:
        """The rejected events."""
        return [r for r in self.results if r.status == "rejected"]


def make_event(
    meter: str,
    account: str,
    data: dict[str, Any],
    *,
    event_id: str | None = None,
    time: datetime | None = None,  # noqa: A002 - the CloudEvents attribute name
    source: str = "meterstream-client",
) -> dict[str, Any]:
    """A CloudEvents 1.0 usage event; the id (a new UUID unless given) is fixed from now on."""
    moment = (time or datetime.now(UTC)).astimezone(UTC)
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": meter,
        "subject": account,
        "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }


def _retry_after(response: httpx.Response | None, fallback: float) -> float:
    if response is not None:
        value = response.headers.get("retry-after", "")
        if value.isdigit():
            return float(value)
    return fallback


class MeterstreamClient:
    """Sends events (batched), reads usage and rejections, uploads files."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        batch_size: int = 500,
        max_attempts: int = 8,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        timeout_s: float = 60.0,
        verify: bool | str = True,  # a str is a CA bundle to trust (a private CA)
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
            transport=transport,
        )
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._buffer: list[dict[str, Any]] = []

    # --- events ------------------------------------------------------------------------------

    def add(self, event: dict[str, Any]) -> BatchResult | None:
        """Buffer an event; send the buffer when it holds `batch_size` events."""
        self._buffer.append(event)
        if len(self._buffer) >= self.batch_size:
            return self.flush()
        return None

    def flush(self) -> BatchResult | None:
        """Send what is buffered (None if nothing is)."""
        if not self._buffer:
            return None
        batch, self._buffer = self._buffer, []
        return self.send_batch(batch)

    def send_batch(self, events: Sequence[dict[str, Any]]) -> BatchResult:
        """Send events as one batch, retrying the same bytes on 429, 503 and network errors."""
        body = json.dumps(list(events), separators=(",", ":")).encode()
        response = self._retrying(
            "POST", "/v1/events", content=body, headers={"Content-Type": BATCH_TYPE}
        )
        if response.status_code not in (202, 422):
            msg = f"POST /v1/events: {response.status_code} {response.text[:500]}"
            raise ClientError(
                msg,
                response.status_code,
                _json(response),
            )
        doc = response.json()
        return BatchResult(
            accepted=doc["accepted"],
            rejected=doc["rejected"],
            results=tuple(
                EventResult(r["index"], r.get("id"), r["status"], r.get("reason"), r.get("detail"))
                for r in doc["results"]
            ),
        )

    def _retrying(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        delay = self.backoff_s
        response: httpx.Response | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError:
                response = None
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
            if attempt == self.max_attempts:
                break
            self._sleep(min(self.max_backoff_s, _retry_after(response, delay)))
            delay = min(self.max_backoff_s, delay * 2)
        status = response.status_code if response is not None else None
        msg = f"{method} {url}: gave up after {self.max_attempts} attempts"
        raise ClientError(msg, status)

    # --- reads -------------------------------------------------------------------------------

    def _pages(self, url: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        query = {k: v for k, v in params.items() if v is not None}
        while True:
            response = self._retrying("GET", url, params=query)
            if response.status_code != 200:  # noqa: PLR2004
                msg = f"GET {url}: {response.status_code} {response.text[:500]}"
                raise ClientError(
                    msg,
                    response.status_code,
                    _json(response),
                )
            doc = response.json()
            yield from doc["items"]
            if not doc.get("next_cursor"):
                return
            query["cursor"] = doc["next_cursor"]

    def usage(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every usage row of your organisation (filters: account, meter, period_from/_to)."""
        return self._pages("/v1/usage", filters)

    def rejections(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every rejection of your accounts (filters: account, reason, since, until)."""
        return self._pages("/v1/rejections", filters)

    # --- uploads -----------------------------------------------------------------------------

    def upload(
        self,
        path: Path,
        *,
        fmt: str | None = None,
        upload_id: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Upload a JSON Lines (`.jsonl`) or JSON array file, resuming after any interruption.

        `progress(bytes_sent, size)` is called as the file goes out. Returns the final status.
        """
        fmt = fmt or ("json" if path.suffix.lower() == ".json" else "jsonl")
        upload_id = upload_id or str(uuid.uuid4())
        size = path.stat().st_size
        created, offset, delay = False, 0, self.backoff_s
        for _attempt in range(self.max_attempts):
            response = self._send_file(
                path,
                upload_id=upload_id,
                fmt=fmt,
                offset=offset,
                size=size,
                progress=progress,
                created=created,
            )
            if response is not None and response.status_code in (200, 201, 422):
                doc = response.json()
                if doc.get("state") in ("done", "failed"):
                    return doc
            elif response is not None and response.status_code not in (*RETRY_STATUSES, 409):
                msg = f"upload: {response.status_code} {response.text[:500]}"
                raise ClientError(
                    msg,
                    response.status_code,
                    _json(response),
                )
            status = self._upload_status(upload_id)
            if status is None:
                created = False
                offset = 0
            else:
                created = True
                offset = status["offset"]
                if status["state"] == "done":
                    return status
            self._sleep(min(self.max_backoff_s, _retry_after(response, delay)))
            delay = min(self.max_backoff_s, delay * 2)
        msg = f"upload {upload_id}: gave up after {self.max_attempts} attempts"
        raise ClientError(msg)

    def _send_file(
        self,
        path: Path,
        *,
        upload_id: str,
        fmt: str,
        offset: int,
        size: int,
        progress: Callable[[int, int], None] | None,
        created: bool,
    ) -> httpx.Response | None:
        def chunks() -> Iterator[bytes]:
            sent = offset
            with path.open("rb") as f:
                f.seek(offset)
                while chunk := f.read(UPLOAD_CHUNK):
                    sent += len(chunk)
                    yield chunk
                    if progress is not None:
                        progress(sent, size)

        try:
            if created:
                return self._http.patch(
                    f"/v1/uploads/{upload_id}",
                    content=chunks(),
                    headers={"Upload-Offset": str(offset)},
                    timeout=None,
                )
            return self._http.post(
                "/v1/uploads",
                params={"format": fmt, "filename": path.name[:255]},
                content=chunks(),
                headers={"Upload-Id": upload_id},
                timeout=None,
            )
        except httpx.TransportError:
            return None

    def _upload_status(self, upload_id: str) -> dict[str, Any] | None:
        response = self._retrying("GET", f"/v1/uploads/{upload_id}")
        if response.status_code == 404:  # noqa: PLR2004
            return None
        if response.status_code != 200:  # noqa: PLR2004
            msg = f"upload status: {response.status_code} {response.text[:500]}"
            raise ClientError(
                msg,
                response.status_code,
            )
        doc: dict[str, Any] = response.json()
        return doc

    def upload_status(self, upload_id: str) -> dict[str, Any] | None:
        """An upload's status, or None if there is no such upload."""
        return self._upload_status(upload_id)

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Send what is buffered and close the connection pool."""
        try:
            self.flush()
        finally:
            self._http.close()

    def __enter__(self) -> MeterstreamClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._http.close()


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
