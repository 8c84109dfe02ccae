"""The job's plans, for the plan tests (no job runs): the SQL path's optimized plan as text, and
the stream graph of the keyed operator's path."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyflink.table import StatementSet, StreamTableEnvironment

from meterstream.config import Settings
from meterstream.flink import tables
from meterstream.flink.archive import archive_table_ddl
from meterstream.flink.env import create_table_env
from meterstream.flink.workflow import define_workflow
from meterstream.meters.registry import MeterRegistry
from meterstream.stack.jars import ensure_jars


def _job(
    settings: Settings, registry: MeterRegistry, workdir: Path, *, archive: bool
) -> tuple[StreamTableEnvironment, StatementSet]:
    """The job's tables and workflow, as `jobs/aggregate_usage.py` defines them."""
    ensure_jars(settings)
    t_env = create_table_env(settings, job_name="plan-test", checkpoint_dir=workdir / "ckpt")
    t_env.execute_sql(tables.kafka_raw_events_ddl(settings))
    t_env.execute_sql(tables.kafka_corrections_ddl(settings))
    t_env.execute_sql(tables.jdbc_usage_aggregates_ddl(settings))
    t_env.execute_sql(tables.jdbc_rejected_events_ddl(settings))
    t_env.execute_sql(tables.kafka_rejected_events_ddl(settings))
    t_env.execute_sql(tables.jdbc_late_events_ddl(settings))
    if archive:
        t_env.execute_sql(archive_table_ddl(workdir / "archive"))
    statements = define_workflow(
        t_env,
        registry,
        settings,
        source="raw_events",
        sinks=tables.SinkTables(archive="archived_events" if archive else None),
        time_zones="account_time_zones",
        corrections="corrections",
    )
    return t_env, statements


def sql_path(settings: Settings) -> Settings:
    """`settings` with the SQL reference path for dedup and figures."""
    return replace(settings, flink=replace(settings.flink, keyed_path="sql"))


def optimized_plan(
    settings: Settings, registry: MeterRegistry, workdir: Path, *, archive: bool = False
) -> str:
    """The "Optimized Execution Plan" of the job on the SQL reference path (with the archive, if
    asked)."""
    _, statements = _job(sql_path(settings), registry, workdir, archive=archive)
    plan = statements.explain()
    return plan[plan.index("== Optimized Execution Plan ==") :]


def stream_graph(
    settings: Settings, registry: MeterRegistry, workdir: Path, *, archive: bool = False
) -> dict[int, dict[str, Any]]:
    """The job's stream graph on the keyed operator's path: node id -> node, each with its
    `type` (its name), `contents` and `predecessors` ((id, ship strategy) pairs)."""
    operator = replace(settings, flink=replace(settings.flink, keyed_path="operator"))
    t_env, statements = _job(operator, registry, workdir, archive=archive)
    statements.attach_as_datastream()
    plan = json.loads(t_env._j_tenv.execEnv().getExecutionPlan())  # noqa: SLF001
    return {
        node["id"]: {
            "type": node["type"],
            "contents": node["contents"],
            "predecessors": [(p["id"], p["ship_strategy"]) for p in node.get("predecessors", [])],
        }
        for node in plan["nodes"]
    }


def node_id(graph: dict[int, dict[str, Any]], name: str, suffix: str = "") -> int:
    """The one node whose name starts with `name` (and ends with `suffix`)."""
    (found,) = [
        i
        for i, node in graph.items()
        if node["type"].startswith(name) and node["type"].endswith(suffix)
    ]
    return found


def upstream(graph: dict[int, dict[str, Any]], start: int) -> list[int]:
    """Every node `start` reads from, directly or not."""
    seen: list[int] = []
    todo = [start]
    while todo:
        for parent, _ in graph[todo.pop()]["predecessors"]:
            if parent not in seen:
                seen.append(parent)
                todo.append(parent)
    return seen


def downstream(graph: dict[int, dict[str, Any]], start: int) -> list[int]:
    """Every node that reads from `start`, directly or not."""
    return [node for node in graph if start in upstream(graph, node)]
