"""Kill the job mid-stream (SIGKILL) and restore it: the archive holds every event exactly once."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from meterstream.config import Settings
from meterstream.kafka_io import produce
from meterstream.rules.reasons import Rejection
from meterstream.rules.validate import Validator
from meterstream.testing import generate
from tests.archive.conftest import archived_count, archived_table
from tests.pipeline_helpers import job_options, kill_mid_stream, run_restored_until

pytestmark = [pytest.mark.e2e, pytest.mark.flink]


def test_archive_after_kill_and_restore_holds_every_accepted_event_exactly_once(
    stack: Settings,
    topics: tuple[str, str],
    job_dir: Path,
    unique: str,
    validator: Validator,
) -> None:
    prefix = f"arc-{unique}"
    records = generate(5000, seed=29, accounts=20, account_prefix=prefix, duplicate_rate=0.1)
    first, second = records[:1500], records[1500:]
    now = datetime.now(UTC)
    accepted = Counter(
        r.value.decode()
        for r in records
        if not isinstance(validator.validate(r.value, now), Rejection)
    )
    archive = job_dir.parent / "archive"
    env = {
        "METERSTREAM_FLINK_CHECKPOINT_INTERVAL_MS": "1000",
        "METERSTREAM_FLINK_ARCHIVE_DIR": str(archive),
    }
    options = job_options(topics, job_dir, f"arc-{unique}", env=env)
    produce(stack, topics[0], first)
    log = job_dir / "job.log"
    checkpoint = kill_mid_stream(
        stack,
        options,
        log,
        second,
        started=lambda: archived_count(archive) > 0,
        what="archived files",
    )
    # The kill left files of the unfinished checkpoint behind, hidden (".part-…").
    hidden = list(archive.rglob(".part-*"))
    run_restored_until(
        replace(options, job_name=f"arc-{unique}-restored", restore_from=str(checkpoint)),
        log,
        lambda: archived_count(archive) >= accepted.total(),
        f"{accepted.total()} archived events after the restore",
        settle_s=4,
    )

    table = archived_table(archive)
    positions = Counter(
        zip(
            table["source_topic"].to_pylist(),
            table["source_partition"].to_pylist(),
            table["source_offset"].to_pylist(),
            strict=True,
        )
    )
    assert max(positions.values()) == 1, "a Kafka record is archived twice"
    assert Counter(table["payload"].to_pylist()) == accepted
    # The warehouse view of the same files (docs/sql.md): DuckDB over the committed part files.
    glob = f"{archive}/events/dt=*/part-*"
    with duckdb.connect() as db:
        rows, distinct = db.execute(
            "SELECT count(*), count(DISTINCT (source_partition, source_offset))"
            f" FROM read_parquet('{glob}', hive_partitioning = true)"
        ).fetchone()
    assert rows == distinct == accepted.total()
    print(
        f"archive after kill -9 and restore from {checkpoint.name}: {rows} rows in "
        f"{len(list(archive.glob('events/dt=*/part-*')))} files, exactly once; "
        f"{len(hidden)} in-progress files of the lost checkpoint stayed hidden"
    )
