"""One frozen `Settings` object, built once at the edge from defaults < `METERSTREAM_*` environment.

Every component gets its settings passed in; nothing reads the environment on its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from meterstream.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAX_PORT = 65535


@dataclass(frozen=True, slots=True)
class TopicSettings:
    """Kafka topic names; defined here once."""

    raw: str = "meterstream.events.raw"
    rejected: str = "meterstream.events.rejected"
    #: Voids and amends of counted events (docs/corrections.md), keyed by account; the job's
    #: keyed operator applies them to the figures of open periods.
    corrections: str = "meterstream.corrections"
    partitions: int = 4


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Where the Kafka broker is; the local stack starts one on this port."""

    host: str = "127.0.0.1"
    port: int = 19092
    controller_port: int = 19093
    topics: TopicSettings = field(default_factory=TopicSettings)

    @property
    def bootstrap_servers(self) -> str:
        """The `host:port` string clients connect to."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    """Where PostgreSQL is; the local stack starts its own cluster on this port."""

    host: str = "127.0.0.1"
    port: int = 15432
    database: str = "meterstream"
    user: str = "meterstream"
    password: str = field(default="meterstream", repr=False)

    @property
    def conninfo(self) -> str:
        """A libpq connection string for psycopg."""
        return (
            f"host={self.host} port={self.port} dbname={self.database} "
            f"user={self.user} password={self.password}"
        )

    @property
    def jdbc_url(self) -> str:
        """The JDBC URL the Flink JDBC connector writes to."""
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.database}"


@dataclass(frozen=True, slots=True)
class FlinkSettings:
    """How the aggregation job runs; `meterstream.flink.env` is the one place that applies these."""

    #: The aggregation job's name on the cluster and its Kafka consumer group.
    job_name: str = "meterstream-aggregate-usage"
    consumer_group: str = "meterstream-aggregate-usage"
    parallelism: int = 1
    checkpoint_interval_ms: int = 5_000
    #: Event ids are remembered this long for deduplication (the billing contract: 35 days).
    dedup_ttl_days: int = 35
    #: How long after its end a billing period still takes events (arrival time, per account
    #: time zone); later first arrivals go to `late_events` instead of the figures.
    allowed_lateness_hours: int = 72
    #: Per-period totals must outlive the longest period plus lateness, or a late event
    #: would restart a total from zero; 70 days covers a 31-day month + 35 days of ids.
    aggregate_ttl_days: int = 70
    #: Upper bound on the delay between an event's arrival and its total in PostgreSQL.
    mini_batch_latency_ms: int = 200
    mini_batch_size: int = 5_000
    #: Figures the keyed operator keeps on the heap between flushes (least recently used out);
    #: ~200 B each. A figure not there is read back from RocksDB when its next event comes.
    figure_cache_size: int = 200_000
    jdbc_flush_rows: int = 5_000
    jdbc_flush_interval_ms: int = 200
    #: PostgreSQL ends a job connection idle this long (`idle_session_timeout`); the JDBC
    #: connector reconnects when it next writes. It bounds the connections that a failing
    #: sink leaks on each restart (the connector does not close one whose last flush failed).
    jdbc_idle_session_timeout_s: int = 300
    #: Check events with the JVM fast path first (`fast_check_event`), the Python rules only
    #: for what it does not recognise as accepted; false: every event through Python.
    fast_path: bool = True
    #: Where dedup and figures run: "operator", one keyed JVM operator (`DedupAndFigures`,
    #: jvm/udf); or "sql", the Flink SQL reference path (an OVER aggregation and a GROUP BY
    #: generated from the meters), which the operator is tested against row for row.
    keyed_path: str = "operator"
    #: State backend: "hashmap" (heap) or "rocksdb" (production: 35 days of ids off the heap).
    state_backend: str = "rocksdb"
    rest_port: int = 18081
    #: Whether the job ships its connector jars (`pipeline.jars`). A session cluster that has
    #: them in lib/ (`meterstream cluster-up`) must get jobs that do not: `submit` sets
    #: METERSTREAM_FLINK_SHIP_JARS=false (a second Python job per TaskManager, FLINK-37727).
    ship_jars: bool = True
    #: The audit archive's directory (Parquet by arrival day); empty: `<stack_dir>/archive`.
    archive_dir: str = ""


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The ingest HTTP service (`meterstream serve`): where it listens and what it allows."""

    #: Loopback only by default; put a TLS-terminating proxy or `tls_*` in front of anything else.
    host: str = "127.0.0.1"
    port: int = 18080
    #: TLS: both paths set -> uvicorn serves HTTPS with this PEM certificate chain and key.
    tls_certfile: str = ""
    tls_keyfile: str = ""
    max_events_per_request: int = 1_000
    max_request_bytes: int = 512 * 1024
    #: One event (a JSONL line or an array element of an upload) may not exceed this.
    max_event_bytes: int = 64 * 1024
    #: How long a request waits for Kafka to acknowledge its events before answering 503.
    kafka_delivery_timeout_ms: int = 10_000
    #: Per-token request rate (token bucket): sustained requests per second and burst size.
    token_requests_per_second: int = 50
    token_request_burst: int = 200
    #: Per-account event rate (token bucket) on POST /v1/events.
    account_events_per_second: int = 2_000
    account_event_burst: int = 10_000
    #: Events per second one token may stream through uploads (back-pressure, not 429).
    upload_events_per_second: int = 50_000
    #: Events one account may send per UTC day (a per-account override lives in PostgreSQL).
    account_daily_event_quota: int = 50_000_000
    #: An upload records its progress (and waits for Kafka) at least every this many events.
    upload_commit_events: int = 20_000
    #: Token lookups are cached this long; a revoked token stops working within this time.
    token_cache_seconds: int = 5
    #: While PostgreSQL is unavailable, POST /v1/events still decides tokens, account owners
    #: and daily quotas from what it read at most this long ago (0: refuse with 503 instead).
    #: A token revoked less than this long before an outage can be used until it runs out.
    max_staleness_seconds: int = 300
    max_page_size: int = 1_000

    def problems(self) -> list[str]:
        """Every invalid API setting, for `Settings.validate`."""
        out = [
            f"api.{name} must be >= 1"
            for name in (
                "max_events_per_request",
                "max_request_bytes",
                "max_event_bytes",
                "kafka_delivery_timeout_ms",
                "token_requests_per_second",
                "token_request_burst",
                "account_events_per_second",
                "account_event_burst",
                "upload_events_per_second",
                "upload_commit_events",
                "max_page_size",
            )
            if getattr(self, name) < 1
        ]
        if self.max_staleness_seconds < 0:
            out.append("api.max_staleness_seconds must be >= 0")
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            out.append("api.tls_certfile and api.tls_keyfile must be set together")
        if self.account_event_burst < self.max_events_per_request:
            out.append("api.account_event_burst must be >= api.max_events_per_request")
        return out


