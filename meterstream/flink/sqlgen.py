"""The aggregation SQL, generated from the meter definitions: one figure per aggregation kind.

Meter names are checked identifiers and the only names spliced in; no event value ever is.
"""

from __future__ import annotations

from collections.abc import Mapping

from meterstream.meters.model import IDENTIFIER, Aggregation
from meterstream.meters.registry import MeterRegistry

#: The figure of each kind, over the rows of one (account, meter, period, dimensions) group.
FIGURES: dict[Aggregation, str] = {
    Aggregation.SUM: "SUM(quantity)",
    Aggregation.COUNT: "CAST(COUNT(*) AS DECIMAL(38, 9))",
    Aggregation.MIN: "MIN(quantity)",
    Aggregation.MAX: "MAX(quantity)",
    Aggregation.MEAN: "AVG(quantity)",
    # The latest event time wins: the max of "<15-digit ms>|<value>" (ties: larger text).
    # The text is built only for LATEST rows; the others pay one comparison.
    Aggregation.LATEST: (
        "CAST(SPLIT_INDEX(MAX(CASE WHEN aggregation = 'LATEST' THEN CONCAT(LPAD(CAST("
        "event_time_ms AS STRING), 15, '0'), '|', CAST(quantity AS STRING)) END), '|', 1) "
        "AS DECIMAL(38, 9))"
    ),
    # The filter keeps the other meters' rows (unique_value NULL) out of the distinct map
    # state: without it, every group's merge read that state for the NULL key (measured).
    Aggregation.UNIQUE_COUNT: (
        "CAST(COUNT(DISTINCT unique_value) FILTER (WHERE unique_value IS NOT NULL)"
        " AS DECIMAL(38, 9))"
    ),
}


def _name(identifier: str) -> str:
    if not IDENTIFIER.fullmatch(identifier):
        msg = f"{identifier!r} is not a valid SQL identifier here"
        raise ValueError(msg)
    return f"`{identifier}`"


def _in(meters: list[str]) -> str:
    return ", ".join(f"'{m}'" for m in meters)


def aggregate_sql(
    registry: MeterRegistry,
    *,
    source: str,
    sink: str,
    ttl_days: int,
    retired: Mapping[str, Aggregation] | None = None,
) -> str:
    """The INSERT that keeps `sink` equal to the figures of the deduplicated `source` rows.

    Every kind's accumulator is always computed, so the operator's state layout does not
    depend on which meters exist: adding or changing a meter keeps savepoints compatible.
    Which figure a meter gets is decided in the final projection, from the definitions.
    Figures are absolute values keyed like the PostgreSQL primary key, so every write is an
    idempotent upsert; their state outlives the dedup window (`ttl_days`) so that a late event
    never restarts a figure from zero.

    `retired`: meters `registry` no longer defines, with the aggregation their archived rows
    carry (recalculation only: the streaming job rejects events of unknown meters).
    """
    kinds: dict[str, Aggregation] = {}
    for name in registry.names():
        meter = registry.current(name)
        assert meter is not None  # noqa: S101 - names() lists loaded meters
        kinds[name] = meter.aggregation
    for name, kind in sorted((retired or {}).items()):
        kinds.setdefault(name, kind)
    by_kind: dict[Aggregation, list[str]] = {}
    for name, kind in kinds.items():
        _name(name)
        by_kind.setdefault(kind, []).append(name)
    kinds = [kind for kind in Aggregation if kind in by_kind]
    figure = "\n".join(
        f"    WHEN meter IN ({_in(by_kind[kind])}) THEN {FIGURES[kind]}" for kind in kinds
    )
    unused = "\n".join(
        f"    WHEN FALSE THEN {FIGURES[kind]}" for kind in Aggregation if kind not in by_kind
    )
    kind_of = "\n".join(
        f"    WHEN meter IN ({_in(by_kind[kind])}) THEN '{kind.value}'" for kind in kinds
    )
    return f"""INSERT INTO {_name(sink)}
SELECT /*+ STATE_TTL('{source}' = '{int(ttl_days)}d') */
  account_id, meter, period_start, dimensions,
  CASE
{kind_of}
  END AS aggregation,
  CASE
{figure}
{unused}
  END AS quantity,
  COUNT(*) AS event_count,
  CAST(MIN(event_time) AS TIMESTAMP(3)) AS first_event_at,
  CAST(MAX(event_time) AS TIMESTAMP(3)) AS last_event_at,
  CAST(MAX(arrived_at) AS TIMESTAMP(3)) AS last_arrived_at
FROM {_name(source)}
GROUP BY account_id, meter, period_start, dimensions"""
