"""The JVM fast path (`fast_check_event`) returns exactly the Python rules' row, or defers.

The Python rules (`meterstream.rules.validate`) are the one definition of validation. The JVM
function may only answer for events they accept without a warning, with the very same row
(quantity, dimensions, fingerprint, dedup key, ...); for every other record it returns NULL and
the workflow asks Python. One Flink job runs the JVM function over a corpus of realistic and
adversarial records; each answer is compared with the Python rules' row for the same input
(`meterstream.flink.embedded.checked_row`, what the job's `check_event` calls for the rest).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyflink.table import DataTypes

from meterstream.bench.generator import Workload, iter_records
from meterstream.config import Settings
from meterstream.flink.embedded import CHECKED_EVENT_FIELDS, checked_row
from meterstream.flink.env import create_table_env
from meterstream.flink.udfs import FAST_CHECK_EVENT_CLASS, fast_path_spec, register_check_event
from meterstream.meters.registry import MeterRegistry
from meterstream.rules.validate import Validator
from meterstream.stack.jars import ensure_jars
from meterstream.testing import PERIOD_START, generate, repeats
from tests.unit.samples import ARRIVED_AT, GOOD_DATA, LAST_MS_OF_OCT, event

pytestmark = pytest.mark.flink

Case = tuple[str, str, datetime]  # (what it is, payload, arrival)


def _realistic(registry: MeterRegistry) -> list[Case]:
    """The benchmark's workload and the test generator's: what production looks like."""
    start = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)
    bench = iter_records(Workload(records=6_000, seed=3, start=start), registry)
    cases = [
        (f"real-bench-{kind}", r.value.decode(), start + timedelta(minutes=1)) for kind, r in bench
    ]
    around = datetime(2026, 11, 1, tzinfo=UTC)
    cases += [
        ("real-generated", r.value.decode(), around + timedelta(hours=7))
        for r in generate(3_000, seed=11, around=around)
    ]
    return cases


def _dumps(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False)


def _data_variants(rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """Values whose text, type or size the JVM must read exactly as Python does."""
    floats = [0.0, -0.0, 1e-3, 9.99e-4, 1e7, 9999999.999, 1e16, 0.1 + 0.2, 123456.789, 5e-324]
    floats += [rng.choice([-1, 1]) * 10 ** rng.uniform(-6, 18) for _ in range(120)]
    ints = [0, 1, -1, 2**31 - 1, 2**31, -(2**31), 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**29]
    strings = ["plain", "é ü 中文", "emoji 😀", 'quote"d', "back\\slash", "tab\t", "nul\x00", ""]
    strings += ["\u2028 line sep", "\x7f del", "a" * 300]
    out: list[tuple[str, dict[str, Any]]] = []
    for value in floats + ints:
        out += [
            ("storage_gb_hours", {"gb_hours": value, "bucket": "logs"}),
            ("compute_peak_cores", {"cores": value, "region": "eu"}),
            ("prepaid_balance", {"balance_cents": value}),
            ("llm_tokens", {"tokens": value, "model": "small"}),
            ("active_users", {"user_id": value}),
        ]
    for text in strings:
        out += [
            ("llm_tokens", {"tokens": 3, "model": text}),
            ("active_users", {"user_id": text}),
            ("api_calls", {"endpoint": text, "status": 200}),
            ("storage_gb_hours", {"gb_hours": 1.5, "bucket": "logs", "note": text, text: 1}),
        ]
    for meter, data in GOOD_DATA.items():
        out += [
            (meter, {**data, "extra": {"nested": [1, 2.5, None, True, {"b": 1, "a": [{}]}]}}),
            (meter, {**data, "deep": json.loads("[" * 70 + "]" * 70)}),
            (meter, {k: None for k in data}),
            (meter, {}),
            (meter, {k: True for k in data}),
            (meter, {k: [v] for k, v in data.items()}),
            (meter, {**data, "z": 1, "A": 2, "_": 3, "é": 4}),
        ]
    out += [("active_users", {"user_id": True}), ("active_users", {"user_id": 12.5})]
    return out


def _envelope_variants() -> list[tuple[str, dict[str, Any]]]:
    """Envelope fields at and beyond the edges of what the rules accept."""
    times = [
        "2026-10-31T23:59:59Z",
        "2026-10-31t23:59:59z",
        "2026-10-31T23:59:59.1Z",
        "2026-10-31T23:59:59.123456789Z",
        "2026-10-31T23:59:59.9999995+00:00",
        "2026-11-01T05:29:59.5+05:30",
        "2026-10-31T19:59:59-04:00",
        "2026-10-31T23:59:59-00:00",
        "2026-10-31T23:59:59+24:00",
        "2026-10-31T23:59:60Z",
        "2026-10-31T24:00:00Z",
        "2026-02-30T10:00:00Z",
        "2026-10-31 23:59:59Z",
        "2026-10-31T23:59:59",
        "2026-11-02T12:05:00Z",
        "2026-11-02T12:05:00.000001Z",
        "2026-09-28T12:00:00Z",
        "2026-09-28T11:59:59.999999Z",
        "0000-01-01T00:00:00Z",
        "2026-10-31T23:59:59.1234567891Z",
        "2026-10-31T23:59:59.Z",
        "2026-10-31T23:59:59+0530",
        "2026-10-31T23:59:59+05:3",
        "2026-10-31T23:59:59+05:30:00",
        "2026-10-31T23:59:59Zz",
        "\uff12026-10-31T23:59:59Z",
        "2026-1a-31T23:59:59Z",
    ]
    schemas = [None, "schemas/llm_tokens/v1", "schemas/llm_tokens/v2", "v2", "x:v2.avsc"]
    schemas += ["schemas/llm_tokens/v3", "v0", "v2x", "", 2, "v1234567"]
    out: list[tuple[str, dict[str, Any]]] = [("time", {"time": t}) for t in times]
    out += [("dataschema", {"dataschema": s}) for s in schemas]
    subjects = ["a", "a" * 128, "a" * 129, "-a", "a b", "é", "0a:b@c.d_e-f", "a/b"]
    out += [("subject", {"subject": s}) for s in subjects]
    out += [("id", {"id": i}) for i in ["x" * 256, "x" * 257, "", 5, "id with spaces"]]
    out += [("type", {"type": t}) for t in ["no_such_meter", "", None, 3]]
    out += [("source", {"source": s}) for s in ["", None, ["a"]]]
    out += [("data", {"data": d}) for d in [None, [], "x", 1]]
    return out


def _adversarial(rng: random.Random) -> list[Case]:
    cases: list[Case] = []
    for meter, data in _data_variants(rng):
        cases.append((f"data-{meter}", _dumps(event(meter, data)), ARRIVED_AT))
    for what, fields in _envelope_variants():
        meter = "llm_tokens" if "dataschema" in fields else "api_calls"
        cases.append((f"envelope-{what}", _dumps(event(meter, **fields)), ARRIVED_AT))
    good = _dumps(event("api_calls"))
    for text in [
        good + " ",
        good + " x",
        "\ufeff" + good,
        good.replace('"id"', '"id":"a","id"', 1),
        good.replace('"data": {', '"data": {"status": 1, ', 1),
        good.replace('"acct-42"', '"acct-\\ud800"', 1),
        good.replace("200", "0200", 1),
        good.replace("200", "2e2", 1),
        "[" + good + "]",
        "",
        "null",
        '{"a": NaN}',
    ]:
        cases.append(("raw", text, ARRIVED_AT))
    for skew in (timedelta(minutes=5), timedelta(minutes=5, microseconds=1), timedelta(days=-35)):
        cases.append(("window", _dumps(event("api_calls", moment=ARRIVED_AT + skew)), ARRIVED_AT))
    cases.append(("window", _dumps(event("api_calls", moment=LAST_MS_OF_OCT)), LAST_MS_OF_OCT))
    return cases


def _repeats() -> list[Case]:
    """The first-arrival tests' records, labelled with the path each is meant to take."""
    arrived = PERIOD_START + timedelta(hours=1)
    return [
        (f"path-{path}", record.value.decode(), arrived)
        for repeat in repeats("fp")
        for record, path in zip((repeat.first, repeat.later), repeat.paths, strict=True)
    ]


