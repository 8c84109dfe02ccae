"""The benchmark workload: a seeded stream of realistic CloudEvents for many skewed accounts.

10,000 accounts drawn from a Zipf distribution (a few accounts send most events), every meter in
`schemas/`, ~5% retried duplicates, ~2% out-of-order and a few late event times, ~1% malformed
records, and envelopes of about 300 bytes (a `traceparent` extension as real gateways send).
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from meterstream.meters.model import MeterDefinition
from meterstream.meters.registry import MeterRegistry
from meterstream.testing import MALFORMED_KINDS, Record, cloud_event, malformed, sample_data

#: Meters `meterstream.testing.sample_data` knows; others get data derived from their schema.
SAMPLE_METERS = frozenset({"api_calls", "llm_tokens", "storage_gb_hours"})
#: Keys of a meter's `meterstream` block that make it a segmented (group-by) meter.
SEGMENT_KEYS = ("group_by", "dimensions", "segments")
#: Retries re-send one of the last few hundred records, as a client retrying a batch would.
RETRY_WINDOW = 500
ACCOUNT_CHUNK = 65_536


@dataclass(frozen=True, slots=True)
class Workload:
    """What to generate; the defaults are the benchmark's realistic mix.

    Attributes:
        records: Kafka records in total (new events + duplicates + malformed).
        accounts: distinct accounts; picked with a Zipf law of exponent `zipf_s`.
        duplicate_rate: share of records that re-send an earlier record byte for byte.
        out_of_order_rate: share of events whose time is up to 10 minutes in the past.
        late_rate: share of events whose time is 1 to 20 days in the past (an earlier period).
        malformed_rate: share of records that are rejected by validation.
        events_per_second: event-time pace (time advances 1/this per new event).
    """

    records: int
    seed: int = 42
    accounts: int = 10_000
    zipf_s: float = 1.1
    account_prefix: str = "bench"
    duplicate_rate: float = 0.05
    out_of_order_rate: float = 0.02
    late_rate: float = 0.002
    malformed_rate: float = 0.01
    events_per_second: float = 10_000.0
    start: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))


@dataclass(frozen=True, slots=True)
class Generated:
    """The records and what is in them (for the report)."""

    records: list[Record]
    kinds: Counter[str]
    meters: tuple[str, ...]
    segmented_meters: tuple[str, ...]

    @property
    def mean_bytes(self) -> float:
        """Mean record value size in bytes."""
        return sum(len(r.value) for r in self.records) / max(1, len(self.records))

    @property
    def distinct_events(self) -> int:
        """Valid events with a new id (in order, out of order or late): the keys dedup keeps."""
        return self.kinds["new"] + self.kinds["out_of_order"] + self.kinds["late"]


def is_segmented(meter: MeterDefinition) -> bool:
    """Whether a meter groups its totals by dimensions (any of SEGMENT_KEYS in its block)."""
    block = meter.avro_schema.get("meterstream", {})
    return any(block.get(key) for key in SEGMENT_KEYS)


def zipf_cum_weights(n: int, s: float) -> list[float]:
    """Cumulative Zipf weights of ranks 1..n, for `random.choices(cum_weights=...)`.

    >>> [round(w, 3) for w in zipf_cum_weights(3, 1.0)]
    [1.0, 1.5, 1.833]
    """
    return list(itertools.accumulate(1.0 / (k**s) for k in range(1, n + 1)))


def _field_type(spec: dict[str, Any]) -> Any:
    ftype = spec["type"]
    if isinstance(ftype, list):
        ftype = next((t for t in ftype if t != "null"), "null")
    return ftype


def _schema_data(meter: MeterDefinition, rng: random.Random) -> dict[str, Any]:
    """Valid `data` for any meter, derived from its Avro fields.

    String fields take a few values (dimensions like region or model); the value field of a
    meter takes a thousand (distinct users for a unique count).
    """
    value_field = meter.avro_schema.get("meterstream", {}).get("value_field")
    data: dict[str, Any] = {}
    for spec in meter.avro_schema["fields"]:
        ftype = _field_type(spec)
        name = spec["name"]
        if ftype in ("int", "long"):
            data[name] = rng.randint(0, 5000)
        elif ftype in ("float", "double"):
            data[name] = round(rng.uniform(0, 50), 3)
        elif ftype == "boolean":
            data[name] = rng.random() < 0.5  # noqa: PLR2004 - a fair coin
        elif ftype == "string":
            data[name] = f"{name}-{rng.randrange(1000 if name == value_field else 8)}"
    return data


def _event_data(meter: MeterDefinition, rng: random.Random) -> dict[str, Any]:
    """`testing.sample_data` where it fits the meter's current schema, else schema-derived."""
    if meter.name in SAMPLE_METERS:
        data = sample_data(meter.name, rng)
        names = {spec["name"] for spec in meter.avro_schema["fields"]}
        if names <= data.keys():
            return data
    return _schema_data(meter, rng)


