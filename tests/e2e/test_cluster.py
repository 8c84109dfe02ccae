"""The same job, submitted with `flink run --python` to a standalone session cluster."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from meterstream.config import Settings
from meterstream.kafka_io import produce
from meterstream.rules.validate import Validator
from meterstream.stack import flink
from meterstream.testing import generate
from tests.pipeline_helpers import oracle, rejections_in_postgres, totals_in_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.flink]


def test_job_submitted_to_standalone_cluster_produces_the_oracle_totals(
    cluster: Settings, topics: tuple[str, str], job_dir: Path, unique: str, validator: Validator
) -> None:
    prefix = f"cl-{unique}"
    records = generate(1500, seed=31, accounts=15, account_prefix=prefix)
    produce(cluster, topics[0], records)

    job_id = flink.submit(
        cluster,
        [
            "--bounded",
            "--topic",
            topics[0],
            "--rejected-topic",
            topics[1],
            "--group-id",
            f"g-{unique}",
            "--job-name",
            f"cluster-{unique}",
            "--checkpoint-dir",
            str(job_dir),
        ],
    )
    deadline = time.monotonic() + 300
    while (state := flink.job_state(cluster, job_id)) not in ("FINISHED", "FAILED", "CANCELED"):
        assert time.monotonic() < deadline, f"job {job_id} still {state}"
        time.sleep(1)
    assert state == "FINISHED"

    expected = oracle(cluster, validator, [r.value for r in records])
    assert totals_in_postgres(cluster, prefix) == expected.totals
    assert len(rejections_in_postgres(cluster, topics[0])) == len(expected.rejections)
