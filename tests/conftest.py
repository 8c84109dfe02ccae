"""Shared fixtures: settings, the local stack (started for the session if it is not running)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from meterstream.config import Settings, load_settings
from meterstream.flink.launch import with_java_tmpdir
from meterstream.meters.registry import MeterRegistry, load_registry
from meterstream.rules.validate import Validator

# Generated events straddle a month boundary up to a month back; with the default 72-hour
# lateness most of them would be late. Pipeline tests use a 60-day lateness (their jobs inherit
# this environment) unless they test lateness itself.
os.environ.setdefault("METERSTREAM_FLINK_ALLOWED_LATENESS_HOURS", str(24 * 60))


@pytest.fixture(scope="session", autouse=True)
def jvm_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every Flink JVM the tests start keeps its temporary files here, removed at the end.

    A job or TaskManager that a test kills cannot delete its own (the mini cluster's RocksDB
    instances, the planner and RPC jars Flink unpacks): ~170 MB in /tmp per killed job.
    PyFlink's gateway and Flink's daemon scripts read `JVM_ARGS`.
    """
    path = tmp_path_factory.mktemp("jvm-tmp")
    before = os.environ.get("JVM_ARGS")
    os.environ["JVM_ARGS"] = with_java_tmpdir(before or "", path)
    yield path
    if before is None:
        os.environ.pop("JVM_ARGS", None)
    else:
        os.environ["JVM_ARGS"] = before
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def registry(settings: Settings) -> MeterRegistry:
    return load_registry(settings.schemas_dir)


@pytest.fixture(scope="session")
def validator(registry: MeterRegistry) -> Validator:
    return Validator(registry)


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Settings]:
    """Kafka and PostgreSQL, up and migrated. Never skipped: if the stack cannot start, tests fail.

    Services this fixture started are stopped at the end; ones already running are left alone.
    """
    from meterstream.stack import kafka, local, postgres  # noqa: PLC0415

    before = local.status(settings)
    local.up(settings, say=lambda _line: None)
    yield settings
    if not before["kafka"]:
        kafka.stop(settings)
    if not before["postgres"]:
        postgres.stop(settings)


@pytest.fixture
def unique() -> str:
    """A short unique name part for topics, accounts and groups of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def topics(stack: Settings, unique: str) -> tuple[str, str]:
    """A fresh raw topic and rejected topic for one test."""
    from meterstream.stack.kafka import RAW_TOPIC_CONFIG, create_topics  # noqa: PLC0415

    raw, rejected = f"test-{unique}-raw", f"test-{unique}-rejected"
    create_topics(stack, [raw], config=RAW_TOPIC_CONFIG)
    create_topics(stack, [rejected])
    return raw, rejected


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    path = tmp_path / "checkpoints"
    path.mkdir()
    return path
