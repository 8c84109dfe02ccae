"""The API's fast envelope check agrees with `events.parse_envelope` whenever it answers."""

from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from meterstream.api.envelope import accepted_ids, valid_time
from meterstream.events import Envelope, parse_envelope, parse_time
from meterstream.testing import LAST_MS_OF_MONTH, MALFORMED_KINDS, cloud_event, malformed

VALID = cloud_event("evt-1", "acct-1", "api_calls", LAST_MS_OF_MONTH, {"status": 200})
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.just(""),
    st.just("x" * 300),
    st.sampled_from(
        [
            "acct 1",
            "acct,1",
            "2026-10-31T23:59:59Z",
            "2026-10-31 23:59:59",
            "2026-13-31T23:59:59Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "schemas/api_calls/v2",
            "v0",
        ]
    ),
    st.text(max_size=12),
    st.dictionaries(st.text(max_size=4), st.integers(-5, 5), max_size=2),
    st.lists(st.integers(-5, 5), max_size=2),
)
FIELDS = st.sampled_from(["id", "source", "type", "subject", "time", "data", "dataschema", "x"])


def test_accepted_ids_accepts_a_valid_event() -> None:
    assert accepted_ids(dict(VALID)) == ("evt-1", "acct-1")


def test_accepted_ids_leaves_every_malformed_kind_to_parse_envelope() -> None:
    rng = random.Random(7)
    for kind in MALFORMED_KINDS:
        raw = malformed(kind, rng, "acct-1")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and accepted_ids(doc) is not None:
            assert isinstance(parse_envelope(raw), Envelope), kind


@settings(max_examples=1500, deadline=None)
@given(changes=st.dictionaries(FIELDS, ODD_VALUES, max_size=3), drop=st.sets(FIELDS, max_size=2))
def test_accepted_ids_answers_only_what_parse_envelope_accepts(
    changes: dict[str, Any], drop: set[str]
) -> None:
    doc = {k: v for k, v in {**VALID, **changes}.items() if k not in drop}
    raw = orjson.dumps(doc)
    ids = accepted_ids(orjson.loads(raw))
    envelope = parse_envelope(raw)

    if ids is not None:
        assert isinstance(envelope, Envelope)
        assert ids == (envelope.event_id, envelope.account_id)
    elif doc.get("dataschema") is None:
        assert not isinstance(envelope, Envelope)  # no valid event misses the fast path


def _any(*values: str) -> st.SearchStrategy[str]:
    return st.sampled_from(values)


# Few values per field, each at or past an edge, so that times share dates often.
TIMES = st.builds(
    "{}-{}-{}{}{}:{}:{}{}{}".format,
    _any("0001", "2024", "2026", "9999"),
    _any("00", "01", "02", "12", "13"),
    _any("00", "01", "28", "29", "30", "31", "32"),
    _any("T", "t", " "),
    _any("00", "01", "23", "24"),
    _any("00", "59", "60"),
    _any("00", "59", "60"),
    _any("", ".5", ".123456789", ".1234567890"),
    st.one_of(
        _any("Z", "z", ""),
        st.builds(
            "{}{}:{}".format, _any("+", "-"), _any("00", "01", "23", "24"), _any("00", "59", "60")
        ),
    ),
)


@settings(max_examples=3000, deadline=None)
@given(times=st.lists(TIMES, min_size=1, max_size=6))
@example(times=["0001-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00"])
@example(times=["9999-12-31T23:59:59Z", "9999-12-31T23:59:59-01:00"])
@example(times=["2026-10-31T23:59:59Z", "2026-10-31T24:00:00Z", "2026-10-31T23:59:60Z"])
def test_valid_time_is_parse_time_accepting(times: list[str]) -> None:
    # A list, so that a date remembered from one time answers for the next ones.
    for value in times:
        assert valid_time(value) == (parse_time(value) is not None), value
