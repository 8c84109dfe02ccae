"""What every handler needs, built once per app: settings, Kafka, PostgreSQL, limits, metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from starlette.requests import Request

from meterstream.api.auth import Authenticator, Principal, Scope, require
from meterstream.api.errors import ApiError, ErrorCode
from meterstream.api.metrics import ApiMetrics
from meterstream.api.outage import DATABASE_DOWN, PostgresWatch, QuotaKeeper
from meterstream.api.producer import EventProducer
from meterstream.api.ratelimit import Limit, RateLimiter, retry_after
from meterstream.api.store import Store
from meterstream.config import Settings

#: Cached (organisation, account) answers, and accounts in cached lists, at most.
MAX_CACHED = 500_000
#: An organisation with at most this many accounts is cached whole (one query per `ttl_s`).
MAX_ORGANISATION_SET = 50_000


class Ownership(NamedTuple):
    """Which of some accounts an organisation owns, and which could not be decided."""

    owned: set[str]
    #: Accounts not read within the staleness bound while PostgreSQL is down.
    undecided: set[str]


class AccountDirectory:
    """Which accounts each organisation owns, cached for `ttl_s` (the table changes rarely).

    An organisation's whole account list is cached when it is small enough, so a request
    naming accounts seen for the first time costs no query. An account outside that list
    (another organisation's, or one added since it was read) is looked up by itself, and its
    answer cached for `ttl_s` too. While PostgreSQL is down (`watch`), answers read at most
    `staleness_s` ago still count; other accounts are undecided.
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
        #: organisation -> (fresh until, its accounts or None if too many, when read)
        self._members: dict[str, tuple[float, frozenset[str] | None, float]] = {}
        self._held = 0  # accounts in the cached lists
        #: (organisation, account) -> (fresh until, owned, when read)
        self._cache: dict[tuple[str, str], tuple[float, bool, float]] = {}

    async def owned(self, org_id: str, account_ids: Iterable[str]) -> set[str]:
        """The subset of `account_ids` that `org_id` owns; 503 if some cannot be decided."""
        answer = await self.ownership(org_id, account_ids)
        if answer.undecided:
            what = "cannot check which accounts are yours"
            raise database_unavailable(what)
        return answer.owned

    async def ownership(self, org_id: str, account_ids: Iterable[str]) -> Ownership:
        """Which of `account_ids` `org_id` owns, and which cannot be decided now."""
        now = self._clock()
        members = await self._members_of(org_id, now)
        wanted = set(account_ids)
        owned = wanted & members if members is not None else set()
        unknown: list[str] = []
        for account in wanted - owned:
            hit = self._cache.get((org_id, account))
            if hit is not None and hit[0] > now:
                if hit[1]:
                    owned.add(account)
            else:
                unknown.append(account)
        if unknown and self._watch.up:
            try:
                found = await self._store.owned_accounts(org_id, unknown)
            except DATABASE_DOWN as exc:
                self._watch.failed(exc)
            else:
                if len(self._cache) > MAX_CACHED:
                    self._cache.clear()
                for account in unknown:
                    self._cache[(org_id, account)] = (now + self._ttl, account in found, now)
                return Ownership(owned | found, set())
        undecided: set[str] = set()
        for account in unknown:  # PostgreSQL is down: answers read recently enough still hold
            hit = self._cache.get((org_id, account))
            if hit is None or now - hit[2] > self._staleness:
                undecided.add(account)
            elif hit[1]:
                owned.add(account)
        return Ownership(owned, undecided)

    async def _members_of(self, org_id: str, now: float) -> frozenset[str] | None:
        """The organisation's cached account list, read again once stale; None if unknown.

        Unknown: too many accounts to list, or PostgreSQL down and the list too old to trust.
        """
        members = self._members.get(org_id)
        if (members is None or members[0] <= now) and self._watch.up:
            try:
                listed = await self._store.organisation_accounts(org_id, MAX_ORGANISATION_SET)
            except DATABASE_DOWN as exc:
                self._watch.failed(exc)
            else:
                if members is not None:
                    self._held -= len(members[1] or ())
                if self._held + len(listed or ()) > MAX_CACHED:
                    self._members.clear()
                    self._held = 0
                members = self._members[org_id] = (now + self._ttl, listed, now)
                self._held += len(listed or ())
        if members is None or (members[0] <= now and now - members[2] > self._staleness):
            return None
        return members[1]


def database_unavailable(what: str) -> ApiError:
    """The 503 of a request that needs PostgreSQL to be decided."""
    return ApiError(
        503,
        ErrorCode.DATABASE_UNAVAILABLE,
        f"{what}: PostgreSQL is unavailable",
        headers={"Retry-After": "5"},
    )


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
    watch: PostgresWatch
    quota: QuotaKeeper

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
