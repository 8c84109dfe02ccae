"""The first arrival of a key counts, on every path; the stream and a recalculation agree.

Among the arrivals of one (account, idempotency key), the one first in its Kafka partition is
counted and every later one with other content is logged once as DUPLICATE_ID_CONFLICT, whatever
path (JVM fast path or Python rules) checked each of them. The oracle reads the records as Kafka
holds them, in (partition, offset) order, arriving when the broker stamped them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from meterstream.config import Settings
from meterstream.kafka_io import produce
from meterstream.recalc import RecalcScope, recalculate
from meterstream.rules.oracle import Expected
from meterstream.rules.reasons import ReasonCode
from meterstream.rules.validate import Validator, ValidEvent
from meterstream.stack.flink import settings_env
from meterstream.testing import Repeat, adversarial, repeats
from tests.pipeline_helpers import (
    Arrival,
    consume_arrivals,
    expected_log,
    isolated_database,
    job_options,
    logged,
    oracle_of_arrivals,
    run_bounded_job,
    run_restored_until,
    run_then_kill,
    set_time_zones,
    totals_in_postgres,
)

pytestmark = [pytest.mark.integration, pytest.mark.flink]

CONFLICT = ReasonCode.DUPLICATE_ID_CONFLICT.value


def stamps_per_key(validator: Validator, arrivals: list[Arrival], prefix: str) -> list[list[int]]:
    """The broker timestamps of each (account, idempotency key) of the accounts of `prefix`."""
    stamps: dict[tuple[str, str], list[int]] = defaultdict(list)
    for arrival in arrivals:
        result = validator.validate(arrival.value, arrival.arrived_at)
        if isinstance(result, ValidEvent) and result.account_id.startswith(prefix):
            stamps[(result.account_id, result.dedup_key)].append(arrival.timestamp_ms)
    return list(stamps.values())


def conflicts(pairs: list[Repeat]) -> int:
    return sum(pair.conflict for pair in pairs)


def assert_as_the_oracle(
    settings: Settings,
    validator: Validator,
    topic: str,
    prefix: str,
    arrivals: list[Arrival],
    **oracle: object,
) -> Expected:
    """The figures and the validation log are the oracle's; returns the oracle's outcome."""
    expected = oracle_of_arrivals(settings, validator, arrivals, **oracle)
    assert totals_in_postgres(settings, prefix) == expected.totals
    assert logged(settings, topic) == expected_log(arrivals, expected.rejections)
    assert logged(settings, topic, "warning") == expected_log(arrivals, expected.warnings)
    return expected


def test_the_first_arrival_counts_whichever_path_checks_each_arrival_at_any_gap(
    stack: Settings,
    topics: tuple[str, str],
    job_dir: Path,
    unique: str,
    validator: Validator,
) -> None:
    prefix = f"fa-{unique}"
    together, apart = repeats(f"{prefix}-together"), repeats(f"{prefix}-apart")
    # Each pair back to back (most share the broker's millisecond) ...
    produce(stack, topics[0], [r for pair in together for r in (pair.first, pair.later)])
    # ... and the later arrivals 2 s after all the first ones.
    produce(stack, topics[0], [pair.first for pair in apart])
    time.sleep(2)
    produce(stack, topics[0], [pair.later for pair in apart])

    run_bounded_job(job_options(topics, job_dir, f"fa-{unique}", bounded=True), job_dir / "job.log")

    arrivals = consume_arrivals(stack, topics[0])
    expected = oracle_of_arrivals(stack, validator, arrivals)
    assert [code for _, code in expected.rejections] == [CONFLICT] * conflicts(together + apart)
    same_ms = stamps_per_key(validator, arrivals, f"{prefix}-together")
    assert any(len(set(s)) == 1 for s in same_ms), "no pair shared a millisecond"
    gaps = stamps_per_key(validator, arrivals, f"{prefix}-apart")
    assert all(s[1] - s[0] >= 2000 for s in gaps)  # noqa: PLR2004 - the 2 s slept
    assert_as_the_oracle(stack, validator, topics[0], prefix, arrivals)


def test_the_first_arrival_counts_when_the_job_restarts_between_the_two_arrivals(
    stack: Settings,
    topics: tuple[str, str],
    job_dir: Path,
    unique: str,
    validator: Validator,
) -> None:
    prefix = f"far-{unique}"
    pairs = repeats(prefix)
    produce(stack, topics[0], [pair.first for pair in pairs])
    options = job_options(
        topics, job_dir, f"far-{unique}", env={"METERSTREAM_FLINK_CHECKPOINT_INTERVAL_MS": "1000"}
    )
    log = job_dir / "job.log"
    firsts = oracle_of_arrivals(stack, validator, consume_arrivals(stack, topics[0]))
    checkpoint = run_then_kill(
        options,
        log,
        lambda: totals_in_postgres(stack, prefix) == firsts.totals,
        "the first arrivals' figures",
    )

    produce(stack, topics[0], [pair.later for pair in pairs])
    run_restored_until(
        replace(options, job_name=f"far-{unique}-restored", restore_from=str(checkpoint)),
        log,
        lambda: len(logged(stack, topics[0])) >= conflicts(pairs),
        f"{conflicts(pairs)} conflicts logged after the restart",
    )

    arrivals = consume_arrivals(stack, topics[0])
    assert len(arrivals) == 2 * len(pairs)
    assert_as_the_oracle(stack, validator, topics[0], prefix, arrivals)


def test_the_stream_and_a_recalculation_agree_row_for_row_on_an_adversarial_stream(
    stack: Settings,
    topics: tuple[str, str],
    tmp_path: Path,
    unique: str,
    validator: Validator,
) -> None:
    prefix = f"adv-{unique}"
    records, zones = adversarial(22_000, account_prefix=prefix)
    with isolated_database(stack) as settings:
        set_time_zones(settings, zones)
        produce(settings, topics[0], records)
        archive = tmp_path / "archive"
        run_bounded_job(
            job_options(
                topics,
                tmp_path / "checkpoints",
                f"adv-{unique}",
                bounded=True,
                env={**settings_env(settings), "METERSTREAM_FLINK_ARCHIVE_DIR": str(archive)},
            ),
            tmp_path / "job.log",
        )

        arrivals = consume_arrivals(settings, topics[0])
        assert len(arrivals) == len(records)
        expected = assert_as_the_oracle(
            settings, validator, topics[0], prefix, arrivals, time_zones=zones
        )
        assert not expected.late
        assert sum(code == CONFLICT for _, code in expected.rejections) > 500  # noqa: PLR2004

        periods = sorted({period for _, _, period, _ in expected.totals})
        assert len(periods) == 2  # noqa: PLR2004 - both sides of the month boundary
        for period in periods:
            result = recalculate(
                settings,
                RecalcScope(period),
                archive_dir=archive,
                reason="differential test",
                dry_run=True,
            )
            assert result.changes == [], f"{period}: the recalculation differs from the stream"
        print(
            f"{len(records)} records, {len(expected.totals)} figures, "
            f"{len(expected.rejections)} rejections in {len(periods)} periods: "
            "stream == oracle == recalculation"
        )
