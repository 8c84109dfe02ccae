"""The standalone session cluster the e2e tests submit jobs to, started once for them all."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meterstream.config import Settings
from meterstream.stack import flink


@pytest.fixture(scope="package")
def cluster(stack: Settings) -> Iterator[Settings]:
    """A session cluster (one TaskManager, two slots) on the local stack; stopped at the end
    if this fixture started it."""
    started = flink.start(stack)
    yield stack
    if started:
        flink.stop(stack)
