"""The whole local stack at once: `meterstream up`, `down`, `status`, `reset`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from meterstream.archive import archive_root
from meterstream.config import Settings
from meterstream.errors import StackError
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
    kafka.create_topics(settings, [topics.corrections])
    say(f"topics: {topics.raw}, {topics.rejected}, {topics.corrections}")
    say(
        "PostgreSQL: "
        + ("started" if postgres.start(settings) else "already running")
        + f" on {settings.postgres.host}:{settings.postgres.port}"
    )
    applied = migrate(settings)
    if not applied:
        say("migrations: up to date")
    else:
        names = applied[0] if len(applied) == 1 else f"{applied[0]} to {applied[-1]}"
        say(f"migrations: {len(applied)} applied ({names})")


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


#: What the stack writes below `stack_dir` besides Kafka's and PostgreSQL's data: the jobs'
#: checkpoints, savepoints and temp files, the session cluster's files, pid files and logs.
#: `jars/` (downloads, not data) is kept.
STACK_WRITES = ("checkpoints", "savepoints", "job-tmp", "flink", "run", "logs")


def reset(
    settings: Settings, *, keep_archive: bool = False, say: Callable[[str], None] = print
) -> list[Path]:
    """Delete everything the stopped stack wrote; the audit archive too unless `keep_archive`.

    A kept archive stays marked with the old stack's id, so a recalculation on the new stack
    refuses it. Returns the paths deleted.

    Raises:
        StackError: a service still runs.
    """
    running = [name for name, up in status(settings).items() if up]
    if running:
        msg = f"stop the stack first (`meterstream down`): {', '.join(running)} still running"
        raise StackError(msg)
    kafka.reset(settings)
    postgres.reset(settings)
    targets = [settings.stack_dir / name for name in STACK_WRITES]
    archive = archive_root(settings)
    if keep_archive:
        say(f"kept the audit archive at {archive} (marked with the deleted stack's id)")
    else:
        targets.append(archive)
    deleted = [path for path in targets if path.exists()]
    for path in deleted:
        shutil.rmtree(path)
    say("deleted: Kafka's and PostgreSQL's data" + "".join(f", {p}" for p in deleted))
    return deleted
