"""Unit tests for meterstream.alerts.thresholds: which thresholds a figure newly reaches."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from meterstream.alerts.thresholds import Crossing, Thresholds

D = Decimal


def run(thresholds: Thresholds, figures: list[Decimal]) -> list[Crossing]:
    """Feed a figure's successive values; return every crossing, in order (the evaluator's loop)."""
    fired: set[Decimal] = set()
    out: list[Crossing] = []
    for figure in figures:
        for crossing in thresholds.crossed(figure, fired):
            fired.add(crossing.threshold)
            out.append(crossing)
    return out


def test_crossed_fixed_thresholds_fire_once_when_first_reached() -> None:
    t = Thresholds((D(10), D(20)))

    assert [c.threshold for c in run(t, [D(5), D(10), D(15), D(8), D(25), D(30)])] == [D(10), D(20)]


def test_crossed_reaching_exactly_counts() -> None:
    assert Thresholds((D("100.5"),)).crossed(D("100.5"), []) == [Crossing(D("100.5"))]


def test_crossed_recurring_steps_count_from_the_highest_fixed_threshold() -> None:
    t = Thresholds((D(10), D(20)), every=D(50))

    got = run(t, [D(69), D(70), D(119), D(121), D(300)])

    assert [(c.threshold, c.recurring, c.passed) for c in got] == [
        (D(10), False, 0),
        (D(20), False, 0),
        (D(70), True, 0),
        (D(120), True, 0),
        (D(270), True, 2),  # 170 and 220 jumped over
    ]


def test_crossed_recurring_without_fixed_thresholds_starts_at_zero() -> None:
    assert [c.threshold for c in run(Thresholds((), every=D(3)), [D(2), D(3), D(7)])] == [
        D(3),
        D(6),
    ]


def test_crossed_dip_and_rise_fires_nothing_again() -> None:
    t = Thresholds((D(10),), every=D(10))

    first = run(t, [D(35)])
    fired = {c.threshold for c in first}

    assert t.crossed(D(5), fired) == []
    assert t.crossed(D(35), fired) == []
    assert [c.threshold for c in t.crossed(D(41), fired)] == [D(40)]


def test_crossed_negative_figures_and_thresholds() -> None:
    # prepaid_balance (MIN) may be negative: "reaching" is always figure >= threshold.
    t = Thresholds((D(-100), D(0)))

    assert [c.threshold for c in run(t, [D(-500), D(-100), D(-1), D(3)])] == [D(-100), D(0)]


def test_lowered_lists_fired_thresholds_above_the_figure() -> None:
    t = Thresholds((D(10), D(20), D(30)))

    assert t.lowered(D(25), [D(10), D(20), D(30)]) == [D(30)]
    assert t.lowered(None, [D(10), D(20)]) == [D(10), D(20)]


amounts = st.integers(min_value=0, max_value=2_000).map(Decimal)


@given(
    fixed=st.sets(st.integers(min_value=1, max_value=1_000), max_size=6),
    every=st.none() | st.integers(min_value=1, max_value=300),
    figures=st.lists(amounts, max_size=40),
)
def test_property_each_threshold_fires_at_most_once_and_only_when_reached(
    fixed: set[int], every: int | None, figures: list[Decimal]
) -> None:
    t = Thresholds(tuple(D(f) for f in sorted(fixed)), D(every) if every else None)

    got = run(t, figures)
    fired = [c.threshold for c in got]

    assert len(fired) == len(set(fired))
    peak = max(figures, default=D(0))
    # Every fixed threshold the figure ever reached fired, and nothing above the peak did.
    assert {D(f) for f in fixed if D(f) <= peak} <= set(fired)
    assert all(f <= peak for f in fired)
    if every is not None:
        steps = [c for c in got if c.recurring]
        # Recurring steps rise strictly, and each says how many it jumped over.
        assert [c.threshold for c in steps] == sorted({c.threshold for c in steps})
        highest = max((c.threshold for c in steps), default=None)
        base = max((D(f) for f in fixed), default=D(0))
        if peak >= base + every:
            assert highest == base + int((peak - base) // every) * every
        assert sum(c.passed + 1 for c in steps) == (
            int((highest - base) // every) if highest is not None else 0
        )