def _rows(
    settings: Settings, registry: MeterRegistry, cases: list[Case], tmp: Path, function: str
) -> list[Any]:
    """Run `function` (`fast_check_event` or `check_event`) over the cases in one Flink job;
    rows in case order, None where it returned NULL."""
    t_env = create_table_env(settings, job_name="fast-path-test", checkpoint_dir=tmp)
    t_env.create_java_temporary_system_function("fast_check_event", FAST_CHECK_EVENT_CLASS)
    register_check_event(t_env, registry, fast_path=True)
    rows = [
        (i, text, int(arrived.timestamp() * 1000)) for i, (_, text, arrived) in enumerate(cases)
    ]
    source = t_env.from_elements(
        rows,
        DataTypes.ROW(
            [
                DataTypes.FIELD("i", DataTypes.INT()),
                DataTypes.FIELD("payload", DataTypes.STRING()),
                DataTypes.FIELD("arrived_ms", DataTypes.BIGINT()),
            ]
        ),
    )
    t_env.create_temporary_view("cases", source)
    spec = fast_path_spec(registry).replace("'", "''")
    extra = f", '{spec}'" if function == "fast_check_event" else ""
    # Flat columns: PyFlink's collect() cannot read NULL fields nested in a ROW.
    fields = ", ".join(f"c.{name}" for name in CHECKED_EVENT_FIELDS)
    result = t_env.execute_sql(
        f"SELECT i, c IS NULL, {fields} FROM (SELECT i, {function}(payload, 'topic', 3, "
        f"CAST(i AS BIGINT), TO_TIMESTAMP_LTZ(arrived_ms, 3){extra}) AS c FROM cases)"
    )
    out: list[Any] = [None] * len(cases)
    with result.collect() as results:
        for row in results:
            out[row[0]] = None if row[1] else tuple(row[2:])
    return out


