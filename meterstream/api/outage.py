"""Ingestion while PostgreSQL is down: whether it is up, and daily quotas counted in-process.

Tokens, account owners and quota use are read from PostgreSQL. When it stops answering, the
API goes on deciding from what it read last, if that is at most `api.max_staleness_seconds`
old (`Authenticator`, `AccountDirectory`, `QuotaKeeper`): a token revoked, or an account
moved, within that time before the outage can still be used until the bound runs out. What it
cannot decide that way (a token or an account it has not read recently) is refused with 503,
never guessed. Quota use granted meanwhile is counted here and added to PostgreSQL when it
answers again (`api_quota_reconciliations` makes that addition happen once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date

import psycopg
import psycopg_pool

from meterstream.api.store import Store

log = logging.getLogger(__name__)

#: What a PostgreSQL call raises when the server is down or unreachable.
DATABASE_DOWN: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg_pool.PoolTimeout)
#: How often, while PostgreSQL is down, one background task asks whether it is back.
PROBE_INTERVAL_S = 1.0
#: Accounts whose quota use a process keeps, at most (then it starts again from none).
MAX_KNOWN = 500_000


class PostgresWatch:
    """Whether PostgreSQL is taken to be up. While it is not, requests do not wait for it.

    The first failure marks it down and starts one background probe, which pings it every
    `PROBE_INTERVAL_S`; when it answers, the probe runs the recovery callbacks (quota
    reconciliation) and marks it up again.
    """

    def __init__(self, store: Store, *, interval_s: float = PROBE_INTERVAL_S) -> None:
        self._store = store
        self._interval = interval_s
        self._up = True
        self._probe: asyncio.Task[None] | None = None
        self._on_recovery: list[Callable[[], Awaitable[None]]] = []

    @property
    def up(self) -> bool:
        """Whether to ask PostgreSQL (False: decide from the last good state)."""
        return self._up

    def on_recovery(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` when PostgreSQL answers again, before it is used again."""
        self._on_recovery.append(callback)

    def failed(self, exc: BaseException) -> None:
        """A call failed with one of `DATABASE_DOWN`: mark PostgreSQL down, start the probe."""
        if self._up:
            log.warning("PostgreSQL unavailable (%s); ingesting from the last good state", exc)
        self._up = False
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._wait_for_recovery())

    async def _wait_for_recovery(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._store.ping()
                for callback in self._on_recovery:
                    await callback()
            except DATABASE_DOWN:
                continue
            except Exception:
                # A bug, not an outage: say so, and keep trying rather than staying down.
                log.exception("recovery from a PostgreSQL outage failed; retrying")
                continue
            self._up = True
            log.warning("PostgreSQL answers again")
            return

    async def close(self) -> None:
        """Stop the probe."""
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe


@dataclass(frozen=True, slots=True)
class Reservation:
    """Quota granted to a request, and the accounts whose quota could not be decided."""

    grants: dict[str, int]
    undecided: frozenset[str] = frozenset()
    #: Granted here while PostgreSQL was down (given back here too).
    local: bool = False


@dataclass(slots=True)
class _Batch:
    """Counts on their way into PostgreSQL: kept, with their id, until they are in."""

    batch_id: uuid.UUID
    counts: dict[tuple[str, date], int] = field(default_factory=dict)


class QuotaKeeper:
    """Daily quotas: reserved in PostgreSQL while it answers, counted here while it does not.

    Each reservation in PostgreSQL reports the account's quota and use; while PostgreSQL is
    down, grants come out of that (if read at most `staleness_s` ago; on a new UTC day the
    use starts from 0), are counted as pending, and are added to `account_daily_counts` by
    `reconcile` once it answers. Like the rate limits, this counting is per process: N API
    processes in an outage can each grant an account's remaining quota.
    """

    def __init__(
        self,
        store: Store,
        watch: PostgresWatch,
        staleness_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._watch = watch
        self._staleness = staleness_s
        self._clock = clock
        # Per account, as PostgreSQL last reported it (plus the grants made here since): the
        # quota, the day and the use on that day, and when it was read. Separate dicts, filled
        # with one C-level update each per request (no object per account on the hot path).
        self._quota: dict[str, int] = {}
        self._day: dict[str, date] = {}
        self._used: dict[str, int] = {}
        self._read_at: dict[str, float] = {}
        self._pending: defaultdict[tuple[str, date], int] = defaultdict(int)
        self._batch: _Batch | None = None
        watch.on_recovery(self.reconcile)

    @property
    def unreconciled(self) -> int:
        """Events granted here and not yet added to PostgreSQL."""
        batch = sum(self._batch.counts.values()) if self._batch else 0
        return sum(self._pending.values()) + batch

    async def reserve(self, wanted: dict[str, int], day: date, default_quota: int) -> Reservation:
        """Grant up to `wanted[account]` events of each account's quota for `day`."""
        if self._watch.up:
            try:
                grants, uses = await self._store.reserve_quota_counted(wanted, day, default_quota)
            except DATABASE_DOWN as exc:
                self._watch.failed(exc)
            else:
                if len(self._read_at) > MAX_KNOWN:
                    self._forget()
                self._quota.update(zip(uses.accounts, uses.quotas, strict=True))
                self._used.update(zip(uses.accounts, uses.used, strict=True))
                self._day.update(dict.fromkeys(uses.accounts, day))
                self._read_at.update(dict.fromkeys(uses.accounts, self._clock()))
                return Reservation(grants)
        return self._reserve_here(wanted, day)

    def _forget(self) -> None:
        for known in (self._quota, self._used, self._day, self._read_at):
            known.clear()

    def _reserve_here(self, wanted: dict[str, int], day: date) -> Reservation:
        now = self._clock()
        grants: dict[str, int] = {}
        undecided: set[str] = set()
        for account, n in wanted.items():
            read_at = self._read_at.get(account)
            if read_at is None or now - read_at > self._staleness or self._day[account] > day:
                undecided.add(account)
                continue
            if self._day[account] < day:  # a new UTC day began since: its use starts at 0
                self._day[account], self._used[account] = day, 0
            granted = max(0, min(n, self._quota[account] - self._used[account]))
            self._used[account] += granted
            self._pending[(account, day)] += granted
            grants[account] = granted
        return Reservation(grants, frozenset(undecided), local=True)

    async def release(self, reservation: Reservation, unused: dict[str, int], day: date) -> None:
        """Give back quota reserved for events that were not sent after all."""
        unused = {a: n for a, n in unused.items() if n > 0}
        if not unused:
            return
        if not reservation.local and self._watch.up:
            try:
                await self._store.release_quota(unused, day)
            except DATABASE_DOWN as exc:
                self._watch.failed(exc)
            else:
                return
        for account, n in unused.items():
            self._pending[(account, day)] -= n
            if self._day.get(account) == day:
                self._used[account] = max(0, self._used[account] - n)

    async def reconcile(self) -> None:
        """Add the counts made while PostgreSQL was down to it (called when it is back).

        Raises one of `DATABASE_DOWN` if it is not; the counts are kept for the next try.
        Counts made while this runs are added too, before it returns.
        """
        while True:
            if self._batch is None:
                counts = {key: n for key, n in self._pending.items() if n}
                self._pending.clear()
                if not counts:
                    return
                self._batch = _Batch(uuid.uuid4(), counts)
            batch = self._batch
            await self._store.reconcile_quota(batch.batch_id, batch.counts)
            self._batch = None
            log.warning(
                "added %d events counted during the PostgreSQL outage to the daily quotas of"
                " %d accounts",
                sum(batch.counts.values()),
                len({account for account, _ in batch.counts}),
            )
