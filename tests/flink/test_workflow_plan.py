"""The workflow's plans: one check per record, in order up to the dedup; dedup and figures in the
keyed operator (its stream graph) or in the SQL reference path (its optimized plan)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meterstream.config import Settings
from meterstream.meters.registry import MeterRegistry
from tests.flink import plans

pytestmark = pytest.mark.flink


@pytest.fixture(scope="module")
def optimized_plan(settings: Settings, registry: MeterRegistry, tmp_path_factory) -> str:  # noqa: ANN001
    return plans.optimized_plan(settings, registry, tmp_path_factory.mktemp("plan"))


@pytest.fixture(scope="module")
def graph(settings: Settings, registry: MeterRegistry, tmp_path_factory) -> dict[int, Any]:  # noqa: ANN001
    return plans.stream_graph(settings, registry, tmp_path_factory.mktemp("graph"), archive=True)


def test_keyed_operator_path_checks_each_record_once_in_java_and_runs_no_python_operator(
    graph: dict[int, Any],
) -> None:
    # The check, time zone and period are one Java function (CheckAndRoute), not SQL, which the
    # planner once merged into a projection that called the check once per column.
    assert [n["type"] for n in graph.values()].count("check_and_route") == 1
    assert not any("check_event(" in node["contents"] for node in graph.values())
    assert not any("Python" in node["contents"] for node in graph.values())


def test_keyed_operator_path_keeps_each_partitions_order_from_the_source_to_the_operator(
    graph: dict[int, Any],
) -> None:
    # One exchange (by account) into the operator, and before it one chain from the source:
    # every node has one input, forwarded; nothing merges branches that could reorder records.
    operator = plans.node_id(graph, "dedup_and_figures")
    route = plans.node_id(graph, "check_and_route")
    corrections = plans.node_id(graph, "Source: corrections")
    inputs = dict(graph[operator]["predecessors"])
    assert inputs[route] == "HASH"
    assert len(inputs) == 2  # and the corrections, keyed by account too  # noqa: PLR2004
    assert inputs.keys() - {route} <= {corrections, *plans.downstream(graph, corrections)}
    chain = [route, *plans.upstream(graph, route)]
    for node in chain:
        assert [s for _, s in graph[node]["predecessors"]] in ([], ["FORWARD"])
    assert graph[chain[0]]["type"] == "check_and_route"
    assert graph[chain[-1]]["type"].startswith("Source: raw_events")


def test_keyed_operator_path_writes_figures_late_events_and_archive_in_the_operators_task(
    graph: dict[int, Any],
) -> None:
    operator = plans.node_id(graph, "dedup_and_figures")
    # Figures are upserts and deletes keyed like the table: no state-keeping normalizer or
    # materializer between the operator and PostgreSQL.
    assert not any(
        "ChangelogNormalize" in n["type"] or "UpsertMaterialize" in n["type"]
        for n in graph.values()
    )
    for sink in ("Sink: usage_aggregates", "Sink: late_events", "end: Writer"):
        node = plans.node_id(graph, sink)
        path = [node, *plans.upstream(graph, node)]
        assert operator in path
        between = path[: path.index(operator)]
        assert all(s == "FORWARD" for n in between for _, s in graph[n]["predecessors"])


def test_keyed_operator_path_logs_rejections_warnings_and_conflicts(
    graph: dict[int, Any],
) -> None:
    for sink in (
        plans.node_id(graph, "Sink: rejected_events["),
        plans.node_id(graph, "rejected_events_topic", ": Writer"),
    ):
        sources = plans.upstream(graph, sink)
        assert plans.node_id(graph, "check_log") in sources
        assert plans.node_id(graph, "duplicate_conflicts") in sources


def test_workflow_checks_each_record_once_in_one_jvm_function_for_all_branches(
    optimized_plan: str,
) -> None:
    assert optimized_plan.count("check_event(") == 1
    assert "Python" not in optimized_plan  # no Flink Python operator: the rules run in place


def test_workflow_without_the_fast_path_checks_every_record_once_too(
    settings: Settings, registry: MeterRegistry, tmp_path: Path
) -> None:
    from dataclasses import replace  # noqa: PLC0415

    python_only = replace(settings, flink=replace(settings.flink, fast_path=False))
    plan = plans.optimized_plan(python_only, registry, tmp_path)
    assert plan.count("check_event(") == 1
    assert "Python" not in plan


def test_workflow_keeps_each_partitions_order_from_the_check_to_the_dedup(
    optimized_plan: str,
) -> None:
    # The first arrival counts only if the dedup sees a key's arrivals in offset order: between
    # the check and the dedup there is one exchange, hashed by the dedup key (FIFO per key),
    # and nothing that merges two branches (a union's inputs reach the exchange on separate
    # channels, and a later record on one could overtake an earlier one on the other).
    dedup_input = optimized_plan.split("OverAggregate(", 1)[1].split("\n\n", 1)[0].splitlines()
    assert "Exchange(distribution=[hash[account_id, dedup_key]])" in dedup_input[1]
    assert sum("Exchange(" in line for line in dedup_input) == 1
    assert not any("Union(" in line for line in dedup_input)
    assert "account_time_zone(" in "".join(dedup_input[2:])  # chained in the source's task
    assert dedup_input[-1].strip() == "+- Reused(reference_id=[1])"
    check = optimized_plan.split("== Optimized Execution Plan ==", 1)[-1].lstrip()
    assert check.startswith("Calc(") and "check_event(" in check.splitlines()[0]
    assert "(reuse_id=[1])" in check.splitlines()[0]


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


def test_workflow_computes_periods_in_the_jvm_functions(optimized_plan: str) -> None:
    assert "billing_period_start(" in optimized_plan
    assert "arrived_too_late(" in optimized_plan
    assert "CONVERT_TZ" not in optimized_plan


def test_workflow_writes_figures_without_an_upsert_materializer(optimized_plan: str) -> None:
    # The group key equals the table's primary key: no extra state-keeping sink operator.
    assert "upsertMaterialize=[true]" not in optimized_plan


def test_workflow_looks_up_each_accounts_time_zone_once_per_record_in_memory(
    optimized_plan: str,
) -> None:
    # account_time_zone holds the table in memory (jvm/udf); no lookup join asks PostgreSQL.
    assert optimized_plan.count("account_time_zone(") == 1
    assert "LookupJoin(" not in optimized_plan


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
    assert conf["state.backend.rocksdb.memory.partitioned-index-filters"] == "true"
