"""A small Python client for the ingest API: batches events, retries with the same ids, uploads.

    from meterstream.client import MeterstreamClient, make_event

    with MeterstreamClient("http://127.0.0.1:18080", token) as client:
        client.add(make_event("api_calls", "acct-42", {"endpoint": "/v1/search", "status": 200}))
        ...                                   # sent in batches of `batch_size`
    # leaving the block flushes the rest

An event gets its id when it is made, and a batch is encoded once: a retry after a timeout, a
429 or a 503 sends exactly the same bytes, so the pipeline's dedup by (account, id) makes the
retry safe even when the first attempt did reach Kafka.

`verify_webhook(body, headers, secret)` checks a webhook of the alerts service (its Standard
Webhooks signature and timestamp) and returns its CloudEvent.

The SDKs in clients/ (Node.js, Go, Java) follow the same rules; clients/vectors/ holds the
requests, answers, retry scenarios and webhook cases that this client's tests and theirs replay.
"""

from __future__ import annotations

import hmac
import json
import random
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import httpx

from meterstream import __version__
from meterstream.alerts.signing import signed_headers
from meterstream.errors import MeterstreamError

BATCH_TYPE = "application/cloudevents-batch+json"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
UPLOAD_CHUNK = 256 * 1024
#: The API's limits per request (`api.max_events_per_request`, `api.max_request_bytes`).
MAX_BATCH_EVENTS = 1_000
MAX_BATCH_BYTES = 512 * 1024
USER_AGENT = f"meterstream-python/{__version__}"


class ClientError(MeterstreamError):
    """The API refused a request (not retryable), or retries ran out.

    `code` and `detail` are the API's error document's (`{"error": code, "detail": ...}`).
    """

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        doc = body if isinstance(body, dict) else {}
        self.code: str | None = doc.get("error") if isinstance(doc.get("error"), str) else None
        self.detail: str | None = doc.get("detail") if isinstance(doc.get("detail"), str) else None


class AuthenticationError(ClientError):
    """401: the token is missing, malformed, unknown or revoked."""


class PermissionDeniedError(ClientError):
    """403: the token lacks the route's scope."""


class NotFoundError(ClientError):
    """404: no such account or upload in your organisation."""


class PayloadTooLargeError(ClientError):
    """413: too many events or bytes in one request."""


class UnprocessableError(ClientError):
    """422 without per-event results."""


class RetriesExhaustedError(ClientError):
    """429, 502-504 or network errors on every attempt; `status` is the last one's (or None)."""


