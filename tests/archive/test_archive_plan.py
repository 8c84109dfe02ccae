"""The job's plan with the archive: one more sink, still one check of each record, one lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from meterstream.config import Settings
from meterstream.flink.archive import archive_table_ddl
from meterstream.meters.registry import MeterRegistry
from tests.flink import plans

pytestmark = pytest.mark.flink


@pytest.fixture(scope="module")
def optimized_plan(
    settings: Settings, registry: MeterRegistry, tmp_path_factory: pytest.TempPathFactory
) -> str:
    return plans.optimized_plan(
        settings, registry, tmp_path_factory.mktemp("archive-plan"), archive=True
    )


def test_archive_adds_a_filesystem_sink_and_no_second_check_or_time_zone_lookup(
    optimized_plan: str,
) -> None:
    assert optimized_plan.count("check_event(") == 1
    assert optimized_plan.count("account_time_zone(") == 1  # as without it
    assert "Sink(table=[default_catalog.default_database.archived_events]" in optimized_plan


def test_archive_rows_are_every_arrival_written_after_the_dedup_shuffle(
    optimized_plan: str,
) -> None:
    # Every accepted event, not only first arrivals: the archive's branch reads the numbered
    # arrivals (the OVER aggregate's output, reused) with no filter on the arrival number but
    # the `w0$o0 > 0` that always holds; its files are written in the dedup operator's task.
    archive_branch = optimized_plan[optimized_plan.index("archived_events]") :].split(
        "\n\n", maxsplit=1
    )[0]
    assert "Reused(reference_id=" in archive_branch
    assert "w0$o0 = 1" not in archive_branch
    assert "w0$o0 > 1" not in archive_branch


def test_archive_table_is_parquet_partitioned_by_arrival_day_with_success_files(
    tmp_path: Path,
) -> None:
    ddl = archive_table_ddl(tmp_path)
    assert "PARTITIONED BY (dt)" in ddl
    assert f"'path' = '{(tmp_path / 'events').resolve().as_uri()}'" in ddl
    for option in (
        "'format' = 'parquet'",
        "'sink.partition-commit.policy.kind' = 'success-file'",
        "'sink.rolling-policy.file-size' = '128MB'",
    ):
        assert option in ddl