@dataclass(frozen=True, slots=True)
class AlertsSettings:
    """The alerts service (`meterstream alerts serve`): evaluation, webhooks, retries.

    Times are in milliseconds so that tests can run the loops and the back-off fast while the
    defaults stay production-like (retries over more than a day).
    """

    #: How often the evaluator looks for figures that changed (usage thresholds).
    evaluator_poll_ms: int = 500
    #: Every figure that a rule covers is evaluated again this often (a safety net).
    rescan_interval_ms: int = 300_000
    #: How often the ingestion-health conditions are checked.
    health_interval_ms: int = 15_000
    #: The notifier wakes on PostgreSQL NOTIFY; it also looks for due retries this often.
    notifier_poll_ms: int = 1_000
    delivery_timeout_ms: int = 10_000
    delivery_concurrency: int = 8
    #: Retry n waits retry_base_ms * retry_multiplier^(n-1), at most retry_max_delay_ms;
    #: the defaults (5 s x4, capped at 10 h, 10 attempts) span 27.6 hours.
    retry_base_ms: int = 5_000
    retry_multiplier: int = 4
    retry_max_delay_ms: int = 36_000_000
    max_attempts: int = 10
    #: An endpoint whose attempts have all failed for this long, and at least this many
    #: times in a row, is disabled (and the organisation told so).
    disable_after_ms: int = 86_400_000
    disable_after_failures: int = 10
    #: After a secret rotation, the previous secret still signs (a second signature) this long.
    secret_overlap_ms: int = 86_400_000
    #: Endpoint URLs on loopback, private, link-local or reserved addresses are refused unless
    #: this is set (an operator's own network; the tests' local receiver).
    allow_private_urls: bool = False
    #: The service's Prometheus `/metrics` (0: none).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 18079

    def problems(self) -> list[str]:
        """Every invalid alerts setting, for `Settings.validate`."""
        out = [
            f"alerts.{name} must be >= 1"
            for name in (
                "evaluator_poll_ms",
                "rescan_interval_ms",
                "health_interval_ms",
                "notifier_poll_ms",
                "delivery_timeout_ms",
                "delivery_concurrency",
                "retry_base_ms",
                "retry_multiplier",
                "retry_max_delay_ms",
                "max_attempts",
                "disable_after_failures",
            )
            if getattr(self, name) < 1
        ]
        if self.disable_after_ms < 0 or self.secret_overlap_ms < 0:
            out.append("alerts.disable_after_ms and alerts.secret_overlap_ms must be >= 0")
        return out


