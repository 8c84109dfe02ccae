"""When is a pipeline live again after a kill? Probes decide, and a lagging partition counts."""

from __future__ import annotations

from meterstream.bench import report
from meterstream.bench.freshness import Probe, live_again_at
from meterstream.bench.state import Recovery
from meterstream.bench.suite import BenchOptions, BenchResults

LIMIT = 2.0


def _probes(
    delays: list[float | None], start: float = 100.0
) -> tuple[list[tuple[str, float]], dict[str, Probe]]:
    """Probes sent every 0.5 s from `start`; a None delay: not visible yet."""
    sent: list[tuple[str, float]] = []
    seen: dict[str, Probe] = {}
    for i, delay in enumerate(delays):
        at = start + i * 0.5
        sent.append((f"p{i}", at))
        if delay is not None:
            seen[f"p{i}"] = Probe(f"p{i}", at, at, at + delay)
    return sent, seen


def test_live_again_at_the_first_probe_after_the_last_late_one() -> None:
    # Two partitions: the even probes' one drains first, the odd ones lag until p7.
    delays = [9.0, 8.0, 1.0, 7.0, 0.9, 3.0, 0.8, 2.5, 0.5, 0.4] + [0.3] * 30
    sent, seen = _probes(delays)
    assert live_again_at(sent, seen, since=99.0, limit_s=LIMIT, settle_s=5.0, now=120.0) == (
        100.0 + 8 * 0.5 + 0.5
    )


def test_a_probe_still_missing_after_the_limit_is_late() -> None:
    sent, seen = _probes([0.5, 0.5, None] + [0.4] * 30)  # p2 (sent at 101.0) never shows
    # Before p2 is late, p0 counts; once it is, only the probes after it do.
    assert live_again_at(sent, seen, since=99.0, limit_s=LIMIT, settle_s=1.0, now=102.5) == 100.5
    assert live_again_at(sent, seen, since=99.0, limit_s=LIMIT, settle_s=1.0, now=103.1) == 101.9


def test_not_known_until_the_probes_after_it_settled() -> None:
    sent, seen = _probes([9.0, 0.5, 0.5, 0.5])
    assert live_again_at(sent, seen, since=99.0, limit_s=LIMIT, settle_s=5.0, now=103.0) is None
    assert live_again_at(sent, seen, since=99.0, limit_s=LIMIT, settle_s=5.0, now=105.6) == 101.0


def test_only_probes_sent_after_the_kill_count() -> None:
    sent, seen = _probes([9.0, 9.0, 0.5, 0.5, 0.5])
    assert live_again_at(sent, seen, since=100.9, limit_s=LIMIT, settle_s=1.0, now=110.0) == 101.5


def _rows(recovery: Recovery | None, cluster: Recovery | None) -> dict[str, dict]:
    results = BenchResults(options=BenchOptions(parallelism=(1,)), run_id="x", machine={})
    results.recovery, results.cluster_recovery = recovery, cluster
    return {r["figure"]: r for r in report.headline(results) if r["figure"].startswith("4. rec")}


def test_recovery_rows_judge_live_again_not_the_first_fresh_probe() -> None:
    local = Recovery("chk-3", 14.0, 25.0, 2.0, 1000, live_again_s=44.0)
    cluster = Recovery("chk-9", 6.0, 20.0, 2.0, None, live_again_s=29.0, where="cluster")
    rows = _rows(local, cluster)
    assert [(r["measured"], r["met"]) for r in rows.values()] == [(44.0, False), (29.0, True)]


def test_a_recovery_not_measured_says_why_and_is_not_judged() -> None:
    rows = _rows(None, Recovery.not_measured("cluster", "a cluster already runs"))
    cluster = rows["4. recovery, cluster: TaskManager SIGKILL -> live again"]
    assert cluster["met"] is None
    assert "a cluster already runs" in cluster["note"]


def test_not_live_while_every_probe_is_late() -> None:
    sent, seen = _probes([9.0, 8.0, 7.0])
    assert live_again_at(sent, seen, since=99.0, limit_s=LIMIT, settle_s=1.0, now=120.0) is None
    assert live_again_at([], {}, since=99.0, limit_s=LIMIT, settle_s=1.0, now=120.0) is None
