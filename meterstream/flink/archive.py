"""The audit archive's Flink table: every accepted event, in Parquet files by arrival day (UTC).

The job appends to it (`archive_insert_sql`); recalculation reads it back in batch mode with
the same DDL (`archive_table_ddl`). Files are written by Flink's filesystem connector, which
commits on checkpoint: a file is hidden (`.part-…inprogress…`) until the checkpoint that covers
its rows completes, then renamed to `part-…`. A crash rolls back to the last checkpoint and the
rows after it are written again into new files, so every visible file holds rows exactly once.
"""

from __future__ import annotations

from pathlib import Path

from meterstream.archive import EVENTS
from meterstream.meters.model import IDENTIFIER

#: The archived columns, in file order. Timestamps are UTC; `event_time_ms` is the exact event
#: time (epoch milliseconds) that recalculation orders LATEST by; `payload` is the raw record.
ARCHIVE_COLUMNS = """
    event_id STRING,
    account_id STRING,
    meter STRING,
    aggregation STRING,
    event_time TIMESTAMP_LTZ(3),
    event_time_ms BIGINT,
    period_start DATE,
    dimensions STRING,
    quantity DECIMAL(38, 9),
    unique_value STRING,
    dedup_key STRING,
    fingerprint BIGINT,
    source_topic STRING,
    source_partition INT,
    source_offset BIGINT,
    arrived_at TIMESTAMP_LTZ(3),
    payload STRING,
    dt STRING
"""

#: Every column except `dt` and `event_time` comes from the workflow's `archive_rows` view: every
#: accepted event (validated, not deduplicated), so retries and DUPLICATE_ID_CONFLICT repeats are
#: archived too. Both keyed paths give that view from the dedup's task, so the files are written
#: off the thread that reads Kafka and checks events.
#: `dt` is the arrival day; DATE_FORMAT of a TIMESTAMP_LTZ uses the session time zone, which
#: `meterstream.flink.env` pins to UTC.
ARCHIVE_INSERT = """
INSERT INTO {sink}
SELECT event_id, account_id, meter, aggregation, TO_TIMESTAMP_LTZ(event_time_ms, 3),
       event_time_ms, period_start, dimensions, quantity, unique_value, dedup_key, fingerprint,
       source_topic, source_partition, source_offset, arrived_at, payload,
       DATE_FORMAT(arrived_at, 'yyyy-MM-dd') AS dt
FROM archive_rows
"""


def _with(options: dict[str, str]) -> str:
    return ",\n".join(f"    '{k}' = '{v}'" for k, v in options.items())


def _name(identifier: str) -> str:
    if not IDENTIFIER.fullmatch(identifier):
        msg = f"{identifier!r} is not a valid table name here"
        raise ValueError(msg)
    return identifier


def archive_options(archive_dir: Path, *, commit_delay: str = "1 d") -> dict[str, str]:
    """The filesystem connector's options for the archive at `archive_dir`.

    Args:
        archive_dir: the archive's root; the table is `events/dt=YYYY-MM-DD/` below it.
        commit_delay: how long after a day partition's first file `_SUCCESS` is written
            (process time): one day, so `_SUCCESS` marks a day that is over. A bounded run
            commits every partition when it ends.
    """
    return {
        "connector": "filesystem",
        "path": (archive_dir / EVENTS).resolve().as_uri(),
        "format": "parquet",
        # ZSTD: the JSON payloads compress ~5x; DuckDB, Snowflake and BigQuery all read it.
        "parquet.compression": "ZSTD",
        # No dictionaries: most columns (ids, payloads, times) are unique per event, so the
        # writer built and dropped a dictionary per page. ZSTD alone gives the same size
        # (148.2 vs 148.1 MB for 1.2 M events), and the job ran ~2% faster in two A/B pairs.
        "parquet.enable.dictionary": "false",
        # Parquet format v1 pages: Snowflake reads only files written by the v1 writer.
        "parquet.writer.version": "v1",
        # INT64 millisecond timestamps (not the deprecated INT96), converted in UTC whatever
        # the JVM's zone. Flink marks them isAdjustedToUTC=false: readers see UTC wall clock.
        "parquet.utc-timezone": "true",
        "parquet.write.int64.timestamp": "true",
        "parquet.timestamp.time.unit": "millis",
        # Parquet is a bulk format: a part file always ends at a checkpoint (that is what makes
        # it exactly once); these only end a file earlier, when it grows large or old.
        "sink.rolling-policy.file-size": "128MB",
        "sink.rolling-policy.rollover-interval": "15 min",
        "sink.rolling-policy.check-interval": "1 min",
        "sink.partition-commit.trigger": "process-time",
        "sink.partition-commit.delay": commit_delay,
        "sink.partition-commit.policy.kind": "success-file",
    }


def archive_table_ddl(
    archive_dir: Path, *, name: str = "archived_events", commit_delay: str = "1 d"
) -> str:
    """The archive table: a sink for the streaming job, a source for recalculation."""
    options = archive_options(archive_dir, commit_delay=commit_delay)
    return (
        f"CREATE TEMPORARY TABLE {_name(name)} ({ARCHIVE_COLUMNS})\n"
        f"PARTITIONED BY (dt) WITH (\n{_with(options)}\n)"
    )


def archive_insert_sql(sink: str = "archived_events") -> str:
    """The INSERT that appends every accepted event to the archive table `sink`."""
    return ARCHIVE_INSERT.format(sink=_name(sink))
