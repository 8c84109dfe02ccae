"""Bearer tokens: their format, hashing, scopes, and who a request's token belongs to.

A token is `ms_<token id>_<secret>`: the id (12 hex digits) finds the row, and only the SHA-256
of the 256-bit random secret is stored. A slow password hash would add nothing for a secret of
that entropy, and would cost every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from meterstream.api.errors import ApiError, ErrorCode
from meterstream.api.outage import DATABASE_DOWN, PostgresWatch
from meterstream.api.store import Store

PREFIX = "ms_"
TOKEN_ID_HEX = 12
MAX_CACHED = 100_000


class Scope(StrEnum):
    """What a token may do. `admin` implies the other scopes, within its organisation."""

    INGEST_WRITE = "ingest:write"
    USAGE_READ = "usage:read"
    ADMIN = "admin"
    #: Alert rules, webhook endpoints, notifications and the delivery log (meterstream.api.alerts).
    ALERTS_WRITE = "alerts:write"
    ALERTS_READ = "alerts:read"
    #: Void and amend counted events of the organisation's accounts (meterstream.api.corrections).
    USAGE_CORRECT = "usage:correct"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a token of one organisation, with its scopes."""

    token_id: str
    org_id: str
    scopes: frozenset[Scope]
    operator: bool = False

    def allows(self, scope: Scope) -> bool:
        """Whether the token has `scope` (directly or through `admin`)."""
        return scope in self.scopes or Scope.ADMIN in self.scopes


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly made token: the full secret is shown once, only its hash is stored."""

    token_id: str
    token: str
    secret_hash: bytes


def hash_secret(secret: str) -> bytes:
    """SHA-256 of a token's secret part."""
    return hashlib.sha256(secret.encode()).digest()


def new_token() -> NewToken:
    """Generate a token id and a 256-bit secret."""
    token_id = secrets.token_hex(TOKEN_ID_HEX // 2)
    secret = secrets.token_urlsafe(32)
    return NewToken(token_id, f"{PREFIX}{token_id}_{secret}", hash_secret(secret))


def split_token(token: str) -> tuple[str, str] | None:
    """The (token id, secret) of a well-formed token, else None.

    >>> split_token("ms_0123456789ab_s3cr_et")
    ('0123456789ab', 's3cr_et')
    >>> split_token("Bearer x") is None
    True
    """
    if not token.startswith(PREFIX):
        return None
    token_id, sep, secret = token[len(PREFIX) :].partition("_")
    if not sep or not secret or len(token_id) != TOKEN_ID_HEX:
        return None
    if any(c not in "0123456789abcdef" for c in token_id):
        return None
    return token_id, secret


def bearer(header: str | None) -> str | None:
    """The token in an `Authorization: Bearer ...` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class Authenticator:
    """Finds the `Principal` of a token, caching lookups (revocation applies within the TTL).

    While PostgreSQL is down (`watch`), a token is judged by its last lookup if that is at
    most `staleness_s` old; a token not looked up within that time gets 503.
    """

    def __init__(
        self,
        store: Store,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        watch: PostgresWatch | None = None,
        staleness_s: float = 0.0,
    ) -> None:
        self._store = store
        self._ttl = ttl_s
        self._clock = clock
        self._watch = watch or PostgresWatch(store)
        self._staleness = staleness_s
        #: token digest -> (fresh until, principal or None, when it was read)
        self._cache: dict[bytes, tuple[float, Principal | None, float]] = {}

    async def principal(self, authorization: str | None) -> Principal:
        """The caller, or raise 401 (no, malformed, unknown or revoked token) or 503."""
        token = bearer(authorization)
        parts = split_token(token) if token else None
        if parts is None:
            raise ApiError(401, ErrorCode.UNAUTHENTICATED, "send Authorization: Bearer <token>")
        key = hashlib.sha256(token.encode()).digest() if token else b""
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            found = cached[1]
        else:
            found = await self._read(key, parts, cached, now)
        if found is None:
            raise ApiError(401, ErrorCode.UNAUTHENTICATED, "unknown or revoked token")
        return found

    async def _read(
        self,
        key: bytes,
        parts: tuple[str, str],
        cached: tuple[float, Principal | None, float] | None,
        now: float,
    ) -> Principal | None:
        """Look the token up; while PostgreSQL is down, its last lookup if recent enough."""
        if self._watch.up:
            try:
                found = await self._lookup(*parts)
            except DATABASE_DOWN as exc:
                self._watch.failed(exc)
            else:
                if len(self._cache) > MAX_CACHED:
                    self._cache.clear()
                self._cache[key] = (now + self._ttl, found, now)
                return found
        if cached is not None and now - cached[2] <= self._staleness:
            return cached[1]
        raise ApiError(
            503,
            ErrorCode.DATABASE_UNAVAILABLE,
            "cannot check the token: PostgreSQL is unavailable and this token was not seen in"
            f" the last {self._staleness:g} s",
            headers={"Retry-After": "5"},
        )

    async def _lookup(self, token_id: str, secret: str) -> Principal | None:
        row = await self._store.token(token_id)
        if row is None or row["revoked_at"] is not None:
            return None
        if not hmac.compare_digest(bytes(row["secret_hash"]), hash_secret(secret)):
            return None
        return Principal(
            token_id=row["token_id"],
            org_id=row["org_id"],
            scopes=frozenset(Scope(s) for s in row["scopes"]),
            operator=bool(row["operator"]),
        )


def require(principal: Principal, scope: Scope, *, operator: bool = False) -> None:
    """Raise 403 unless the principal has `scope` (and, for operator routes, is the operator)."""
    if not principal.allows(scope):
        raise ApiError(403, ErrorCode.FORBIDDEN, f"this token lacks the {scope} scope")
    if operator and not principal.operator:
        raise ApiError(
            403, ErrorCode.FORBIDDEN, "only the operator organisation's admin tokens may read this"
        )
