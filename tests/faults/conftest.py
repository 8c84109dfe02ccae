"""The fault suite's stack (its own ports and `.stack/faults`), its pipeline, and its summary.

`FAULT_SUITE=full` (what `make test-faults` sets) selects the long variant: more events, the
TaskManager killed several times, PostgreSQL down for a full minute, the broker also killed.
The default is the short variant that `make test` runs: few events, each fault once.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from meterstream.config import Settings
from meterstream.rules.validate import Validator
from tests.faults import stack
from tests.faults.pipeline import Pipeline, Stats


@dataclass(frozen=True)
class Variant:
    """How hard the suite pushes."""

    name: str
    events_per_phase: int
    taskmanager_kills: int
    postgres_outage_s: float
    kafka_hard_kill: bool


SHORT = Variant(
    "short", events_per_phase=250, taskmanager_kills=1, postgres_outage_s=15, kafka_hard_kill=False
)
FULL = Variant(
    "full", events_per_phase=3000, taskmanager_kills=4, postgres_outage_s=60, kafka_hard_kill=True
)

STATS = Stats()


@pytest.fixture(scope="session")
def variant() -> Variant:
    return FULL if os.environ.get("FAULT_SUITE", "short") == "full" else SHORT


@pytest.fixture(scope="session")
def fault_stack() -> Iterator[Settings]:
    """Kafka, PostgreSQL and a Flink cluster with 2 TaskManagers, all of the suite's own.

    Never the shared stack: other ports and `.stack/faults`. Everything it started is stopped
    at the end, whatever happens.
    """
    settings = stack.fault_settings()
    STATS.started = time.monotonic()
    try:
        stack.up(settings)
        yield settings
    finally:
        stack.down(settings)


@pytest.fixture(scope="session")
def fault_seed() -> int:
    """The seed of the random fault points; FAULT_SEED=<n> replays a run."""
    seed = int(os.environ.get("FAULT_SEED", str(random.randrange(1_000_000))))
    STATS.log.append(f"seed {seed} (FAULT_SEED={seed} replays the fault points)")
    return seed


@pytest.fixture(scope="module")
def pipeline(fault_stack: Settings, validator: Validator, fault_seed: int) -> Iterator[Pipeline]:
    """One job on the fault stack for the whole module, over its own topics."""
    from meterstream.stack.kafka import RAW_TOPIC_CONFIG, create_topics  # noqa: PLC0415

    job = Pipeline(
        fault_stack, validator, STATS, f"flt-{uuid.uuid4().hex[:8]}", random.Random(fault_seed)
    )
    create_topics(fault_stack, [job.raw], config=RAW_TOPIC_CONFIG)
    create_topics(fault_stack, [job.rejected])
    yield job


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not STATS.checks and not STATS.faults:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fault injection")
    for line in STATS.log:
        write(line)
    kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(STATS.faults.items()))
    write(
        f"faults injected: {sum(STATS.faults.values())} ({kinds}); "
        f"events checked: {STATS.records} records ({STATS.distinct} distinct events, "
        f"{STATS.rejections} rejections) against the oracle, in {STATS.checks} exact checks; "
        f"producer retries after an outage: {STATS.producer_retries}; "
        f"jobs resumed from a checkpoint after the cluster gave up: {STATS.resumed}; "
        f"{time.monotonic() - STATS.started:.0f}s since the fault stack started"
    )