_ERRORS: dict[int, type[ClientError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    422: UnprocessableError,
}


def _refuse(what: str, response: httpx.Response) -> NoReturn:
    """Raise the typed error for a non-retryable answer."""
    kind = _ERRORS.get(response.status_code, ClientError)
    msg = f"{what}: {response.status_code} {response.text[:500]}"
    raise kind(msg, response.status_code, _json(response))


@dataclass(frozen=True, slots=True)
class EventResult:
    """What the API said about one event of a batch."""

    index: int
    id: str | None
    status: str  # accepted | rejected | failed
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of one batch: every event accepted, rejected with its reason code, or failed.

    `failed` events were not sent (the batch could not be: `error` says why); send them again.
    """

    accepted: int
    rejected: int
    results: tuple[EventResult, ...]
    failed: int = 0
    error: ClientError | None = None

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


def _encode(event: dict[str, Any]) -> bytes:
    """An event's compact JSON, as it goes into a batch."""
    return json.dumps(event, separators=(",", ":")).encode()


class _Backoff:
    """Waits between attempts, from the same rule in every SDK (clients/vectors/send.json).

    `Retry-After` (capped) when the answer has one, else capped exponential backoff with
    jitter: `min(cap, base * 2**(k-1)) * (0.5 + 0.5 * random())` after attempt k.
    """

    def __init__(self, base: float, cap: float, rand: Callable[[], float]) -> None:
        self.delay, self.cap, self.rand = base, cap, rand

    def next(self, response: httpx.Response | None) -> float:
        value = response.headers.get("retry-after", "") if response is not None else ""
        if value.isdigit():
            wait = min(self.cap, float(value))
        else:
            wait = min(self.cap, self.delay) * (0.5 + 0.5 * self.rand())
        self.delay = min(self.cap, self.delay * 2)
        return wait


class MeterstreamClient:
    """Sends events (batched), reads usage and rejections, uploads files."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        batch_size: int = MAX_BATCH_EVENTS,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        flush_interval_s: float | None = 1.0,
        max_attempts: int = 8,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        timeout_s: float = 60.0,
        verify: bool | str = True,  # a str is a CA bundle to trust (a private CA)
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = random.random,  # noqa: S311 - jitter, not secrets
        on_result: Callable[[BatchResult], None] | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH_EVENTS:
            msg = f"batch_size must be 1..{MAX_BATCH_EVENTS}, not {batch_size}"
            raise ValueError(msg)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT},
            timeout=timeout_s,
            verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
            transport=transport,
        )
        self.batch_size = batch_size
        self.max_batch_bytes = min(max_batch_bytes, MAX_BATCH_BYTES)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._random = random
        self._on_result = on_result
        self.flush_interval_s = flush_interval_s
        self._lock = threading.Lock()
        self._buffer: list[tuple[dict[str, Any], bytes]] = []
        self._buffer_bytes = 2  # "[" and "]"
        self._timer: threading.Timer | None = None
        self._timers: list[threading.Timer] = []
        self._deferred: ClientError | None = None

    # --- events ------------------------------------------------------------------------------

    def add(self, event: dict[str, Any]) -> BatchResult | None:
        """Buffer an event, sending the buffer when it is full (events or bytes).

        The buffer is sent first if the event would take it past `max_batch_bytes`, and
        with the event when it then holds `batch_size` events; else `flush_interval_s` after
        its first event, by a timer thread. The event is encoded now, so the bytes sent (and
        resent) are fixed here. Raises the error of a batch that could not be sent (also one
        the timer sent).
        """
        raw = _encode(event)
        batches = []
        with self._lock:
            self._raise_deferred()
            if self._buffer and self._buffer_bytes + len(raw) + 1 > self.max_batch_bytes:
                batches.append(self._take())
            self._buffer_bytes += len(raw) + (1 if self._buffer else 0)
            self._buffer.append((event, raw))
            if len(self._buffer) >= self.batch_size:
                batches.append(self._take())
            else:
                self._arm()
        result = None
        for batch in batches:
            result = self._send(batch)
        return result

    def flush(self) -> BatchResult | None:
        """Send what is buffered (None if nothing is) and wait for what the timer is sending.

        Every result also goes to `on_result`. A batch that cannot be sent is reported there
        with every event `failed`, then its error is raised.
        """
        with self._lock:
            batch = self._take()
            timers, self._timers = self._timers, []
        result = self._send(batch) if batch else None
        for timer in timers:
            if timer is not threading.current_thread():
                timer.join()
        with self._lock:
            self._raise_deferred()
        return result

    def _take(self) -> list[tuple[dict[str, Any], bytes]]:
        """Empty the buffer and stop its timer; the lock is held."""
        batch, self._buffer, self._buffer_bytes = self._buffer, [], 2
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return batch

    def _raise_deferred(self) -> None:
        """Raise (once) the error of a batch the timer could not send; the lock is held."""
        error, self._deferred = self._deferred, None
        if error is not None:
            raise error

    def _arm(self) -> None:
        """Start the flush timer if it is not running; the lock is held.

        Not a daemon thread: a process that forgets `close()` still sends its last events.
        """
        if self._timer is not None or self.flush_interval_s is None:
            return
        timer = threading.Timer(self.flush_interval_s, lambda: self._fire(timer))
        self._timer = timer
        self._timers.append(timer)
        timer.start()

    def _fire(self, timer: threading.Timer) -> None:
        with self._lock:
            if self._timer is not timer:
                return
            self._timer = None
            batch = self._take()
        try:
            self._send(batch)
        except ClientError as exc:
            with self._lock:
                self._deferred = self._deferred or exc

    def _send(self, batch: list[tuple[dict[str, Any], bytes]]) -> BatchResult:
        """Send a batch taken from the buffer and report its result to `on_result`."""
        body = b"[" + b",".join(raw for _, raw in batch) + b"]"
        try:
            result = self._post(body)
        except ClientError as exc:
            failed = tuple(
                EventResult(i, event.get("id"), "failed", None, str(exc))
                for i, (event, _) in enumerate(batch)
            )
            if self._on_result is not None:
                self._on_result(BatchResult(0, 0, failed, len(failed), exc))
            raise
        if self._on_result is not None:
            self._on_result(result)
        return result

    def send_batch(self, events: Sequence[dict[str, Any]]) -> BatchResult:
        """Send events as one batch, retrying the same bytes on 429, 502-504 and network errors."""
        return self._post(b"[" + b",".join(_encode(e) for e in events) + b"]")

    def _post(self, body: bytes) -> BatchResult:
        response = self._retrying(
            "POST", "/v1/events", content=body, headers={"Content-Type": BATCH_TYPE}
        )
        doc = _json(response)
        if response.status_code not in (202, 422) or not isinstance(doc, dict):
            _refuse("POST /v1/events", response)
        if "results" not in doc:  # e.g. a 422 from a proxy
            _refuse("POST /v1/events", response)
        return BatchResult(
            accepted=doc["accepted"],
            rejected=doc["rejected"],
            failed=doc.get("failed", 0),
            results=tuple(
                EventResult(r["index"], r.get("id"), r["status"], r.get("reason"), r.get("detail"))
                for r in doc["results"]
            ),
        )

    def _backoff(self) -> _Backoff:
        return _Backoff(self.backoff_s, self.max_backoff_s, self._random)

    def _retrying(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        backoff = self._backoff()
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
            self._sleep(backoff.next(response))
        status = response.status_code if response is not None else None
        msg = f"{method} {url}: gave up after {self.max_attempts} attempts"
        raise RetriesExhaustedError(msg, status, _json(response) if response is not None else None)

    # --- reads -------------------------------------------------------------------------------

    def _pages(self, url: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        query = {k: v for k, v in params.items() if v is not None}
        while True:
            response = self._retrying("GET", url, params=query)
            if response.status_code != 200:  # noqa: PLR2004
                _refuse(f"GET {url}", response)
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
        created, offset, backoff = False, 0, self._backoff()
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
                _refuse("upload", response)
            status = self._upload_status(upload_id)
            if status is None:
                created = False
                offset = 0
            else:
                created = True
                offset = status["offset"]
                if status["state"] == "done":
                    return status
            self._sleep(backoff.next(response))
        msg = f"upload {upload_id}: gave up after {self.max_attempts} attempts"
        raise RetriesExhaustedError(msg)

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
            _refuse("upload status", response)
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
            with self._lock:
                self._take()
            self._http.close()


def _json(response: httpx.Response) -> Any:
    """The answer's JSON document, or None if it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


# --- receiving alerts: webhook signatures ----------------------------------------------------

#: How far a webhook's timestamp may be from now (the Standard Webhooks default), in seconds.
WEBHOOK_TOLERANCE_S = 300.0
_SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not one
#: Standard base64, padded or not (what the reference library decodes, without its leniency).
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?")
_SECONDS = re.compile(r"[0-9]{1,15}")
_WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class WebhookErrorCode(StrEnum):
    """Why a webhook was refused (clients/vectors/webhooks.json, the same in every SDK)."""

    INVALID_SECRET = "INVALID_SECRET"  # noqa: S105 - a reason code
    MISSING_HEADER = "MISSING_HEADER"
    INVALID_TIMESTAMP = "INVALID_TIMESTAMP"
    TIMESTAMP_TOO_OLD = "TIMESTAMP_TOO_OLD"
    TIMESTAMP_TOO_NEW = "TIMESTAMP_TOO_NEW"
    NO_MATCHING_SIGNATURE = "NO_MATCHING_SIGNATURE"
    INVALID_BODY = "INVALID_BODY"


class WebhookVerificationError(ClientError):
    """A webhook failed verification: `code` (a `WebhookErrorCode`) says why, `detail` how."""

    def __init__(self, code: WebhookErrorCode, detail: str) -> None:
        super().__init__(
            f"webhook refused: {code}: {detail}", None, {"error": code, "detail": detail}
        )


def _refuse_webhook(code: WebhookErrorCode, detail: str) -> NoReturn:
    raise WebhookVerificationError(code, detail)


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    now: datetime | None = None,
    tolerance_s: float = WEBHOOK_TOLERANCE_S,
) -> dict[str, Any]:
    """Check a webhook of the alerts service and return its CloudEvent.

    The Standard Webhooks scheme: `webhook-signature` must hold a `v1,` signature of
    `<webhook-id>.<webhook-timestamp>.<body>` under the endpoint's `whsec_` secret (any of them
    during a rotation), and the timestamp must be within `tolerance_s` of `now`, which stops
    replays. The HMAC is the reference library's (through `meterstream.alerts.signing`);
    signatures are compared in constant time.

    Args:
        body: the request's body exactly as received (bytes; a str is taken as its UTF-8).
        headers: the request's headers (any case of their names).
        secret: the endpoint's secret, `whsec_<base64>`.
        now: the time to check the timestamp against (default: the clock).
        tolerance_s: how far the timestamp may be from `now`.

    Returns:
        The CloudEvent, as a dict (`id`, `type`, `subject`, `data`, ...).

    Raises:
        WebhookVerificationError: with the `WebhookErrorCode` of the first check that failed.
    """
    key = secret.removeprefix(_SECRET_PREFIX)
    if not key or not _BASE64.fullmatch(key):
        _refuse_webhook(
            WebhookErrorCode.INVALID_SECRET, "expected whsec_ and the standard base64 of a key"
        )
    lower = {name.lower(): value for name, value in reversed(list(headers.items()))}
    values = [lower.get(name, "") for name in _WEBHOOK_HEADERS]
    missing = [name for name, value in zip(_WEBHOOK_HEADERS, values, strict=True) if not value]
    if missing:
        _refuse_webhook(WebhookErrorCode.MISSING_HEADER, f"missing or empty: {', '.join(missing)}")
    msg_id, stamp, signatures = values
    if not _SECONDS.fullmatch(stamp):
        _refuse_webhook(WebhookErrorCode.INVALID_TIMESTAMP, f"not whole seconds: {stamp[:40]!r}")
    seconds = int(stamp)
    current = (now or datetime.now(UTC)).timestamp()
    if seconds < current - tolerance_s:
        _refuse_webhook(
            WebhookErrorCode.TIMESTAMP_TOO_OLD, f"{seconds} is over {tolerance_s:g} s before now"
        )
    if seconds > current + tolerance_s:
        _refuse_webhook(
            WebhookErrorCode.TIMESTAMP_TOO_NEW, f"{seconds} is over {tolerance_s:g} s after now"
        )
    raw = body.encode() if isinstance(body, str) else bytes(body)
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        _refuse_webhook(WebhookErrorCode.INVALID_BODY, "the body is not UTF-8")
    expected = signed_headers([secret], msg_id, seconds, raw)["webhook-signature"].encode()
    if not any(
        hmac.compare_digest(entry.encode(), expected)
        for entry in signatures.split(" ")
        if entry.startswith("v1,")
    ):
        _refuse_webhook(
            WebhookErrorCode.NO_MATCHING_SIGNATURE, "no v1 signature of this body and secret"
        )
    return _cloud_event(text)


def _cloud_event(text: str) -> dict[str, Any]:
    """The CloudEvents 1.0 JSON object of a verified body."""
    try:
        doc = json.loads(text)
    except ValueError:
        _refuse_webhook(WebhookErrorCode.INVALID_BODY, "not JSON")
    if not isinstance(doc, dict):
        _refuse_webhook(WebhookErrorCode.INVALID_BODY, "not a JSON object")
    if doc.get("specversion") != "1.0":
        _refuse_webhook(WebhookErrorCode.INVALID_BODY, "specversion is not '1.0'")
    for name in ("id", "source", "type"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            _refuse_webhook(WebhookErrorCode.INVALID_BODY, f"{name} is not a non-empty string")
    kinds: dict[str, tuple[type, ...]] = {
        "subject": (str, type(None)),
        "time": (str,),
        "datacontenttype": (str,),
        "data": (dict, type(None)),
    }
    for name, allowed in kinds.items():
        if name in doc and not isinstance(doc[name], allowed):
            _refuse_webhook(WebhookErrorCode.INVALID_BODY, f"{name} has the wrong type")
    return doc
