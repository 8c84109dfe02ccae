"""A webhook receiver on loopback that checks every signature: for tests, the bench and demos.

It verifies each message with the Standard Webhooks reference library against the secrets it
is given (any of them may match, as during a rotation), records the valid ones with the time
they arrived, answers 401 to the others, and can be stopped (connections refused) and started
again on the same port, or told to fail the next requests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class Received:
    """One verified message."""

    webhook_id: str
    timestamp: int
    event: dict[str, Any]
    body: bytes
    received_at: float
    headers: dict[str, str]


@dataclass(slots=True)
class WebhookReceiver:
    """Serve on 127.0.0.1; `url` is where to point an endpoint."""

    secrets: list[str] = field(default_factory=list)
    port: int = 0
    received: list[Received] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    _fail: list[int] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """The receiver's URL (its port is fixed once it has started)."""
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> WebhookReceiver:
        """Listen (on the same port as before, after a `stop`)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = min(int(self.headers.get("content-length") or 0), MAX_BODY)
                body = self.rfile.read(length)
                status = receiver._accept(dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                del format, args

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: attempts now get 'connection refused'."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next `n` valid messages with `status` (not recorded as received)."""
        with self._lock:
            self._fail.extend([status] * n)

    def _accept(self, headers: dict[str, str], body: bytes) -> int:
        event: dict[str, Any] | None = None
        for secret in self.secrets:
            try:
                event = Webhook(secret).verify(body, headers)
                break
            except (WebhookVerificationError, ValueError):
                continue
        if event is None:
            with self._lock:
                self.refused.append(headers.get("webhook-id", "") or headers.get("Webhook-Id", ""))
            return 401
        with self._lock:
            if self._fail:
                return self._fail.pop(0)
            lower = {k.lower(): v for k, v in headers.items()}
            self.received.append(
                Received(
                    webhook_id=lower["webhook-id"],
                    timestamp=int(lower["webhook-timestamp"]),
                    event=event if isinstance(event, dict) else json.loads(body),
                    body=body,
                    received_at=time.time(),
                    headers=lower,
                )
            )
        return 204

    def events(self, type_: str | None = None) -> list[Received]:
        """The verified messages so far (of one CloudEvents type), in arrival order."""
        with self._lock:
            return [r for r in self.received if type_ is None or r.event.get("type") == type_]

    def wait_for(self, check: Callable[[WebhookReceiver], bool], timeout_s: float) -> bool:
        """Poll `check(self)` every 0.1 s until it is true (True) or time is up (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check(self):
                return True
            time.sleep(0.1)
        return check(self)
