"""The ingest API's throughput alone: raw acked produce and `meterstream serve`, same records.

`python -m meterstream.bench.api_only [records] [rounds]` runs `ingest.measure_ingest` (raw
produce and the API in turn, `rounds` times, on one generated workload, topic and tenant) and
prints each round's rates and ratio, then the medians (on a shared machine, compare ratios).
"""

from __future__ import annotations

import sys
import uuid

from meterstream.bench import ingest
from meterstream.bench.generator import Workload, generate
from meterstream.config import load_settings
from meterstream.meters.registry import load_registry
from meterstream.stack.kafka import create_topics


def main(records: int = 200_000, rounds: int = 3) -> None:
    """Measure `rounds` rounds of each, in turn; print each round and the medians."""
    settings = load_settings()
    registry = load_registry(settings.schemas_dir)
    prefix = f"apibench-{uuid.uuid4().hex[:6]}"
    gen = generate(Workload(records, account_prefix=prefix), registry)
    topic = f"{prefix}-raw"
    create_topics(settings, [topic])
    produce, api = ingest.measure_ingest(settings, topic, gen.records, 0.0, rounds)
    for round_, (raw, rate) in enumerate(zip(produce.batch_rounds, api.rounds, strict=False)):
        print(f"round {round_}: produce {raw:,.0f}/s, api {rate:,.0f}/s, ratio {rate / raw:.2f}")  # noqa: T201
    median = api.events_per_s or 0.0
    print(  # noqa: T201 - a command-line report
        f"median: produce {produce.batch_events_per_s:,.0f}/s (p50 {produce.batch_p50_ms:.1f} ms),"
        f" api {median:,.0f}/s (p50 {api.p50_ms or 0:.1f} ms, p99 {api.p99_ms or 0:.1f} ms),"
        f" ratio {median / produce.batch_events_per_s:.2f}; CPU ms/request "
        + ", ".join(f"{k} {v:.1f}" for k, v in api.cpu_ms_per_request.items())
        + f"; {api.status} {api.detail[:160]}",
        flush=True,
    )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
