"""Test and demo helpers shipped with the package: named instants and a seeded event generator.

The generator makes what billing pipelines meet in practice: retried duplicates (same id, same
payload), out-of-order event times across a month boundary, and malformed records.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any


def month_boundary(now: datetime) -> datetime:
    """The latest start of a UTC month at least one day before `now`.

    Events generated around it are never in the future and never older than the 35-day
    deduplication window, whatever day the tests run.

    >>> month_boundary(datetime(2026, 11, 25, tzinfo=UTC)).isoformat()
    '2026-11-01T00:00:00+00:00'
    >>> month_boundary(datetime(2026, 12, 1, 5, tzinfo=UTC)).isoformat()
    '2026-11-01T00:00:00+00:00'
    """
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    if now - start >= timedelta(days=1):
        return start
    previous = start - timedelta(days=1)
    return datetime(previous.year, previous.month, 1, tzinfo=UTC)


#: The month boundary the generator straddles: the first instant of a period and the last
#: millisecond of the period before it (relative to when the tests run).
PERIOD_START = month_boundary(datetime.now(UTC))
LAST_MS_OF_MONTH = PERIOD_START - timedelta(milliseconds=1)

MALFORMED_KINDS = ("not_json", "missing_field", "bad_timestamp", "wrong_type", "unknown_meter")


def rfc3339(moment: datetime) -> str:
    """Format a UTC instant the way clients send it: `2026-10-31T23:59:59.999Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cloud_event(
    event_id: str,
    account: str,
    meter: str,
    moment: datetime,
    data: dict[str, Any],
    *,
    source: str = "meterstream-testing",
) -> dict[str, Any]:
    """A CloudEvents 1.0 usage event."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": meter,
        "subject": account,
        "time": rfc3339(moment),
        "datacontenttype": "application/json",
        "data": data,
    }


SAMPLE_METERS = (
    "api_calls",
    "llm_tokens",
    "storage_gb_hours",
    "active_users",
    "seats",
    "compute_peak_cores",
    "request_latency_ms",
    "prepaid_balance",
)


def sample_data(meter: str, rng: random.Random) -> dict[str, Any]:
    """A plausible `data` payload for one of the sample meters in `schemas/`."""
    makers: dict[str, Any] = {
        "llm_tokens": lambda: {
            "tokens": rng.randint(1, 4000),
            "model": rng.choice(["small", "large"]),
        },
        "storage_gb_hours": lambda: {
            "gb_hours": round(rng.uniform(0, 50), 3),
            "bucket": rng.choice(["logs", "media"]),
        },
        "active_users": lambda: {"user_id": f"user-{rng.randrange(40)}"},
        "seats": lambda: {"seats": rng.randint(1, 500)},
        "compute_peak_cores": lambda: {
            "cores": round(rng.uniform(0.5, 64), 1),
            "region": rng.choice(["eu", "us"]),
        },
        "request_latency_ms": lambda: {"latency_ms": round(rng.uniform(1, 900), 2)},
        "prepaid_balance": lambda: {"balance_cents": rng.randint(-5_000, 100_000)},
    }
    maker = makers.get(meter)
    if maker is None:
        return {"endpoint": rng.choice(["/v1/search", "/v1/embed"]), "status": 200}
    return dict(maker())


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record: key (the account id, or None) and value."""

    key: bytes | None
    value: bytes


def malformed(kind: str, rng: random.Random, account: str) -> bytes:
    """A broken record of the given kind (see MALFORMED_KINDS)."""
    good = cloud_event(
        f"bad-{rng.getrandbits(48):x}",
        account,
        "llm_tokens",
        LAST_MS_OF_MONTH,
        {"tokens": 5, "model": "small"},
    )
    if kind == "not_json":
        return b'{"id": "truncated'
    if kind == "missing_field":
        del good["subject"]
    elif kind == "bad_timestamp":
        good["time"] = "31/10/2026 23:59"
    elif kind == "wrong_type":
        good["data"]["tokens"] = "five"
    elif kind == "unknown_meter":
        good["type"] = "no_such_meter"
    return json.dumps(good).encode()


def generate(
    n: int,
    *,
    seed: int = 7,
    accounts: int = 20,
    account_prefix: str = "acct",
    duplicate_rate: float = 0.1,
    malformed_rate: float = 0.02,
    meters: tuple[str, ...] = SAMPLE_METERS,
    around: datetime = PERIOD_START,
    spread: timedelta = timedelta(hours=6),
) -> list[Record]:
    """`n` new events (plus retried duplicates and malformed records), out of order in event time.

    Event times are spread uniformly over `around ± spread`, so with the default they straddle
    a month boundary and arrive in random order. `seats` events (keyed by account, meter and
    time) get whole-second times so that retries collide as they should.
    """
    rng = random.Random(seed)
    records: list[Record] = []
    sent: list[Record] = []
    for i in range(n):
        account = f"{account_prefix}-{rng.randrange(accounts):04d}"
        if rng.random() < malformed_rate:
            kind = MALFORMED_KINDS[i % len(MALFORMED_KINDS)]
            records.append(Record(account.encode(), malformed(kind, rng, account)))
            continue
        meter = rng.choice(meters)
        moment = around + timedelta(seconds=rng.uniform(-1, 1) * spread.total_seconds())
        if meter == "seats":
            moment = moment.replace(microsecond=0)
        event = cloud_event(
            f"{account_prefix}-evt-{seed}-{i}", account, meter, moment, sample_data(meter, rng)
        )
        record = Record(account.encode(), json.dumps(event).encode())
        records.append(record)
        sent.append(record)
        if rng.random() < duplicate_rate:
            # A client retry: the same record again, a little later in the stream.
            records.append(rng.choice(sent[-50:]))
    return records
