"""The JVM jars of the stack, resolved by Maven from `jvm/pom.xml` into `.stack/jars/`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from meterstream.config import PROJECT_ROOT, Settings
from meterstream.errors import StackError

POM = PROJECT_ROOT / "jvm" / "pom.xml"


def flink_jars(settings: Settings) -> list[Path]:
    """The connector jars Flink needs (Kafka, JDBC + PostgreSQL driver, Avro)."""
    return sorted((settings.stack_dir / "jars" / "flink").glob("*.jar"))


def kafka_classpath(settings: Settings) -> str:
    """The Java classpath of the Kafka broker."""
    return str(settings.stack_dir / "jars" / "kafka" / "*")


def ensure_jars(settings: Settings) -> None:
    """Resolve the jars with Maven unless they are already there (idempotent)."""
    kafka_dir = settings.stack_dir / "jars" / "kafka"
    if flink_jars(settings) and any(kafka_dir.glob("kafka_2.13-*.jar")):
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        msg = "Maven (mvn) is not installed; it resolves the pinned jars in jvm/pom.xml"
        raise StackError(msg)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), f"-Dstack.dir={settings.stack_dir}", "package"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        msg = f"mvn could not resolve the stack's jars from {POM}:\n{result.stdout}{result.stderr}"
        raise StackError(msg)