#: What an erasure does with the account's billing figures (docs/corrections.md).
ERASURE_FIGURES = ("keep", "pseudonymise", "delete")


@dataclass(frozen=True, slots=True)
class ErasureSettings:
    """Erasure of an account's personal data (`meterstream accounts erase`)."""

    #: The account's figures (and recalculation records): kept as they are, kept under a
    #: pseudonym (invoices stay reproducible), or deleted.
    figures: str = "pseudonymise"
    #: How long an erasure waits for archive files the job is writing to be committed.
    wait_seconds: int = 30


@dataclass(frozen=True, slots=True)
class Settings:
    """All of meterstream's settings."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    flink: FlinkSettings = field(default_factory=FlinkSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    alerts: AlertsSettings = field(default_factory=AlertsSettings)
    erasure: ErasureSettings = field(default_factory=ErasureSettings)
    #: Project-local directory for the local stack: jars, data, logs, pid files, checkpoints.
    stack_dir: Path = PROJECT_ROOT / ".stack"
    schemas_dir: Path = PROJECT_ROOT / "schemas"

    def validate(self) -> None:
        """Raise `ConfigError` listing every problem at once."""
        problems: list[str] = []
        ports = {
            "kafka.port": self.kafka.port,
            "kafka.controller_port": self.kafka.controller_port,
            "postgres.port": self.postgres.port,
            "flink.rest_port": self.flink.rest_port,
            "api.port": self.api.port,
        }
        if self.alerts.metrics_port:
            ports["alerts.metrics_port"] = self.alerts.metrics_port
        problems += [
            f"{name}={port} is not a TCP port"
            for name, port in ports.items()
            if not 0 < port <= MAX_PORT
        ]
        if len(set(ports.values())) != len(ports):
            problems.append(f"ports must differ: {ports}")
        if self.flink.parallelism < 1:
            problems.append("flink.parallelism must be >= 1")
        if self.flink.figure_cache_size < 0:
            problems.append("flink.figure_cache_size must be >= 0")
        if self.flink.keyed_path not in ("operator", "sql"):
            problems.append("flink.keyed_path must be 'operator' or 'sql'")
        if self.flink.state_backend not in ("hashmap", "rocksdb"):
            problems.append("flink.state_backend must be 'hashmap' or 'rocksdb'")
        if self.flink.allowed_lateness_hours < 0:
            problems.append("flink.allowed_lateness_hours must be >= 0")
        if self.flink.aggregate_ttl_days < self.flink.dedup_ttl_days:
            problems.append("flink.aggregate_ttl_days must be >= flink.dedup_ttl_days")
        if self.kafka.topics.partitions < 1:
            problems.append("kafka.topics.partitions must be >= 1")
        problems += self.api.problems()
        problems += self.alerts.problems()
        if self.erasure.figures not in ERASURE_FIGURES:
            problems.append(f"erasure.figures must be one of {', '.join(ERASURE_FIGURES)}")
        if self.erasure.wait_seconds < 0:
            problems.append("erasure.wait_seconds must be >= 0")
        if problems:
            raise ConfigError("invalid settings:\n  " + "\n  ".join(problems))


def _coerce(raw: str, current: Any, name: str) -> Any:
    if isinstance(current, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(current, int):
        try:
            return int(raw)
        except ValueError as exc:
            msg = f"{name}={raw!r} is not an integer"
            raise ConfigError(msg) from exc
    if isinstance(current, Path):
        return Path(raw)
    return raw


def _apply_env(obj: Any, prefix: str, env: dict[str, str]) -> Any:
    changes: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}_{f.name.upper()}"
        if hasattr(value, "__dataclass_fields__"):
            changes[f.name] = _apply_env(value, name, env)
        elif name in env:
            changes[f.name] = _coerce(env[name], value, name)
    return replace(obj, **changes)


def env_names(obj: Any = None, prefix: str = "METERSTREAM") -> dict[str, Any]:
    """Every setting's environment variable name and current value, for `meterstream config`."""
    obj = Settings() if obj is None else obj
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}_{f.name.upper()}"
        if hasattr(value, "__dataclass_fields__"):
            out.update(env_names(value, name))
        else:
            out[name] = "***" if f.name == "password" else value
    return out


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build and validate the settings: defaults overridden by `METERSTREAM_*` variables.

    Nested names join with underscores, e.g. `METERSTREAM_KAFKA_PORT=29092`,
    `METERSTREAM_FLINK_PARALLELISM=2`, `METERSTREAM_KAFKA_TOPICS_RAW=my.raw.topic`.
    """
    settings = _apply_env(Settings(), "METERSTREAM", dict(os.environ if env is None else env))
    settings.validate()
    return settings
