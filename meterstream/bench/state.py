"""State: dedup bytes per key, checkpoint size and duration, and recovery after a SIGKILL.

Sizes come from Flink's own checkpoint statistics (REST `/jobs/<id>/checkpoints`): per vertex,
`state_size` is the full state a checkpoint references (for incremental RocksDB checkpoints,
all the SST files it needs), `checkpointed_size` what that checkpoint uploaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meterstream.bench.flinkjob import JobRun

#: Vertex-name fragments of the operator that keeps one entry per (account, idempotency key).
#: The keyed operator (`dedup_and_figures`) keeps the figures and unique values in the same
#: vertex: its bytes per key are an upper bound of the dedup's.
DEDUP_OPERATORS = ("dedup_and_figures", "Deduplicate", "OverAggregate", "Rank")
AGGREGATE_OPERATORS = ("GlobalGroupAggregate", "GroupAggregate")


@dataclass(frozen=True, slots=True)
class StateFigures:
    """State after the backlog of distinct ids was processed, and checkpoints in steady state."""

    distinct_ids: int
    dedup_vertex: str | None
    dedup_state_bytes: int | None
    aggregate_state_bytes: int | None
    total_state_bytes: int | None
    checkpoint_id: int | None
    checkpoint_duration_ms: int | None
    steady_checkpoints: int
    steady_duration_p50_ms: float | None
    steady_duration_max_ms: float | None
    steady_checkpointed_bytes_avg: float | None
    steady_state_bytes: int | None
    steady_not_completed: int = 0

    @property
    def dedup_bytes_per_key(self) -> float | None:
        """Dedup state divided by the distinct ids it remembers."""
        if self.dedup_state_bytes is None or not self.distinct_ids:
            return None
        return self.dedup_state_bytes / self.distinct_ids


def _vertex_state(details: dict[str, Any], run: JobRun, names: tuple[str, ...]) -> tuple[str, int]:
    by_id = {v["id"]: v["name"] for v in run.vertices}
    for vertex_id, stats in (details.get("tasks") or {}).items():
        name = by_id.get(vertex_id, "")
        if any(fragment in name for fragment in names):
            return name, int(stats.get("state_size") or 0)
    return "", 0


def state_after_backlog(run: JobRun, distinct_ids: int) -> StateFigures:
    """Read the latest completed checkpoint's per-vertex sizes (taken after the backlog)."""
    details = run.checkpoint_details or {}
    dedup_name, dedup = _vertex_state(details, run, DEDUP_OPERATORS)
    _, aggregate = _vertex_state(details, run, AGGREGATE_OPERATORS)
    return StateFigures(
        distinct_ids=distinct_ids,
        dedup_vertex=dedup_name or None,
        dedup_state_bytes=dedup if dedup_name else None,
        aggregate_state_bytes=aggregate or None,
        total_state_bytes=details.get("state_size"),
        checkpoint_id=details.get("id"),
        checkpoint_duration_ms=details.get("end_to_end_duration"),
        steady_checkpoints=0,
        steady_duration_p50_ms=None,
        steady_duration_max_ms=None,
        steady_checkpointed_bytes_avg=None,
        steady_state_bytes=None,
    )


def with_steady_checkpoints(figures: StateFigures, history: list[dict[str, Any]]) -> StateFigures:
    """Add the checkpoints completed while the job ran at the fixed rate."""
    completed = [c for c in history if c.get("status") == "COMPLETED"]
    durations = sorted(float(c["end_to_end_duration"]) for c in completed)
    uploaded = [float(c.get("checkpointed_size") or 0) for c in completed]
    return StateFigures(
        **{
            **{f: getattr(figures, f) for f in figures.__dataclass_fields__},
            "steady_checkpoints": len(completed),
            "steady_duration_p50_ms": durations[len(durations) // 2] if durations else None,
            "steady_duration_max_ms": durations[-1] if durations else None,
            "steady_checkpointed_bytes_avg": sum(uploaded) / len(uploaded) if uploaded else None,
            "steady_state_bytes": completed[-1].get("state_size") if completed else None,
            "steady_not_completed": len(history) - len(completed),
        }
    )


def checkpoint_history(run: JobRun, since_ms: float, until_ms: float) -> list[dict[str, Any]]:
    """Completed checkpoints triggered within [since, until] (from the job's REST history)."""
    stats = run.rest(f"/jobs/{run.job_id}/checkpoints") if run.job_id else None
    history = (stats or run.checkpoints or {}).get("history") or []
    return [c for c in history if since_ms <= c.get("trigger_timestamp", 0) <= until_ms]


def seconds(value: float | None) -> str:
    """A duration for the report, or "?" when it was not measured.

    >>> seconds(12.345), seconds(None)
    ('12.3', '?')
    """
    return "?" if value is None else f"{value:.1f}"


@dataclass(frozen=True, slots=True)
class Recovery:
    """A SIGKILL under a fixed input rate, and the restart from the last checkpoint.

    Attributes:
        restored_checkpoint: the checkpoint the restarted job resumed from.
        to_running_s: kill -> the restarted job is RUNNING (local: JVM start, submission,
            restore; cluster: failure detected, tasks deployed on a TaskManager).
        to_caught_up_s: kill -> the first probe that arrived after the kill and was visible
            in PostgreSQL within `fresh_s`, or the restored job's lag back to `lag_before_kill`;
            None if not within `waited_s`. Lenient: one partition may still lag.
        max_lag: the most records waiting in Kafka after the restart.
        lag_before_kill: records waiting in Kafka just before the kill.
        waited_s: how long the bench waited for the job to catch up.
        live_again_s: kill -> live again for good (`freshness.live_again_at`): from then on
            every probe was visible within `fresh_s`. The figure judged against the target.
        where: "local" (the job's own process killed) or "cluster" (its TaskManager killed).
        detail: how it was done, or why it was not measured.
        measured: False when the bench could not measure it (`detail` says why).
    """

    restored_checkpoint: str | None
    to_running_s: float | None
    to_caught_up_s: float | None
    fresh_s: float
    max_lag: int | None
    lag_before_kill: int | None = None
    waited_s: float | None = None
    live_again_s: float | None = None
    where: str = "local"
    detail: str = ""
    measured: bool = True

    @classmethod
    def not_measured(cls, where: str, why: str) -> Recovery:
        """A recovery that could not be measured, and why."""
        return cls(None, None, None, 0.0, None, where=where, detail=why, measured=False)
