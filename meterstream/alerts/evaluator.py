"""Usage thresholds over `usage_aggregates`: which (rule, account, period, threshold) fired.

The streaming job upserts absolute figures; this reads the rows that changed and fires each
threshold a figure reaches, at most once: `alert_firings` has the primary key (rule, account,
period, threshold), and a firing and its notification are inserted in one transaction. So a
restart of the job, of this evaluator or of the notifier, a replay after a checkpoint restore
(a figure briefly going back, then up again) and a recalculation never fire one twice.

A pass reads, in order:
1. rules not evaluated yet (new, replaced, enabled again): every figure they cover, so a rule
   sees the usage counted before it existed;
2. the figures whose `updated_at` lies in [watermark - overlap, safe bound). `updated_at` is
   the writing transaction's start, so a row can become visible after a later one; the safe
   bound is the start of the oldest transaction that is writing now, and the overlap covers
   one that has not written yet (re-reading is harmless);
3. the rows a recalculation changed (`aggregate_changes`): crossings, and fired thresholds the
   figure is now below, which are recorded (`lowered_*`) and never fire again;
4. every `alerts.rescan_interval_ms` (and at start), every figure of every rule: a safety net.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import psycopg

from meterstream.alerts.metrics import AlertMetrics
from meterstream.alerts.notifications import NotificationType, decimal_text
from meterstream.alerts.outbox import enqueue
from meterstream.alerts.thresholds import Crossing, Thresholds
from meterstream.config import Settings

log = logging.getLogger("meterstream.alerts.evaluator")

#: Serialises the evaluators of several service processes (each pass's writes).
LOCK_KEY = 1_794_001
#: Figures whose transaction started this long before the last safe bound are read again.
OVERLAP = timedelta(milliseconds=500)
STATE = "usage"

#: The figure of (rule, account, period): one row, or a segmented meter's rows combined.
FIGURE = """
LEFT JOIN LATERAL (
  SELECT CASE r.combine WHEN 'max' THEN max(u.quantity) WHEN 'min' THEN min(u.quantity)
              ELSE sum(u.quantity) END AS figure,
         max(u.last_arrived_at) AS last_arrived_at, max(u.updated_at) AS updated_at
  FROM usage_aggregates u
  WHERE u.account_id = c.account_id AND u.meter = c.meter AND u.period_start = c.period_start
    AND (r.segment IS NULL OR u.dimensions = r.segment)) f ON true
"""
#: Which rules a candidate (account, meter, period) concerns: the account must belong to the
#: rule's organisation now, whoever it belonged to before.
RULES = """
JOIN accounts a ON a.account_id = c.account_id
JOIN alert_rules r ON r.kind = 'usage_threshold' AND r.enabled AND r.org_id = a.org_id
  AND r.meter = c.meter AND (r.account_id IS NULL OR r.account_id = c.account_id)
  AND c.period_start >= r.from_period AND (r.only_period IS NULL OR c.period_start = r.only_period)
"""
SELECT = """
SELECT r.rule_id, c.account_id, c.period_start, f.figure, f.last_arrived_at, f.updated_at,
       coalesce((SELECT array_agg(x.threshold) FROM alert_firings x WHERE x.rule_id = r.rule_id
                 AND x.account_id = c.account_id AND x.period_start = c.period_start), '{}')
         AS fired,
       coalesce((SELECT array_agg(x.threshold) FROM alert_firings x WHERE x.rule_id = r.rule_id
                 AND x.account_id = c.account_id AND x.period_start = c.period_start
                 AND x.lowered_at IS NULL), '{}') AS standing
