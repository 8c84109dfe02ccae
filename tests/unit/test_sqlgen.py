"""Golden tests for the aggregation SQL generated from the meter definitions."""

from __future__ import annotations

import pytest

from meterstream.flink.sqlgen import FIGURES, aggregate_sql
from meterstream.meters.model import Aggregation
from meterstream.meters.registry import MeterRegistry


def test_aggregate_sql_maps_each_meter_to_its_kinds_figure(registry: MeterRegistry) -> None:
    sql = aggregate_sql(registry, source="unique_events", sink="usage_aggregates", ttl_days=70)

    assert "WHEN meter IN ('llm_tokens', 'storage_gb_hours') THEN SUM(quantity)" in sql
    assert "WHEN meter IN ('api_calls') THEN 'COUNT'" in sql
    assert "WHEN meter IN ('active_users') THEN CAST(COUNT(DISTINCT unique_value)" in sql
    assert "GROUP BY account_id, meter, period_start, dimensions" in sql
    assert "STATE_TTL('unique_events' = '70d')" in sql


def test_aggregate_sql_computes_every_kind_so_state_layout_never_changes(
    registry: MeterRegistry,
) -> None:
    sql = aggregate_sql(registry, source="unique_events", sink="usage_aggregates", ttl_days=70)

    for figure in FIGURES.values():
        assert figure in sql


def test_aggregate_sql_has_a_figure_for_every_aggregation_kind() -> None:
    assert set(FIGURES) == set(Aggregation)


def test_aggregate_sql_refuses_identifiers_that_are_not_plain_names(
    registry: MeterRegistry,
) -> None:
    with pytest.raises(ValueError, match="not a valid SQL identifier"):
        aggregate_sql(registry, source="x; DROP TABLE y", sink="usage_aggregates", ttl_days=70)


def test_aggregate_sql_gives_a_retired_meter_its_archived_kinds_figure(
    registry: MeterRegistry,
) -> None:
    def kind_lines(sql: str) -> dict[str, str]:
        """meter -> the kind its `aggregation` column gets."""
        out = {}
        for line in sql.splitlines():
            if "WHEN meter IN" in line and "THEN '" in line:
                meters, kind = line.split("WHEN meter IN (")[1].split(") THEN ")
                out.update({m.strip(" '"): kind.strip("'") for m in meters.split(",")})
        return out

    plain = aggregate_sql(registry, source="e", sink="usage_aggregates", ttl_days=70)
    retired = {"old_meter": Aggregation.LATEST, "api_calls": Aggregation.MIN}
    sql = aggregate_sql(registry, source="e", sink="usage_aggregates", ttl_days=70, retired=retired)
    assert "old_meter" not in kind_lines(plain)
    # A meter the schemas define keeps its definition; only the retired one is added.
    assert kind_lines(sql) == {**kind_lines(plain), "old_meter": "LATEST"}
