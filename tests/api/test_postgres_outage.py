"""PostgreSQL stopped for a minute under load: POST /v1/events keeps accepting from the last
good state, within the staleness bound, and loses nothing it acknowledged.

Two servers run side by side against the same (real) PostgreSQL of the stack: one with a
bound longer than the outage, one with a bound of `SHORT_S`. Load runs before, during and
after the outage. Then: every acknowledged event is in Kafka; the quota counted during the
outage is in `account_daily_counts`, exactly; a revoked token was accepted only while its
revocation was younger than the bound; a token never seen before the outage got 503.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import httpx
import psycopg
import pytest

from meterstream.api import admin
from meterstream.api.auth import NewToken
from meterstream.api.outage import PostgresWatch, QuotaKeeper, Reservation
from meterstream.api.store import Store
from meterstream.config import Settings
from meterstream.stack import postgres
from tests.api.conftest import RunningApi, Tenant, post_batch, read_topic

pytestmark = pytest.mark.integration

OUTAGE_S = 60.0
SHORT_S = 20.0
QUOTA = 400
USED_BEFORE = 100


@dataclass
class Sent:
    """One request: when it started (monotonic), its status, the ids it got acknowledged."""

    started: float
    status: int
    error: str | None
    accepted: list[str]
    reasons: list[str]


@dataclass
class Load:
    """Batches sent in a loop by one thread: to one server, with one token, for one account."""

    api: RunningApi
    token: str
    account: str
    size: int = 20
    pause_s: float = 0.2
    sent: list[Sent] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        prefix = uuid.uuid4().hex[:8]
        with self.api.client(self.token) as http:
            n = 0
            while not self.stop.is_set():
                started = time.monotonic()
                response = post_batch(http, f"{prefix}-{n}", self.account, self.size)
                self.sent.append(record(started, response))
                n += 1
                self.stop.wait(self.pause_s)

    def accepted(self) -> list[str]:
        return [i for s in self.sent for i in s.accepted]


def record(started: float, response: httpx.Response) -> Sent:
    doc = response.json()
    results = doc.get("results", [])
    return Sent(
        started,
        response.status_code,
        doc.get("error"),
        [r["id"] for r in results if r["status"] == "accepted"],
        [r.get("reason", "") for r in results if r["status"] == "rejected"],
    )


def daily_counts(settings: Settings, accounts: list[str]) -> dict[str, int]:
    with psycopg.connect(settings.postgres.conninfo) as conn:
        rows = conn.execute(
            "SELECT account_id, events FROM account_daily_counts"
            " WHERE account_id = ANY(%s) AND day = %s",
            (accounts, datetime.now(UTC).date()),
        ).fetchall()
    return {account: events for account, events in rows}


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


@dataclass
class Outage:
    """What happened around the outage: the loads, the one-off requests, the instants."""

    steady: list[Load]
    revoked: list[Load]
    quota: Load
    revoked_at: float = 0.0
    stopped_at: float = 0.0
    restarted_at: float = 0.0
    recovered_at: float = 0.0
    never_seen: httpx.Response | None = None
    foreign: httpx.Response | None = None
    #: Ids accepted for the revoked token while waiting for the servers to see the revocation.
    polled: list[str] = field(default_factory=list)


def run_outage(run: Outage, stack: Settings, servers: list[RunningApi], doomed: NewToken) -> None:
    """Load; revoke a token; stop PostgreSQL for `OUTAGE_S` under load; start it again.

    Returns once both servers use PostgreSQL again (the revoked token gets 401).
    """
    threads = [threading.Thread(target=load.run, daemon=True) for load in run.steady]
    for thread in threads:
        thread.start()
    time.sleep(3)
    assert admin.revoke_token(stack, doomed.token_id)
    run.revoked_at = time.monotonic()  # the revocation committed before this
    postgres.stop(stack)
    run.stopped_at = time.monotonic()  # every read before the outage happened before this
    try:
        later = [
            threading.Thread(target=load.run, daemon=True) for load in [*run.revoked, run.quota]
        ]
        for thread in later:
            thread.start()
        threads += later
        time.sleep(OUTAGE_S - (time.monotonic() - run.stopped_at))
    finally:
        postgres.start(stack)
    run.restarted_at = time.monotonic()

    def both_refuse() -> bool:
        statuses = []
        for api in servers:
            with api.client(doomed.token) as http:
                sent = record(
                    time.monotonic(), post_batch(http, "after-revoked", run.revoked[0].account)
                )
            run.polled += sent.accepted
            statuses.append(sent.status)
        return statuses == [401, 401]

    wait_for(both_refuse, 120, "the revoked token is still accepted after PostgreSQL came back")
    run.recovered_at = time.monotonic()
    time.sleep(2)
    for load in [*run.steady, *run.revoked, run.quota]:
        load.stop.set()
    for thread in threads:
        thread.join(timeout=30)


def test_postgres_down_a_minute_under_load_keeps_ingesting_within_the_staleness_bound(
    serve_api: Callable[..., RunningApi],
    make_tenant: Callable[..., Tenant],
    stack: Settings,
) -> None:
    long = serve_api(max_staleness_seconds=int(OUTAGE_S * 10))
    short = serve_api(max_staleness_seconds=int(SHORT_S))
    tenant, limited = make_tenant(2), make_tenant(1, quota=QUOTA)
    doomed = admin.create_token(stack, tenant.org_id, ["ingest:write"])
    unseen = admin.create_token(stack, tenant.org_id, ["ingest:write"]).token
    good = tenant.tokens["ingest"]
    a0, a1 = tenant.accounts
    q = limited.accounts[0]
    # The last good state: each server reads the tokens, the owners and the quotas once.
    for api in (long, short):
        with api.client(doomed.token) as http:
            assert post_batch(http, f"warm-{uuid.uuid4().hex[:6]}", a1).status_code == 202
    with long.client(limited.tokens["ingest"]) as http:
        assert post_batch(http, "q-before", q, USED_BEFORE).status_code == 202
    run = Outage(
        steady=[Load(long, good, a0), Load(short, good, a0)],
        revoked=[Load(long, doomed.token, a1), Load(short, doomed.token, a1)],
        quota=Load(long, limited.tokens["ingest"], q, size=50, pause_s=0.5),
    )
    outage = threading.Thread(target=run_outage, args=(run, stack, [long, short], doomed))
    outage.start()
    time.sleep(8)  # into the outage
    with long.client(unseen) as http:
        never_seen = post_batch(http, "unseen", a0, 5)
    with long.client(good) as http:
        foreign = post_batch(http, "foreign", "acct-of-nobody-we-know", 5)
    outage.join()
    print(  # noqa: T201 - the timeline, in the test's output
        f"outage {run.restarted_at - run.stopped_at:.1f} s; both servers on PostgreSQL again"
        f" {run.recovered_at - run.restarted_at:.1f} s after its restart"
    )

    # Never decidable from the last good state: a token this server had not seen, and an
    # account outside the organisation's list (it may have been added since).
    assert never_seen.status_code == 503, never_seen.text
    assert never_seen.json()["error"] == "DATABASE_UNAVAILABLE"
    assert never_seen.headers["retry-after"]
    assert foreign.status_code == 503, foreign.text
    assert {r["status"] for r in foreign.json()["results"]} == {"failed"}

    # The long bound outlasts the outage: no request was refused, before, during or after.
    steady_long, steady_short = run.steady
    during = [s for s in steady_long.sent if run.stopped_at < s.started < run.restarted_at]
    assert len(during) > 50
    assert {s.status for s in steady_long.sent} == {202}
    assert {s.status for s in run.revoked[0].sent if s.started < run.restarted_at} == {202}

    # The short bound: accepted until it ran out, then refused until PostgreSQL was back.
    for sent in steady_short.sent:
        if run.stopped_at + SHORT_S < sent.started < run.restarted_at:
            assert (sent.status, sent.error) == (503, "DATABASE_UNAVAILABLE")
    assert any(s.status == 202 for s in steady_short.sent if run.stopped_at < s.started)
    # Nothing accepted for the revoked token once its revocation was older than the bound.
    late = [s for s in run.revoked[1].sent if s.started > run.revoked_at + SHORT_S]
    assert late, "no request with the revoked token after the bound ran out"
    assert all(s.status in (401, 503) for s in late)
    assert any(s.status == 202 for s in run.revoked[1].sent)  # within the bound: accepted

    # The quota was counted during the outage: exactly what was left, then QUOTA_EXCEEDED.
    assert len(run.quota.accepted()) == QUOTA - USED_BEFORE
    assert "QUOTA_EXCEEDED" in {r for s in run.quota.sent for r in s.reasons}

    # Every acknowledged event is in Kafka; the quotas count every one of them, once.
    for api, loads in (
        (long, [steady_long, run.revoked[0], run.quota]),
        (short, [steady_short, run.revoked[1]]),
    ):
        acknowledged = {i for load in loads for i in load.accepted()}
        stored = read_topic(api.settings, api.topic, len(acknowledged))
        assert acknowledged <= {json.loads(v)["id"] for _, v in stored}
    expected = {
        a0: len(steady_long.accepted()) + len(steady_short.accepted()),
        # + the warm-ups, and what the servers accepted while they were being asked to refuse
        a1: sum(len(load.accepted()) for load in run.revoked) + 40 + len(run.polled),
        q: QUOTA,
    }
    wait_for(
        lambda: daily_counts(stack, list(expected)) == expected,
        60,
        f"quota counts {daily_counts(stack, list(expected))} != {expected}",
    )


def test_quota_counted_while_down_is_added_once_when_postgres_answers_again(
    stack: Settings, make_tenant: Callable[..., Tenant]
) -> None:
    """The quota keeper without stopping PostgreSQL: marked down, it grants from what it read
    (a new UTC day starts from nothing; an account it never read is undecided), gives back
    what was not sent, and its probe adds the counts once; a batch sent again is not added."""
    tenant = make_tenant(3, quota=100)
    known, other, never = tenant.accounts
    today = datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)

    async def scenario() -> tuple[list[Reservation], dict[tuple[str, date], int]]:
        store = Store(stack, max_size=2)
        await store.open()
        try:
            watch = PostgresWatch(store, interval_s=0.2)
            keeper = QuotaKeeper(store, watch, staleness_s=60)
            first = await keeper.reserve({known: 30, other: 90}, today, 50_000_000)
            watch.failed(OSError("test: taken as down"))
            out = [
                first,
                await keeper.reserve({known: 80, other: 5, never: 1}, today, 50_000_000),
                await keeper.reserve({known: 100}, tomorrow, 50_000_000),
            ]
            await keeper.release(out[1], {known: 10}, today)
            assert keeper.unreconciled == 70 - 10 + 5 + 100
            while not watch.up:  # the probe pings, reconciles, and marks it up
                await asyncio.sleep(0.1)
            assert keeper.unreconciled == 0
            batch = {(known, today): 1}
            batch_id = uuid.uuid4()
            assert await store.reconcile_quota(batch_id, batch)
            assert not await store.reconcile_quota(batch_id, batch)  # sent again: not added
            await watch.close()
            return out, batch
        finally:
            await store.close()

    reservations, _ = asyncio.run(scenario())

    assert reservations[0] == Reservation({known: 30, other: 90})
    assert reservations[1] == Reservation({known: 70, other: 5}, frozenset({never}), local=True)
    assert reservations[2] == Reservation({known: 100}, local=True)
    with psycopg.connect(stack.postgres.conninfo) as conn:
        rows = dict(
            conn.execute(
                "SELECT account_id || ' ' || day, events FROM account_daily_counts"
                " WHERE account_id = ANY(%s)",
                (tenant.accounts,),
            ).fetchall()
        )
    assert rows == {
        f"{known} {today}": 30 + 70 - 10 + 1,
        f"{other} {today}": 95,
        f"{known} {tomorrow}": 100,
    }
