"""Token-bucket rate limits per token and per account, so one tenant cannot starve the others.

Buckets live in the API process: with N processes behind a balancer, each allows the rate, so
set the limits per process. Daily quotas are global (PostgreSQL, see `Store.reserve_quota`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens per second, holding at most `burst`; starts full.

    >>> b = TokenBucket(rate=10, burst=20, tokens=20, updated=0.0)
    >>> b.take(25, now=0.0), b.take(20, now=0.0), b.wait_for(5, now=0.0)
    (False, True, 0.5)
    """

    rate: float
    burst: float
    tokens: float
    updated: float

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, n: float, now: float) -> float:
        """Seconds until `n` tokens are there (0 if they are now; inf if `n` > burst)."""
        self._refill(now)
        if n > self.burst:
            return math.inf
        return max(0.0, (n - self.tokens) / self.rate)

    def take(self, n: float, now: float) -> bool:
        """Take `n` tokens if there are enough; nothing is taken otherwise."""
        if self.wait_for(n, now) > 0:
            return False
        self.tokens -= n
        return True


@dataclass(frozen=True, slots=True)
class Limit:
    """A bucket's rate and burst."""

    rate: float
    burst: float


class RateLimiter:
    """Named token buckets (e.g. `("token", id)`, `("account", id)`), created on first use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_buckets: int = 200_000):
        self._clock = clock
        self._buckets: dict[Hashable, TokenBucket] = {}
        self._max = max_buckets

    def _bucket(self, key: Hashable, limit: Limit, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(limit.rate, limit.burst, limit.burst, now)
            self._buckets[key] = bucket
        return bucket

    def _evict_full(self, now: float) -> None:
        """Forget buckets that have refilled: they behave exactly like new ones."""
        for key in [k for k, b in self._buckets.items() if b.wait_for(b.burst, now) == 0]:
            del self._buckets[key]

    def try_take(self, wanted: dict[Hashable, tuple[Limit, float]]) -> float:
        """Take from every bucket at once, or from none; return 0, or seconds to wait.

        `wanted` maps a bucket key to its limit and the tokens needed. Taking all-or-nothing
        means a refused request consumes nothing, so its retry is judged afresh.
        """
        now = self._clock()
        if len(self._buckets) + len(wanted) > self._max:
            # Before, not while, taking: a bucket looked at below must not be evicted meanwhile.
            self._evict_full(now)
        wait = 0.0
        # Inlined `TokenBucket.wait_for`: a batch asks this for hundreds of accounts at once.
        buckets: list[tuple[TokenBucket, float]] = []
        for key, (limit, n) in wanted.items():
            bucket = self._bucket(key, limit, now)
            if now > bucket.updated:
                bucket.tokens = min(
                    bucket.burst, bucket.tokens + (now - bucket.updated) * bucket.rate
                )
                bucket.updated = now
            if n > bucket.burst:
                wait = math.inf
            elif n > bucket.tokens:
                wait = max(wait, (n - bucket.tokens) / bucket.rate)
            buckets.append((bucket, n))
        if wait > 0:
            return wait
        for bucket, n in buckets:
            bucket.tokens -= n
        return 0.0

    async def wait_take(self, key: Hashable, limit: Limit, n: float) -> None:
        """Take `n` tokens, sleeping until they are there (back-pressure for uploads)."""
        n = min(n, limit.burst)
        while (wait := self.try_take({key: (limit, n)})) > 0:
            await asyncio.sleep(min(wait, 1.0))


def retry_after(wait_s: float) -> str:
    """The Retry-After header value: whole seconds, rounded up, at least 1.

    >>> retry_after(0.2), retry_after(2.5)
    ('1', '3')
    """
    return str(max(1, math.ceil(min(wait_s, 3600.0))))
