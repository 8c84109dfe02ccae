"""Fixtures of the archive tests: an isolated database, and one archive written by the real job."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meterstream.archive import committed_files
from meterstream.config import Settings
from meterstream.flink.launch import JobOptions
from meterstream.kafka_io import produce
from meterstream.stack.flink import settings_env
from meterstream.stack.kafka import RAW_TOPIC_CONFIG, create_topics
from meterstream.testing import Record, cloud_event, generate, sample_data
from tests.pipeline_helpers import isolated_database, run_bounded_job

#: Late whatever day the tests run: 34.5 days ago is inside the 35-day window, and the month
#: it falls in ended at least 3.5 days ago, past the 72-hour allowed lateness.
LATE_AGE = timedelta(days=34, hours=12)
DEPLOYED_LATENESS_HOURS = 72


def archived_table(archive: Path) -> pa.Table:
    """Every row of the archive's committed files (in-progress files are hidden, not read)."""
    files = committed_files(archive)
    if not files:
        return pa.table({})
    return pa.concat_tables([pq.read_table(f) for f in files])


def archived_count(archive: Path) -> int:
    """Rows in the committed files, from the Parquet footers."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in committed_files(archive))


@pytest.fixture(scope="module")
def isolated(stack: Settings) -> Iterator[Settings]:
    """A database of the module's own, with the real 72 hours of allowed lateness.

    tests/conftest.py gives pipeline tests a 60-day lateness; these need the real 72 hours
    so that some events are late and recalculation has something to fold in.
    """
    with isolated_database(stack, allowed_lateness_hours=DEPLOYED_LATENESS_HOURS) as settings:
        yield settings


@dataclass(frozen=True, slots=True)
class ArchiveRun:
    """What `archive_run` produced: settings (isolated database), input, and the archive."""

    settings: Settings
    archive: Path
    records: list[Record]
    prefix: str
    late_account: str
    topic: str


def late_records(account: str, now: datetime) -> list[Record]:
    """Events of several meters for `account`, 34.5 days old: accepted, but late."""
    rng = random.Random(5)
    records = []
    for i, meter in enumerate(("api_calls", "llm_tokens", "seats", "prepaid_balance") * 3):
        moment = (now - LATE_AGE + timedelta(minutes=i)).replace(microsecond=0)
        event = cloud_event(f"{account}-late-{i}", account, meter, moment, sample_data(meter, rng))
        records.append(Record(account.encode(), json.dumps(event).encode()))
    return records


@pytest.fixture(scope="module")
def archive_run(isolated: Settings, tmp_path_factory: pytest.TempPathFactory) -> ArchiveRun:
    """One bounded run of the real job over generated events: figures and archive to compare."""
    unique = uuid.uuid4().hex[:10]
    raw, rejected = f"test-{unique}-raw", f"test-{unique}-rejected"
    create_topics(isolated, [raw], config=RAW_TOPIC_CONFIG)
    create_topics(isolated, [rejected])
    prefix = f"ar-{unique}"
    late_account = f"{prefix}-late"
    records = generate(900, seed=41, accounts=3, account_prefix=prefix, duplicate_rate=0.15)
    records += late_records(late_account, datetime.now(UTC))
    produce(isolated, raw, records)
    work = tmp_path_factory.mktemp("archive-run")
    archive = work / "archive"
    log = work / "job.log"
    run_bounded_job(
        JobOptions(
            topic=raw,
            rejected_topic=rejected,
            group_id=f"g-{unique}",
            checkpoint_dir=work / "checkpoints",
            bounded=True,
            job_name=f"archive-{unique}",
            env={**settings_env(isolated), "METERSTREAM_FLINK_ARCHIVE_DIR": str(archive)},
        ),
        log,
    )
    return ArchiveRun(isolated, archive, records, prefix, late_account, raw)
