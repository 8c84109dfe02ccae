"""The fault suite's own stack: Kafka, PostgreSQL and a Flink cluster on ports of their own.

The fault tests stop Kafka and PostgreSQL and kill TaskManagers, so they never touch the
shared local stack: everything here lives in `.stack/faults` and listens on other ports.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from meterstream.config import PROJECT_ROOT, Settings, load_settings

#: The fault stack's settings, as `METERSTREAM_*` variables (every job and CLI child gets them).
FAULT_ENV = {
    "METERSTREAM_STACK_DIR": str(PROJECT_ROOT / ".stack" / "faults"),
    "METERSTREAM_KAFKA_PORT": "19192",
    "METERSTREAM_KAFKA_CONTROLLER_PORT": "19193",
    "METERSTREAM_POSTGRES_PORT": "15532",
    "METERSTREAM_FLINK_REST_PORT": "18181",
    "METERSTREAM_API_PORT": "18180",
    "METERSTREAM_FLINK_CHECKPOINT_INTERVAL_MS": "1000",
    "METERSTREAM_FLINK_ALLOWED_LATENESS_HOURS": str(24 * 60),
}


def fault_settings() -> Settings:
    """The fault stack's settings: the process environment overridden by FAULT_ENV."""
    return load_settings({**os.environ, **FAULT_ENV})


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a CLI or job child process that must use `settings`."""
    from meterstream.stack.flink import settings_env  # noqa: PLC0415

    return {**os.environ, **settings_env(settings)}


def link_jars(settings: Settings, shared: Path = PROJECT_ROOT / ".stack" / "jars") -> None:
    """Reuse the shared stack's resolved jars (read-only) instead of running Maven again."""
    jars = settings.stack_dir / "jars"
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    if not jars.exists() and (shared / "flink").is_dir():
        jars.symlink_to(shared.resolve(), target_is_directory=True)


def up(settings: Settings, taskmanagers: int = 2) -> None:
    """Start the fault stack from empty data: Kafka, PostgreSQL (+ migrations), Flink."""
    from meterstream.stack import flink, local  # noqa: PLC0415

    assert settings.stack_dir.resolve() != (PROJECT_ROOT / ".stack").resolve()
    down(settings)
    for data in (
        "kafka",
        "postgres",
        "checkpoints",
        "savepoints",
        "flink",
        "logs",
        "run",
        "client-only",
    ):
        shutil.rmtree(settings.stack_dir / data, ignore_errors=True)
    link_jars(settings)
    local.up(settings, say=lambda _line: None)
    flink.start(settings)
    while len(flink.taskmanager_pids(settings)) < taskmanagers:
        flink.start_taskmanager(settings)


def down(settings: Settings) -> None:
    """Stop every service of the fault stack that runs."""
    from meterstream.stack import local  # noqa: PLC0415

    assert settings.stack_dir.resolve() != (PROJECT_ROOT / ".stack").resolve()
    local.down(settings, say=lambda _line: None)
