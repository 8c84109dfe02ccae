"""Test and demo helpers shipped with the package: named instants and a seeded event generator.

The generator makes what billing pipelines meet in practice: retried duplicates (same id, same
payload), out-of-order event times across a month boundary, and malformed records.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
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


#: Billing time zones of the adversarial generator's accounts: UTC, both sides of the date
#: line (+14 and -11), and half- and quarter-hour offsets.
ADVERSARIAL_ZONES = (
    "UTC",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/Los_Angeles",
)

#: A string the JVM fast path leaves to the Python rules (a quote and a backslash need
#: escaping in canonical JSON), so that a record carrying it takes the other path.
PYTHON_PATH_TEXT = 'x/y "q" \\ é'


#: Shares of the adversarial stream: malformed records, exact retries, conflicting repeats,
#: instants spelled oddly; values past 2^53, odd strings and extra fields in `data`.
ADVERSARIAL_SHARES = {
    "malformed": 0.04,
    "retry": 0.10,
    "conflict": 0.08,
    "odd_instant": 0.25,
    "big_integer": 0.05,
    "odd_string": 0.05,
    "extra_field": 0.05,
}


def _odd_instant(moment: datetime, rng: random.Random) -> str:
    """`moment` spelled one of the ways RFC 3339 allows (or nearly: the rules decide)."""
    spellings = (
        lambda: moment.isoformat(),  # noqa: PLW0108 - one spelling among lambdas
        lambda: moment.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(),
        lambda: moment.astimezone(timezone(timedelta(hours=-11))).isoformat(),
        lambda: rfc3339(moment).replace("T", "t").replace("Z", "z"),
        lambda: moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z",
        lambda: moment.strftime("%Y-%m-%d %H:%M:%SZ"),
        lambda: moment.strftime("%Y-%m-%dT%H:%M:%S-00:00"),
    )
    return rng.choice(spellings)()


ADVERSARIAL_MALFORMED = (
    b"",
    b"null",
    b"[1, 2]",
    b'"a string"',
    b'{"id": "truncated',
    b'{"specversion": "1.0", "id": "dup", "id": "dup2"}',
    b"\xff\xfe not utf-8",
    b'{"data": NaN}',
)


def _malformed_event(event: dict[str, Any], kind: int, rng: random.Random) -> bytes:
    """One of ~20 ways to get an event wrong; the rest of it is a valid llm_tokens event."""
    bad = json.loads(json.dumps(event))
    now = datetime.now(UTC)
    edits: tuple[Any, ...] = (
        lambda: bad.pop("subject"),
        lambda: bad.update(id=""),
        lambda: bad.update(id="i" * 257),
        lambda: bad.update(subject="has spaces"),
        lambda: bad.update(time="31/10/2026 23:59"),
        lambda: bad.update(time=rfc3339(now + timedelta(hours=2))),
        lambda: bad.update(time=rfc3339(now - timedelta(days=40))),
        lambda: bad.update(type="teleportations"),
        lambda: bad.update(dataschema="schemas/llm_tokens/v9"),
        lambda: bad.update(data=[1, 2]),
        lambda: bad.update(data=None),
        lambda: bad["data"].update(tokens="five"),
        lambda: bad["data"].update(tokens=-5),
        lambda: bad["data"].update(tokens=10**30),
        lambda: bad["data"].update(tokens=True),
        lambda: bad["data"].pop("model"),
    )
    index = kind % (len(edits) + len(ADVERSARIAL_MALFORMED))
    if index >= len(edits):
        return ADVERSARIAL_MALFORMED[index - len(edits)]
    edits[index]()
    return json.dumps(bad, ensure_ascii=rng.random() < 1 / 2).encode()


def _adversarial_data(meter: str, rng: random.Random) -> dict[str, Any]:
    """`sample_data`, sometimes with values past 2^53, odd strings or an extra field."""
    data = sample_data(meter, rng)
    roll = rng.random() - ADVERSARIAL_SHARES["big_integer"]
    if roll < 0:
        if meter == "llm_tokens":
            data["tokens"] = 2**53 + rng.randrange(1, 1000)
        return data
    roll -= ADVERSARIAL_SHARES["odd_string"]
    if roll < 0:
        if meter == "llm_tokens":
            data["model"] = rng.choice([PYTHON_PATH_TEXT, "modèle-ü", "a/b", "tab\tbed"])
        return data
    if roll < ADVERSARIAL_SHARES["extra_field"]:
        data["note"] = PYTHON_PATH_TEXT
    return data


def adversarial(
    n: int,
    *,
    seed: int = 13,
    accounts: int = 150,
    account_prefix: str = "adv",
    around: datetime = PERIOD_START,
    spread: timedelta = timedelta(hours=16),
) -> tuple[list[Record], dict[str, str]]:
    """A stream nobody would send on purpose, and each account's billing time zone.

    `n` records over `accounts` accounts in `ADVERSARIAL_ZONES`, with event times around a
    month boundary (which is another instant in every zone), out of order: client retries,
    conflicting repeats (same idempotency key, other content) of which one of the two often
    takes the Python path, `seats` reports colliding on (account, meter, time), odd spellings
    of instants, integers past 2^53, and ~25 kinds of malformed record.
    """
    rng = random.Random(seed)
    zones = {
        f"{account_prefix}-{i:04d}": ADVERSARIAL_ZONES[i % len(ADVERSARIAL_ZONES)]
        for i in range(accounts)
    }
    names = list(zones)
    records: list[Record] = []
    sent: list[tuple[str, dict[str, Any]]] = []
    while len(records) < n:
        account = rng.choice(names)
        roll = rng.random()
        if roll < ADVERSARIAL_SHARES["malformed"]:
            base = cloud_event(
                f"bad-{len(records)}", account, "llm_tokens", around, {"tokens": 1, "model": "m"}
            )
            records.append(Record(account.encode(), _malformed_event(base, len(records), rng)))
            continue
        roll -= ADVERSARIAL_SHARES["malformed"]
        if roll < ADVERSARIAL_SHARES["retry"] and sent:
            # A client retry: exactly the same bytes again, a little later.
            records.append(rng.choice(records[-40:]))
            continue
        roll -= ADVERSARIAL_SHARES["retry"]
        if roll < ADVERSARIAL_SHARES["conflict"] and sent:
            # A conflicting repeat: the same key, other content (often on the other path).
            account, event = rng.choice(sent[-40:])
            other = {**event, "data": _adversarial_data(event["type"], rng)}
            if rng.random() < 1 / 2:
                other["data"]["note"] = PYTHON_PATH_TEXT
            records.append(Record(account.encode(), json.dumps(other).encode()))
            continue
        meter = rng.choice(SAMPLE_METERS)
        moment = around + timedelta(seconds=rng.uniform(-1, 1) * spread.total_seconds())
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        if meter == "seats":
            # Reports identified by (account, meter, time): whole seconds make them collide.
            moment = moment.replace(microsecond=0, second=rng.choice((0, 30)))
        event = cloud_event(
            f"{account_prefix}-{seed}-{len(records)}",
            account,
            meter,
            moment,
            _adversarial_data(meter, rng),
        )
        if rng.random() < ADVERSARIAL_SHARES["odd_instant"]:
            event["time"] = _odd_instant(moment, rng)
        sent.append((account, event))
        records.append(Record(account.encode(), json.dumps(event, ensure_ascii=False).encode()))
    return records, zones


#: An envelope `source` the JVM fast path leaves to the Python rules (a character outside the
#: Basic Multilingual Plane). The source is not part of an event's content: a copy carrying it
#: is an exact retry that takes the other path.
PYTHON_PATH_SOURCE = "sdk-\U0001f600"

PATHS = ("jvm", "python")


@dataclass(frozen=True, slots=True)
class Repeat:
    """Two arrivals of one (account, idempotency key), each checked by the stated path.

    `first` must be counted; `later` is a retry (same content: not logged) or a conflict
    (other content: logged as DUPLICATE_ID_CONFLICT).
    """

    first: Record
    later: Record
    paths: tuple[str, str]
    conflict: bool
    meter: str


def _repeat_event(
    meter: str, account: str, key: str, moment: datetime, *, variant: int | None, python: bool
) -> Record:
    """One arrival of `key`: content `variant` of a conflict (0 or 1), or of a retry (None)."""
    if meter == "seats":
        # Idempotent on (account, meter, time): a conflict has two ids, one key.
        event_id, data = f"{key}-{variant or 0}", {"seats": 10 + 5 * (variant or 0)}
    else:
        # A conflict on the Python path also moves the tokens to a model the JVM leaves alone.
        if variant is None:
            model = "small"
        else:
            model = f"{PYTHON_PATH_TEXT}{variant}" if python else ("small", "large")[variant]
        event_id, data = key, {"tokens": 100 + 1000 * (variant or 0), "model": model}
    event = cloud_event(event_id, account, meter, moment, data)
    if python:
        event["source"] = PYTHON_PATH_SOURCE
    return Record(account.encode(), json.dumps(event, ensure_ascii=False).encode())


def repeats(
    prefix: str, *, accounts: int = 4, copies: int = 2, around: datetime = PERIOD_START
) -> list[Repeat]:
    """Every way a repeat can meet the job's two validation paths.

    For an id-keyed SUM meter segmented by model (`llm_tokens`, where a conflict moves the
    quantity to another segment) and a meter keyed on (account, meter, time) (`seats`): each
    (first path, later path) pair, as a retry and as a conflict, `copies` times, spread over
    `accounts` accounts and minutes on both sides of `around`.
    """
    out: list[Repeat] = []
    for meter in ("llm_tokens", "seats"):
        for paths in ((a, b) for a in PATHS for b in PATHS):
            for conflict in (False, True):
                for _ in range(copies):
                    n = len(out)
                    account = f"{prefix}-{n % accounts:02d}"
                    moment = around + timedelta(minutes=n - 40)
                    key = f"{prefix}-r{n}"
                    first, later = (
                        _repeat_event(
                            meter,
                            account,
                            key,
                            moment,
                            variant=i if conflict else None,
                            python=paths[i] == "python",
                        )
                        for i in (0, 1)
                    )
                    out.append(Repeat(first, later, paths, conflict, meter))
    return out
