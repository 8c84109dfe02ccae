"""DDL for the job's tables; jobs and tests choose the connectors behind the workflow's names."""

from __future__ import annotations

from dataclasses import dataclass

from meterstream.config import Settings

#: The raw topic: one CloudEvent JSON document per record, keyed by account id.
RAW_EVENTS_COLUMNS = """
    payload STRING,
    kafka_topic STRING METADATA FROM 'topic' VIRTUAL,
    kafka_partition INT METADATA FROM 'partition' VIRTUAL,
    kafka_offset BIGINT METADATA FROM 'offset' VIRTUAL,
    arrived_at TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
    proc_time AS PROCTIME()
"""

USAGE_AGGREGATES_COLUMNS = """
    account_id STRING,
    meter STRING,
    period_start DATE,
    dimensions STRING,
    aggregation STRING,
    quantity DECIMAL(38, 9),
    event_count BIGINT,
    first_event_at TIMESTAMP(3),
    last_event_at TIMESTAMP(3),
    last_arrived_at TIMESTAMP(3),
    PRIMARY KEY (account_id, meter, period_start, dimensions) NOT ENFORCED
"""

REJECTED_EVENTS_COLUMNS = """
    source_topic STRING,
    source_partition INT,
    source_offset BIGINT,
    reason_code STRING,
    severity STRING,
    detail STRING,
    account_id STRING,
    meter STRING,
    event_id STRING,
    raw_payload STRING,
    arrived_at TIMESTAMP(3),
    PRIMARY KEY (source_topic, source_partition, source_offset, reason_code) NOT ENFORCED
"""


@dataclass(frozen=True, slots=True)
class SinkTables:
    """The names of the tables the workflow writes to."""

    usage_aggregates: str = "usage_aggregates"
    rejected_events: str = "rejected_events"
    rejected_topic: str | None = "rejected_events_topic"
    #: First arrivals that came after their period's allowed lateness (not added to figures).
    late_events: str | None = "late_events"
    #: The audit archive (meterstream/flink/archive.py): every accepted event, before dedup.
    archive: str | None = None


def _with(options: dict[str, str]) -> str:
    return ",\n".join(f"    '{k}' = '{v}'" for k, v in options.items())


def kafka_raw_events_ddl(
    settings: Settings,
    *,
    name: str = "raw_events",
    topic: str | None = None,
    group_id: str | None = None,
    bounded: bool = False,
) -> str:
    """The Kafka source of raw CloudEvents; `bounded` stops at the offsets current at start-up."""
    options = {
        **_kafka_source(settings, topic or settings.kafka.topics.raw, group_id, bounded),
        "format": "raw",
        "raw.charset": "UTF-8",
    }
    return f"CREATE TEMPORARY TABLE {name} ({RAW_EVENTS_COLUMNS}) WITH (\n{_with(options)}\n)"


def _kafka_source(
    settings: Settings, topic: str, group_id: str | None, bounded: bool
) -> dict[str, str]:
    """A Kafka source's options: committed records only, from the start.

    With `bounded`, up to the end current at start-up.
    """
    options = {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": settings.kafka.bootstrap_servers,
        "properties.group.id": group_id or settings.flink.consumer_group,
        "properties.isolation.level": "read_committed",
        "scan.startup.mode": "earliest-offset",
    }
    if bounded:
        options["scan.bounded.mode"] = "latest-offset"
    return options


#: The corrections topic: the key is the account, the value one correction (JSON).
CORRECTIONS_COLUMNS = """
    account_id STRING,
    payload STRING
"""


