"""The jar set: the pom names the Parquet jars, and a changed pom is resolved again."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from meterstream.config import Settings
from meterstream.stack import jars


def test_pom_copies_flink_parquet_with_parquet_hadoop_and_pinned_hadoop_classes() -> None:
    names = jars.pom_flink_jar_names()
    assert {
        "flink-parquet-2.2.0.jar",
        "parquet-hadoop-1.15.2.jar",
        "hadoop-common-3.4.3.jar",
        "hadoop-mapreduce-client-core-3.4.3.jar",
    } <= names
    assert all("${" not in name for name in names)


def test_jars_are_current_only_when_resolved_from_this_pom(
    settings: Settings, tmp_path: Path
) -> None:
    local = replace(settings, stack_dir=tmp_path)
    (tmp_path / "jars" / "flink").mkdir(parents=True)
    (tmp_path / "jars" / "kafka").mkdir()
    (tmp_path / "jars" / "flink" / "flink-parquet-2.2.0.jar").write_bytes(b"")
    (tmp_path / "jars" / "kafka" / "kafka_2.13-4.2.0.jar").write_bytes(b"")
    # Jars from before the stamp existed (or from another pom) are resolved again.
    assert not jars.jars_current(local)
    (tmp_path / "jars" / jars.STAMP).write_text("0" * 64 + "\n")
    assert not jars.jars_current(local)
    (tmp_path / "jars" / jars.STAMP).write_text(jars.pom_digest() + "\n")
    assert jars.jars_current(local)