def iter_records(workload: Workload, registry: MeterRegistry) -> Iterator[tuple[str, Record]]:
    """Yield `(kind, record)` pairs: new, out_of_order, late, duplicate or malformed-<kind>."""
    rng = random.Random(workload.seed)  # noqa: S311 - seeded test data, not secrets
    meters = [m for name in registry.names() if (m := registry.current(name)) is not None]
    ranks = [f"{workload.account_prefix}-{k:05d}" for k in range(workload.accounts)]
    rng.shuffle(ranks)  # the hottest accounts are not simply the lowest numbers
    cum = zipf_cum_weights(workload.accounts, workload.zipf_s)
    step = timedelta(seconds=1 / workload.events_per_second)
    recent: list[Record] = []
    new_events = 0
    for index in range(workload.records):
        if index % ACCOUNT_CHUNK == 0:
            # Drawn in chunks: a live stream is endless, and one draw per event is slow.
            chunk = rng.choices(ranks, cum_weights=cum, k=ACCOUNT_CHUNK)
        account = chunk[index % ACCOUNT_CHUNK]
        roll = rng.random()
        if roll < workload.malformed_rate:
            kind = MALFORMED_KINDS[index % len(MALFORMED_KINDS)]
            yield f"malformed-{kind}", Record(account.encode(), malformed(kind, rng, account))
            continue
        if roll < workload.malformed_rate + workload.duplicate_rate and recent:
            yield "duplicate", recent[rng.randrange(len(recent))]
            continue
        moment = workload.start + step * new_events
        timing = rng.random()
        kind = "new"
        if timing < workload.late_rate:
            kind, moment = "late", moment - timedelta(days=rng.uniform(1, 20))
        elif timing < workload.late_rate + workload.out_of_order_rate:
            kind, moment = "out_of_order", moment - timedelta(seconds=rng.uniform(1, 600))
        meter = meters[rng.randrange(len(meters))]
        event = cloud_event(
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            account,
            meter.name,
            moment,
            _event_data(meter, rng),
            source=f"api-gateway/pod-{rng.randrange(64)}",
        )
        # W3C trace context, a CloudEvents extension most gateways add (datacontenttype is
        # optional and usually omitted): about 300 bytes per event, as in production.
        del event["datacontenttype"]
        event["traceparent"] = f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01"
        record = Record(account.encode(), json.dumps(event, separators=(",", ":")).encode())
        new_events += 1
        if len(recent) < RETRY_WINDOW:
            recent.append(record)
        else:
            recent[new_events % RETRY_WINDOW] = record
        yield kind, record


def generate(workload: Workload, registry: MeterRegistry) -> Generated:
    """Generate the whole workload in memory."""
    records: list[Record] = []
    kinds: Counter[str] = Counter()
    for kind, record in iter_records(workload, registry):
        records.append(record)
        kinds[kind] += 1
    names = tuple(registry.names())
    segmented = tuple(
        name for name in names if (m := registry.current(name)) is not None and is_segmented(m)
    )
    return Generated(records, kinds, names, segmented)