def kafka_corrections_ddl(
    settings: Settings,
    *,
    name: str = "corrections",
    topic: str | None = None,
    group_id: str | None = None,
    bounded: bool = False,
) -> str:
    """The Kafka source of corrections (voids and amends, docs/corrections.md).

    Read from the start, like the raw events; `bounded` stops at the offsets current at start-up.
    """
    options = {
        **_kafka_source(settings, topic or settings.kafka.topics.corrections, group_id, bounded),
        "key.format": "raw",
        "key.fields": "account_id",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    return f"CREATE TEMPORARY TABLE {name} ({CORRECTIONS_COLUMNS}) WITH (\n{_with(options)}\n)"


#: `application_name` of the jobs' PostgreSQL sessions (to find them in pg_stat_activity).
JDBC_APPLICATION_NAME = "meterstream-flink"


def _jdbc(settings: Settings, table: str) -> dict[str, str]:
    pg = settings.postgres
    return {
        "connector": "jdbc",
        # The JDBC connector has no TIMESTAMP_LTZ: timestamps travel as UTC wall-clock TIMESTAMP(3),
        # so the session time zone is pinned to UTC (and the job's JVM runs with TZ=UTC).
        # reWriteBatchedInserts: a flush's upserts go as multi-row INSERT ... ON CONFLICT
        # statements (keys are unique within a flush), ~25% less PostgreSQL CPU (measured).
        # idle_session_timeout: see FlinkSettings.jdbc_idle_session_timeout_s.
        "url": (
            f"{pg.jdbc_url}?options=-c%20TimeZone%3DUTC%20-c%20idle_session_timeout%3D"
            f"{settings.flink.jdbc_idle_session_timeout_s}s"
            f"&reWriteBatchedInserts=true&ApplicationName={JDBC_APPLICATION_NAME}"
        ),
        "table-name": table,
        "username": pg.user,
        "password": pg.password,
        "sink.buffer-flush.max-rows": str(settings.flink.jdbc_flush_rows),
        "sink.buffer-flush.interval": f"{settings.flink.jdbc_flush_interval_ms} ms",
        "sink.max-retries": "10",
    }


def jdbc_usage_aggregates_ddl(settings: Settings, *, name: str = "usage_aggregates") -> str:
    """The PostgreSQL `usage_aggregates` table as an idempotent upsert sink (primary key)."""
    options = _jdbc(settings, "usage_aggregates")
    return f"CREATE TEMPORARY TABLE {name} ({USAGE_AGGREGATES_COLUMNS}) WITH (\n{_with(options)}\n)"


def jdbc_rejected_events_ddl(settings: Settings, *, name: str = "rejected_events") -> str:
    """The PostgreSQL `rejected_events` table, keyed by Kafka position: replays are no-ops."""
    options = _jdbc(settings, "rejected_events")
    return f"CREATE TEMPORARY TABLE {name} ({REJECTED_EVENTS_COLUMNS}) WITH (\n{_with(options)}\n)"


def kafka_rejected_events_ddl(
    settings: Settings,
    *,
    name: str = "rejected_events_topic",
    topic: str | None = None,
    job_name: str | None = None,
) -> str:
    """The rejected-events topic (JSON), written with Kafka transactions (exactly once).

    The transactional ids start with the job's name: two jobs sharing a prefix fence each
    other's producers (Kafka aborts the older one's transaction), so each job needs its own.
    """
    options = {
        "connector": "kafka",
        "topic": topic or settings.kafka.topics.rejected,
        "properties.bootstrap.servers": settings.kafka.bootstrap_servers,
        "properties.transaction.timeout.ms": "900000",
        "format": "json",
        "sink.delivery-guarantee": "exactly-once",
        "sink.transactional-id-prefix": f"{job_name or settings.flink.job_name}-{name}",
    }
    columns = REJECTED_EVENTS_COLUMNS.split("    PRIMARY KEY", maxsplit=1)[0].rstrip().rstrip(",")
    return f"CREATE TEMPORARY TABLE {name} ({columns}\n) WITH (\n{_with(options)}\n)"


LATE_EVENTS_COLUMNS = """
    source_topic STRING,
    source_partition INT,
    source_offset BIGINT,
    account_id STRING,
    meter STRING,
    event_id STRING,
    period_start DATE,
    dimensions STRING,
    quantity DECIMAL(38, 9),
    event_time TIMESTAMP(3),
    arrived_at TIMESTAMP(3),
    raw_payload STRING,
    PRIMARY KEY (source_topic, source_partition, source_offset) NOT ENFORCED
"""


def jdbc_late_events_ddl(settings: Settings, *, name: str = "late_events") -> str:
    """The PostgreSQL `late_events` table, keyed by Kafka position: replays are no-ops."""
    options = _jdbc(settings, "late_events")
    return f"CREATE TEMPORARY TABLE {name} ({LATE_EVENTS_COLUMNS}) WITH (\n{_with(options)}\n)"
