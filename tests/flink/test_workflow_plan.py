"""The workflow's optimized plan: Python sees only what the JVM fast path leaves to it, once;
dedup and totals run in the JVM."""

from __future__ import annotations

from pathlib import Path

import pytest

from meterstream.config import Settings
from meterstream.meters.registry import MeterRegistry
from tests.flink import plans

pytestmark = pytest.mark.flink


@pytest.fixture(scope="module")
def optimized_plan(settings: Settings, registry: MeterRegistry, tmp_path_factory) -> str:  # noqa: ANN001
    return plans.optimized_plan(settings, registry, tmp_path_factory.mktemp("plan"))


def test_workflow_calls_python_in_one_operator_for_all_branches(optimized_plan: str) -> None:
    assert optimized_plan.count("PythonCorrelate(") == 1
    assert "PythonCalc(" not in optimized_plan


def test_workflow_sends_python_only_the_records_the_fast_path_did_not_answer(
    optimized_plan: str,
) -> None:
    python_input = optimized_plan.split("PythonCorrelate(", 1)[1].split("\n", 2)[1]
    assert "where=[fast_check_event(" in python_input
    assert python_input.rstrip().endswith("IS NULL])")


def test_workflow_without_the_fast_path_checks_every_record_in_python_once(
    settings: Settings, registry: MeterRegistry, tmp_path: Path
) -> None:
    from dataclasses import replace  # noqa: PLC0415

    python_only = replace(settings, flink=replace(settings.flink, fast_path=False))
    plan = plans.optimized_plan(python_only, registry, tmp_path)
    assert plan.count("PythonCalc(") == 1
    assert "fast_check_event" not in plan


def test_workflow_numbers_arrivals_per_account_and_key_in_one_over_aggregate(
    optimized_plan: str,
) -> None:
    assert optimized_plan.count("OverAggregate(") == 1
    assert "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW" in optimized_plan
    assert "COUNT(*)" in optimized_plan
    assert "FIRST_VALUE(" in optimized_plan


def test_workflow_aggregates_per_account_meter_period_and_segment_in_two_phases(
    optimized_plan: str,
) -> None:
    group = "groupBy=[account_id, meter, period_start, dimensions]"
    assert f"LocalGroupAggregate({group}" in optimized_plan
    assert f"GlobalGroupAggregate({group}" in optimized_plan


def test_workflow_counts_unique_values_without_touching_distinct_state_for_other_meters(
    optimized_plan: str,
) -> None:
    assert "COUNT(distinct$0 unique_value) FILTER" in optimized_plan


def test_workflow_reads_rejections_and_warnings_only_from_pythons_rows(optimized_plan: str) -> None:
    # The fast path answers only for events accepted without a warning: its rows must reach
    # the dedup branch alone, not also two log branches that would copy and drop them.
    log = optimized_plan.split("Union(all=[true], union=[source_topic", 1)[1].split("Sink(", 1)[0]
    assert "reason_code" in log
    assert "fast" not in log


def test_workflow_computes_periods_in_the_jvm_functions(optimized_plan: str) -> None:
    assert "billing_period_start(" in optimized_plan
    assert "arrived_too_late(" in optimized_plan
    assert "CONVERT_TZ" not in optimized_plan


def test_workflow_writes_figures_without_an_upsert_materializer(optimized_plan: str) -> None:
    # The group key equals the table's primary key: no extra state-keeping sink operator.
    assert "upsertMaterialize=[true]" not in optimized_plan


def test_workflow_looks_up_each_accounts_time_zone_with_a_cached_lookup_join(
    optimized_plan: str,
) -> None:
    assert (
        "LookupJoin(table=[default_catalog.default_database.account_time_zones]" in optimized_plan
    )


def test_workflow_unites_the_checked_branches_only_where_the_dedup_shuffles(
    optimized_plan: str,
) -> None:
    # An operator after a UNION ALL is never chained to the one before it: a lookup above the
    # union ran in a task of its own. Each branch now looks up its own rows, in the source's
    # task, and the union feeds the dedup operator's exchange directly.
    dedup_input = optimized_plan.split("OverAggregate(", 1)[1].split("\n\n", 1)[0].splitlines()
    assert "Exchange(distribution=[hash[account_id, dedup_key]])" in dedup_input[1]
    assert "Union(all=[true]" in dedup_input[2]
    lookups = [i for i, line in enumerate(dedup_input) if "LookupJoin(" in line]
    assert len(lookups) == 2
    assert all(i > 2 for i in lookups)
    assert optimized_plan.count("LookupJoin(") == 2


def test_workflow_writes_aggregates_and_both_rejection_sinks(optimized_plan: str) -> None:
    for sink in ("usage_aggregates", "rejected_events]", "rejected_events_topic", "late_events"):
        assert f"Sink(table=[default_catalog.default_database.{sink}" in optimized_plan


def test_flink_configuration_pins_exactly_once_rocksdb_and_35_day_dedup(
    settings: Settings, tmp_path: Path
) -> None:
    from meterstream.flink.env import flink_configuration  # noqa: PLC0415

    conf = flink_configuration(settings, job_name="x", checkpoint_dir=tmp_path)
    assert conf["execution.checkpointing.mode"] == "EXACTLY_ONCE"
    assert conf["state.backend.type"] == "rocksdb"
    assert conf["table.exec.state.ttl"] == "35 d"
    assert conf["python.execution-mode"] == "thread"
    assert conf["state.backend.rocksdb.memory.partitioned-index-filters"] == "true"