"""
#: Candidates: every figure the given rules cover (backfill and rescan).
ALL_OF_RULES = f"""
WITH c AS (
  SELECT DISTINCT u.account_id, u.meter, u.period_start
  FROM alert_rules r0
  JOIN accounts a0 ON a0.org_id = r0.org_id
       AND (r0.account_id IS NULL OR a0.account_id = r0.account_id)
  JOIN usage_aggregates u ON u.account_id = a0.account_id AND u.meter = r0.meter
       AND u.period_start >= r0.from_period
  WHERE r0.rule_id = ANY(%(rules)s))
{SELECT} FROM c {RULES} AND r.rule_id = ANY(%(rules)s) {FIGURE}
"""
#: Candidates: the figures updated in a window (incremental).
CHANGED = f"""
WITH c AS (
  SELECT DISTINCT account_id, meter, period_start FROM usage_aggregates
  WHERE updated_at >= %(since)s AND updated_at < %(until)s)
{SELECT} FROM c {RULES} AND r.evaluated_at IS NOT NULL {FIGURE}
"""
#: Candidates: the figures a recalculation changed.
RECALCULATED = f"""
WITH c AS (
  SELECT account_id, meter, period_start, max(change_id) AS change_id,
         (array_agg(run_id ORDER BY change_id DESC))[1] AS run_id
  FROM aggregate_changes WHERE change_id > %(after)s GROUP BY 1, 2, 3)
{SELECT}, c.run_id FROM c {RULES} {FIGURE}
"""


@dataclass(frozen=True, slots=True)
class UsageRule:
    """What the evaluator needs of a usage-threshold rule."""

    rule_id: uuid.UUID
    org_id: str
    name: str
    meter: str
    segment: str | None
    thresholds: Thresholds


@dataclass(frozen=True, slots=True)
class Figure:
    """A (rule, account, period) figure as read, with the thresholds it fired so far."""

    rule_id: uuid.UUID
    account_id: str
    period_start: date
    figure: Decimal | None
    last_arrived_at: datetime | None
    updated_at: datetime | None
    fired: tuple[Decimal, ...]
    standing: tuple[Decimal, ...]
    run_id: uuid.UUID | None = None


@dataclass(slots=True)
class PassResult:
    """What one pass did."""

    figures: int = 0
    fired: int = 0
    lowered: int = 0


class Evaluator:
    """Runs evaluation passes on one PostgreSQL connection (autocommit)."""

    def __init__(
        self,
        settings: Settings,
        metrics: AlertMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._clock = clock
        self._next_rescan = 0.0

    def run_pass(self, conn: psycopg.Connection[Any]) -> PassResult:
        """One round: new rules, changed figures, recalculations, and a rescan when due."""
        result = PassResult()
        rules = self._rules(conn)
        safe = self._safe_bound(conn)
        watermark, change_id = self._state(conn)
        if rules:
            fresh = [rule_id for rule_id, (_, evaluated) in rules.items() if not evaluated]
            if fresh:
                self._timed(
                    conn,
                    "backfill",
                    rules=rules,
                    query=ALL_OF_RULES,
                    params={"rules": fresh},
                    result=result,
                )
                conn.execute(
                    "UPDATE alert_rules SET evaluated_at = now() WHERE rule_id = ANY(%s)"
                    " AND evaluated_at IS NULL",
                    (fresh,),
                )
            if self._clock() >= self._next_rescan:
                every = list(rules)
                self._timed(
                    conn,
                    "rescan",
                    rules=rules,
                    query=ALL_OF_RULES,
                    params={"rules": every},
                    result=result,
                )
                self._next_rescan = self._clock() + self.settings.alerts.rescan_interval_ms / 1000
            if watermark is not None:
                window = {"since": watermark - OVERLAP, "until": safe}
                self._timed(
                    conn, "incremental", rules=rules, query=CHANGED, params=window, result=result
                )
        last_change = self._last_change(conn)
        if rules and change_id is not None and last_change > change_id:
            self._timed(
                conn,
                "recalc",
                rules=rules,
                query=RECALCULATED,
                params={"after": change_id},
                result=result,
            )
        conn.execute(
            "INSERT INTO alert_evaluator_state (name, watermark, change_id) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET watermark = excluded.watermark,"
            " change_id = excluded.change_id, updated_at = now()",
            (STATE, safe, last_change),
        )
        lag = conn.execute("SELECT extract(epoch FROM clock_timestamp() - %s)", (safe,)).fetchone()
        self.metrics.evaluator_lag.set(float(lag[0]) if lag else 0.0)
        return result

    # --- reads -------------------------------------------------------------------------------

    def _rules(self, conn: psycopg.Connection[Any]) -> dict[uuid.UUID, tuple[UsageRule, bool]]:
        rows = conn.execute(
            "SELECT rule_id, org_id, name, meter, segment, thresholds, recurring_every,"
            " evaluated_at IS NOT NULL FROM alert_rules"
            " WHERE kind = 'usage_threshold' AND enabled"
        ).fetchall()
        return {
            row[0]: (
                UsageRule(
                    rule_id=row[0],
                    org_id=row[1],
                    name=row[2],
                    meter=row[3],
                    segment=row[4],
                    thresholds=Thresholds(tuple(row[5] or ()), row[6]),
                ),
                bool(row[7]),
            )
            for row in rows
        }

    def _safe_bound(self, conn: psycopg.Connection[Any]) -> datetime:
        """Now, or the start of the oldest transaction that has written and not committed."""
        row = conn.execute(
            "SELECT least(clock_timestamp(), (SELECT min(xact_start) FROM pg_stat_activity"
            " WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
            " AND datname = current_database()))"
        ).fetchone()
        assert row is not None  # noqa: S101 - a SELECT of one expression returns one row
        return row[0]  # type: ignore[no-any-return]

    def _state(self, conn: psycopg.Connection[Any]) -> tuple[datetime | None, int | None]:
        row = conn.execute(
            "SELECT watermark, change_id FROM alert_evaluator_state WHERE name = %s", (STATE,)
        ).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def _last_change(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT coalesce(max(change_id), 0) FROM aggregate_changes").fetchone()
        return int(row[0]) if row else 0

    # --- evaluation --------------------------------------------------------------------------

    def _timed(
        self,
        conn: psycopg.Connection[Any],
        kind: str,
        *,
        rules: dict[uuid.UUID, tuple[UsageRule, bool]],
        query: str,
        params: dict[str, Any],
        result: PassResult,
    ) -> None:
        started = time.perf_counter()
        rows = conn.execute(query, params).fetchall()  # type: ignore[arg-type]
        figures = [
            Figure(
                rule_id=row[0],
                account_id=row[1],
                period_start=row[2],
                figure=row[3],
                last_arrived_at=row[4],
                updated_at=row[5],
                fired=tuple(row[6]),
                standing=tuple(row[7]),
                run_id=row[8] if len(row) > 8 else None,  # noqa: PLR2004 - RECALCULATED's run
            )
            for row in rows
        ]
        self._apply(conn, {k: v[0] for k, v in rules.items()}, figures, kind == "recalc", result)
        self.metrics.passes.labels(kind).inc()
        self.metrics.pass_seconds.labels(kind).observe(time.perf_counter() - started)

    def _apply(
        self,
        conn: psycopg.Connection[Any],
        rules: dict[uuid.UUID, UsageRule],
        figures: list[Figure],
        recalc: bool,
        result: PassResult,
    ) -> None:
        """Fire what was crossed (and record what a recalculation lowered), in one transaction."""
        result.figures += len(figures)
        work: list[tuple[Figure, UsageRule, list[Crossing], list[Decimal]]] = []
        for fig in figures:
            rule = rules.get(fig.rule_id)
            if rule is None:
                continue
            crossed = rule.thresholds.crossed(fig.figure, fig.fired)
            lowered = rule.thresholds.lowered(fig.figure, fig.standing) if recalc else []
            if crossed or lowered:
                work.append((fig, rule, crossed, lowered))
        if not work:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            for fig, rule, crossed, lowered in work:
                for crossing in crossed:
                    if self._fire(conn, rule, fig, crossing):
                        result.fired += 1
                if lowered:
                    cur = conn.execute(
                        "UPDATE alert_firings SET lowered_at = now(), lowered_quantity = %s,"
                        " lowered_run_id = %s WHERE rule_id = %s AND account_id = %s"
                        " AND period_start = %s AND threshold = ANY(%s) AND lowered_at IS NULL",
                        (
                            fig.figure,
                            fig.run_id,
                            rule.rule_id,
                            fig.account_id,
                            fig.period_start,
                            lowered,
                        ),
                    )
                    result.lowered += cur.rowcount
                    self.metrics.lowered.inc(cur.rowcount)

    def _fire(
        self, conn: psycopg.Connection[Any], rule: UsageRule, fig: Figure, crossing: Crossing
    ) -> bool:
        """Insert the firing and its notification; False if it had fired already."""
        notification_id = uuid.uuid4()
        row = conn.execute(
            "INSERT INTO alert_firings (rule_id, account_id, period_start, threshold, quantity,"
            " notification_id) VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING fired_at",
            (
                rule.rule_id,
                fig.account_id,
                fig.period_start,
                crossing.threshold,
                fig.figure,
                notification_id,
            ),
        ).fetchone()
        if row is None:
            return False
        assert fig.figure is not None  # noqa: S101 - crossed() needs a figure
        data = {
            "organisation": rule.org_id,
            "rule_id": str(rule.rule_id),
            "rule_name": rule.name,
            "account_id": fig.account_id,
            "meter": rule.meter,
            "segment": orjson.loads(rule.segment) if rule.segment else None,
            "period_start": fig.period_start.isoformat(),
            "threshold": decimal_text(crossing.threshold),
            "quantity": decimal_text(fig.figure),
            "recurring": crossing.recurring,
            "passed_thresholds": crossing.passed,
            "last_arrived_at": fig.last_arrived_at.isoformat() if fig.last_arrived_at else None,
            "figure_updated_at": fig.updated_at.isoformat() if fig.updated_at else None,
        }
        enqueue(
            conn,
            org_id=rule.org_id,
            type_=NotificationType.THRESHOLD_REACHED,
            subject=fig.account_id,
            data=data,
            rule_id=rule.rule_id,
            notification_id=notification_id,
            time=row[0],
        )
        self.metrics.firings.inc()
        self.metrics.notifications.labels(NotificationType.THRESHOLD_REACHED.value).inc()
        return True
