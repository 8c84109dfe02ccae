"""Rescaling through savepoints: parallelism 1 -> 2 -> 1 on the session cluster, totals exact.

The keyed operator's state (first fingerprints, figures, unique values) is keyed by account, so
a savepoint's key groups are redistributed when the job resumes at another parallelism. Retries
of events counted before a rescale must still be recognised after it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from meterstream.config import Settings
from meterstream.kafka_io import produce
from meterstream.rules.validate import Validator
from meterstream.stack import flink
from meterstream.testing import generate
from tests.pipeline_helpers import (
    consume_arrivals,
    oracle_of_arrivals,
    totals_in_postgres,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.flink]


def operator_parallelism(settings: Settings, job_id: str) -> int:
    """The parallelism of the job's keyed operator, as the cluster runs it."""
    vertices = flink.job_details(settings, job_id)["vertices"]
    (vertex,) = [v for v in vertices if "dedup_and_figures" in v["name"]]
    return int(vertex["parallelism"])


def test_rescaling_one_to_two_and_back_through_savepoints_keeps_every_total_exact(
    cluster: Settings, topics: tuple[str, str], job_dir: Path, unique: str, validator: Validator
) -> None:
    prefix = f"rs-{unique}"
    records = generate(3000, seed=43, accounts=24, account_prefix=prefix)
    # The last part also resends 300 records of the first (client retries, same bytes).
    parts = [records[:1000], records[1000:2000], records[2000:] + records[:300]]
    args = [
        "--topic", topics[0], "--rejected-topic", topics[1], "--group-id", f"g-{unique}",
        "--job-name", f"rescale-{unique}", "--checkpoint-dir", str(job_dir),
    ]  # fmt: skip
    savepoint = None
    for part, parallelism in zip(parts, (1, 2, 1), strict=True):
        settings = replace(cluster, flink=replace(cluster.flink, parallelism=parallelism))
        produce(settings, topics[0], part)
        restore = ["--restore-from", savepoint] if savepoint else []
        job_id = flink.submit(settings, [*args, *restore])
        try:
            arrivals = consume_arrivals(settings, topics[0])
            expected = oracle_of_arrivals(settings, validator, arrivals).totals
            wait_for(
                lambda expected=expected: totals_in_postgres(cluster, prefix) == expected,
                240,
                f"the totals of {len(arrivals)} records at parallelism {parallelism}",
            )
            assert operator_parallelism(settings, job_id) == parallelism
            time.sleep(2)  # a checkpoint or two; nothing may change any more
            assert totals_in_postgres(cluster, prefix) == expected
        finally:
            savepoint = flink.stop_with_savepoint(settings, job_id)
    assert totals_in_postgres(cluster, prefix) == expected
