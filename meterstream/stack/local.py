"""The whole local stack at once: `meterstream up`, `down`, `status`."""

from __future__ import annotations

from collections.abc import Callable

from meterstream.config import Settings
from meterstream.stack import flink, kafka, postgres
from meterstream.stack.jars import ensure_jars
from meterstream.store.migrate import migrate


def up(settings: Settings, say: Callable[[str], None] = print) -> None:
    """Resolve jars, start Kafka and PostgreSQL, create topics, apply migrations (idempotent)."""
    say("resolving the pinned jars (jvm/pom.xml) ...")
    ensure_jars(settings)
    say(
        "Kafka: "
        + ("started" if kafka.start(settings) else "already running")
        + f" on {settings.kafka.bootstrap_servers}"
    )
    topics = settings.kafka.topics
    kafka.create_topics(settings, [topics.raw], config=kafka.RAW_TOPIC_CONFIG)
    kafka.create_topics(settings, [topics.rejected])
    say(f"topics: {topics.raw}, {topics.rejected}")
    say(
        "PostgreSQL: "
        + ("started" if postgres.start(settings) else "already running")
        + f" on {settings.postgres.host}:{settings.postgres.port}"
    )
    applied = migrate(settings)
    say("migrations: " + (", ".join(applied) if applied else "up to date"))


def down(settings: Settings, say: Callable[[str], None] = print) -> None:
    """Stop every service of the local stack that runs (data is kept)."""
    say("Flink cluster: " + ("stopped" if flink.stop(settings) else "was not running"))
    say("Kafka: " + ("stopped" if kafka.stop(settings) else "was not running"))
    say("PostgreSQL: " + ("stopped" if postgres.stop(settings) else "was not running"))


def status(settings: Settings) -> dict[str, bool]:
    """Which services run."""
    return {
        "kafka": kafka.service(settings).running(),
        "postgres": postgres.running(settings),
        "flink-cluster": flink.running(settings),
    }