def _python_row(
    validator: Validator, payload: str, index: int, arrived: datetime
) -> tuple[Any, ...]:
    # The JVM sees the arrival to the millisecond, as Kafka stamps it.
    millis = arrived.astimezone(UTC).replace(microsecond=arrived.microsecond // 1000 * 1000)
    return checked_row(validator, payload, millis, topic="topic", partition=3, offset=index)


@pytest.fixture(scope="module")
def cases(settings: Settings, registry: MeterRegistry) -> list[Case]:
    ensure_jars(settings)
    return _realistic(registry) + _adversarial(random.Random(5)) + _repeats()


@pytest.fixture(scope="module")
def outcomes(
    settings: Settings,
    registry: MeterRegistry,
    cases: list[Case],
    tmp_path_factory,  # noqa: ANN001
) -> list[tuple]:
    """(what, JVM row or None, Python row) per case."""
    jvm = _rows(settings, registry, cases, tmp_path_factory.mktemp("ckpt"), "fast_check_event")
    validator = Validator(registry)
    return [
        (what, jvm[i], _python_row(validator, payload, i, arrived))
        for i, (what, payload, arrived) in enumerate(cases)
    ]


def test_check_event_gives_every_record_the_python_rules_row_whichever_path_decides(
    settings: Settings,
    registry: MeterRegistry,
    cases: list[Case],
    outcomes: list[tuple],
    tmp_path: Path,
) -> None:
    # The job's function: the fast path where it answers, the Python rules called in place
    # (through pemja) for every other record, rejections and warnings included.
    rows = _rows(settings, registry, cases, tmp_path, "check_event")
    mismatches = [(what, row, py) for row, (what, _, py) in zip(rows, outcomes, strict=True)
                  if row != py]  # fmt: skip
    assert mismatches == []
    assert sum(jvm is None for _, jvm, _ in outcomes) > 100  # many went to Python


def test_every_jvm_answer_is_the_python_row(outcomes: list[tuple]) -> None:
    answered = [(what, jvm, py) for what, jvm, py in outcomes if jvm is not None]
    assert answered
    mismatches = [(what, jvm, py) for what, jvm, py in answered if jvm != py]
    assert mismatches == []


def test_the_jvm_answers_only_for_accepted_events_without_a_warning(outcomes: list[tuple]) -> None:
    for what, jvm, py in outcomes:
        if jvm is not None:
            assert py[0] is None, what
            assert py[2] is None, what


def test_the_jvm_answers_for_nearly_every_accepted_event_of_the_realistic_workloads(
    outcomes: list[tuple],
) -> None:
    realistic = [(jvm, py) for what, jvm, py in outcomes if what.startswith("real")]
    accepted = [(jvm, py) for jvm, py in realistic if py[0] is None and py[2] is None]
    answered = sum(jvm is not None for jvm, _ in accepted)
    assert len(accepted) > 8_000
    assert answered / len(accepted) >= 0.99


def test_the_adversarial_corpus_exercises_both_answers(outcomes: list[tuple]) -> None:
    adversarial = [(jvm, py) for what, jvm, py in outcomes if what.startswith(("data", "env"))]
    assert sum(jvm is not None for jvm, _ in adversarial) > 100
    assert sum(jvm is None and py[0] is None for jvm, py in adversarial) > 10
    assert sum(py[0] is not None for _, py in adversarial) > 100


def test_the_first_arrival_tests_records_take_the_paths_they_are_labelled_with(
    outcomes: list[tuple],
) -> None:
    # tests/integration/test_first_arrival.py relies on these labels.
    labelled = [(what, jvm, py) for what, jvm, py in outcomes if what.startswith("path-")]
    assert {what for what, _, _ in labelled} == {"path-jvm", "path-python"}
    for what, jvm, py in labelled:
        assert py[0] is None, py  # accepted
        assert (jvm is not None) == (what == "path-jvm"), (what, py)
