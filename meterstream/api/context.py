"""What every handler needs, built once per app: settings, Kafka, PostgreSQL, limits, metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.requests import Request

from meterstream.api.auth import Authenticator, Principal, Scope, require
from meterstream.api.errors import ApiError, ErrorCode
from meterstream.api.metrics import ApiMetrics
from meterstream.api.producer import EventProducer
from meterstream.api.ratelimit import Limit, RateLimiter, retry_after
from meterstream.api.store import Store
from meterstream.config import Settings

#: Cached (organisation, account) answers, and accounts in cached lists, at most.
MAX_CACHED = 500_000
#: An organisation with at most this many accounts is cached whole (one query per `ttl_s`).
MAX_ORGANISATION_SET = 50_000


class AccountDirectory:
    """Which accounts each organisation owns, cached for `ttl_s` (the table changes rarely).

    An organisation's whole account list is cached when it is small enough, so a request
    naming accounts seen for the first time costs no query. An account outside that list
    (another organisation's, or one added since it was read) is looked up by itself, and its
    answer cached for `ttl_s` too.
    """

    def __init__(
        self, store: Store, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._ttl = ttl_s
        self._clock = clock
        self._members: dict[str, tuple[float, frozenset[str] | None]] = {}
        self._held = 0  # accounts in the cached lists
        self._cache: dict[tuple[str, str], tuple[float, bool]] = {}

    async def owned(self, org_id: str, account_ids: Iterable[str]) -> set[str]:
        """The subset of `account_ids` that `org_id` owns."""
        now = self._clock()
        members = self._members.get(org_id)
        if members is None or members[0] <= now:
            listed = await self._store.organisation_accounts(org_id, MAX_ORGANISATION_SET)
            if members is not None:
                self._held -= len(members[1] or ())
            if self._held + len(listed or ()) > MAX_CACHED:
                self._members.clear()
                self._held = 0
            members = self._members[org_id] = (now + self._ttl, listed)
            self._held += len(listed or ())
        wanted = set(account_ids)
        owned = wanted & members[1] if members[1] is not None else set()
        unknown: list[str] = []
        for account in wanted - owned:
            hit = self._cache.get((org_id, account))
            if hit is not None and hit[0] > now:
                if hit[1]:
                    owned.add(account)
            else:
                unknown.append(account)
        if unknown:
            found = await self._store.owned_accounts(org_id, unknown)
            if len(self._cache) > MAX_CACHED:
                self._cache.clear()
            for account in unknown:
                self._cache[(org_id, account)] = (now + self._ttl, account in found)
            owned |= found
        return owned


@dataclass(frozen=True, slots=True)
class ApiContext:
    """The services of one app instance (`request.app.state.ctx`)."""

    settings: Settings
    producer: EventProducer
    store: Store
    auth: Authenticator
    accounts: AccountDirectory
    limiter: RateLimiter
    metrics: ApiMetrics

    @property
    def topic(self) -> str:
        """Where accepted events go."""
        return self.settings.kafka.topics.raw

    def token_limit(self) -> Limit:
        """Each token's request bucket."""
        api = self.settings.api
        return Limit(api.token_requests_per_second, api.token_request_burst)

    def account_limit(self) -> Limit:
        """Each account's event bucket."""
        api = self.settings.api
        return Limit(api.account_events_per_second, api.account_event_burst)

    def upload_limit(self) -> Limit:
        """Each token's upload event bucket (back-pressure)."""
        rate = self.settings.api.upload_events_per_second
        return Limit(rate, rate)


def context(request: Request) -> ApiContext:
    """The app's context."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


async def authorize(request: Request, scope: Scope, *, operator: bool = False) -> Principal:
    """Authenticate the request's token, check its scope, and take from its request bucket."""
    ctx = context(request)
    try:
        principal = await ctx.auth.principal(request.headers.get("authorization"))
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - the token store is down: not the caller's fault
        raise ApiError(
            503, ErrorCode.DATABASE_UNAVAILABLE, "cannot check the token: PostgreSQL is unavailable"
        ) from exc
    require(principal, scope, operator=operator)
    wait = ctx.limiter.try_take({("token", principal.token_id): (ctx.token_limit(), 1)})
    if wait > 0:
        ctx.metrics.rate_limited.labels("token").inc()
        raise ApiError(
            429,
            ErrorCode.RATE_LIMITED,
            "too many requests with this token",
            headers={"Retry-After": retry_after(wait)},
        )
    return principal
