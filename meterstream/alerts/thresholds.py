"""Which thresholds of a usage rule a period's figure has newly reached (pure).

A rule has fixed thresholds and, optionally, a recurring step above the highest of them: with
`[1000, 5000]` every `10000`, it fires at 1000, 5000, 15000, 25000, ... Each fires once per
(rule, account, period) when the figure first reaches it (figure >= threshold). A figure that
jumps over several recurring steps at once fires the highest one only, naming how many it
passed, so that one large correction never floods an endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Crossing:
    """A threshold reached for the first time.

    Attributes:
        threshold: the threshold, in the meter's unit.
        recurring: whether it is a recurring step (not one of the fixed thresholds).
        passed: recurring steps below it that were jumped over without firing.
    """

    threshold: Decimal
    recurring: bool = False
    passed: int = 0


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A rule's thresholds: fixed ones, then every `every` above the highest (if set)."""

    fixed: tuple[Decimal, ...]
    every: Decimal | None = None

    @property
    def base(self) -> Decimal:
        """Where the recurring steps start counting (the highest fixed threshold, else 0)."""
        return max(self.fixed) if self.fixed else Decimal(0)

    def crossed(self, figure: Decimal | None, fired: Iterable[Decimal]) -> list[Crossing]:
        """The thresholds `figure` reaches that have not fired yet, lowest first.

        >>> t = Thresholds((Decimal(100), Decimal(500)), every=Decimal(1000))
        >>> [str(c.threshold) for c in t.crossed(Decimal(120), [])]
        ['100']
        >>> [str(c.threshold) for c in t.crossed(Decimal(600), [Decimal(100)])]
        ['500']
        >>> t.crossed(Decimal(3600), [Decimal(100), Decimal(500), Decimal(1500)])
        [Crossing(threshold=Decimal('3500'), recurring=True, passed=1)]
        >>> t.crossed(None, [])
        []
        """
        if figure is None:
            return []
        done = set(fired)
        out = [Crossing(t) for t in sorted(set(self.fixed)) if t <= figure and t not in done]
        if self.every is not None and self.every > 0 and figure >= self.base + self.every:
            reached = int((figure - self.base) // self.every)
            done_steps = [
                int((t - self.base) // self.every) for t in done if t > self.base and t not in out
            ]
            last = max(done_steps, default=0)
            if reached > last:
                out.append(
                    Crossing(
                        self.base + reached * self.every, recurring=True, passed=reached - last - 1
                    )
                )
        return out

    def lowered(self, figure: Decimal | None, fired: Iterable[Decimal]) -> list[Decimal]:
        """The fired thresholds that `figure` is now below (None: the figure is gone).

        >>> Thresholds((Decimal(10), Decimal(20))).lowered(Decimal(15), [Decimal(10), Decimal(20)])
        [Decimal('20')]
        """
        return sorted(t for t in fired if figure is None or figure < t)
