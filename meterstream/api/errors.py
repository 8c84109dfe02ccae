"""Request-level errors: a status, a stable code and a detail, answered as one JSON shape.

Per-event problems are not errors: they are `ReasonCode`s in the per-event results.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


class ErrorCode(StrEnum):
    """Why a whole request was refused. Stable, like `ReasonCode`."""

    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    BAD_REQUEST = "BAD_REQUEST"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    RATE_LIMITED = "RATE_LIMITED"
    KAFKA_UNAVAILABLE = "KAFKA_UNAVAILABLE"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    # Corrections and erasure (meterstream.api.corrections, docs/corrections.md):
    #: The event to correct was never counted (not archived, late, or a repeat of another).
    NOT_COUNTED = "NOT_COUNTED"
    #: The event is voided already; nothing can follow a void.
    ALREADY_VOIDED = "ALREADY_VOIDED"
    #: The new content breaks a rule of amends (same key, meter and period; passes the rules).
    INVALID_AMENDMENT = "INVALID_AMENDMENT"
    #: The account's personal data was erased.
    ACCOUNT_ERASED = "ACCOUNT_ERASED"
    #: There is no audit archive (or another stack's) to tell what was counted.
    NO_ARCHIVE = "NO_ARCHIVE"


class ApiError(Exception):
    """Raised by handlers; rendered as `{"error": code, "detail": ..., **extra}`."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self) -> JSONResponse:
        """The JSON answer."""
        headers = dict(self.headers)
        if self.status == 401:  # noqa: PLR2004 - RFC 6750
            headers.setdefault("WWW-Authenticate", 'Bearer realm="meterstream"')
        return JSONResponse(
            {"error": self.code, "detail": self.detail, **self.extra},
            status_code=self.status,
            headers=headers,
        )


async def handle_api_error(_request: Request, exc: Exception) -> JSONResponse:
    """Starlette exception handler for `ApiError`."""
    assert isinstance(exc, ApiError)  # noqa: S101 - registered for ApiError only
    return exc.response()
