"""Unit tests for meterstream.api.parsing and the request parser of meterstream.api.ingest."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterstream.api.errors import ApiError
from meterstream.api.ingest import check_envelopes, check_request, split_request
from meterstream.api.parsing import (
    ArraySplitter,
    JsonlSplitter,
    Piece,
    split_batch,
    split_objects,
)
from meterstream.config import ApiSettings
from meterstream.rules.reasons import ReasonCode, Rejection

API = ApiSettings()
EVENTS = [
    {"id": f"e{i}", "subject": "acct-é", "data": {"n": i, "s": "ü" * i}, "x": [1, 2.5, None]}
    for i in range(20)
]


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def run(splitter: JsonlSplitter | ArraySplitter, chunks: list[bytes]) -> list[Piece]:
    pieces: list[Piece] = []
    for chunk in chunks:
        pieces += splitter.feed(chunk)
    pieces += splitter.finish()
    return pieces


# --- JSON Lines ------------------------------------------------------------------------------


def test_jsonl_splitter_pieces_are_exact_lines_with_offsets() -> None:
    data = b'{"a":1}\r\n\n  \n{"b": 2}\n{"c":3}'
    pieces = run(JsonlSplitter(100), [data])

    assert [p.raw for p in pieces] == [b'{"a":1}', b'{"b": 2}', b'{"c":3}']
    assert [data[p.start : p.start + len(p.raw)] for p in pieces] == [p.raw for p in pieces]
    assert pieces[-1].end == len(data)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 300))
def test_jsonl_splitter_any_chunking_gives_the_same_pieces(size: int) -> None:
    data = b"\n".join(json.dumps(e, ensure_ascii=False).encode() for e in EVENTS) + b"\n"

    assert run(JsonlSplitter(1000), chunked(data, size)) == run(JsonlSplitter(1000), [data])


def test_jsonl_splitter_over_long_line_is_one_too_large_piece() -> None:
    data = b'{"a":1}\n' + b"x" * 5000 + b'\n{"b":2}\n'
    pieces = run(JsonlSplitter(100), chunked(data, 64))

    assert [p.too_large for p in pieces] == [False, True, False]
    assert pieces[1].start == 8
    assert pieces[1].end == 8 + 5001
    assert pieces[2].raw == b'{"b":2}'


def test_jsonl_splitter_safe_offset_stops_before_a_partial_line() -> None:
    splitter = JsonlSplitter(100)
    list(splitter.feed(b'{"a":1}\n{"b"'))

    assert splitter.safe_offset == 8


def test_jsonl_splitter_resumed_at_offset_reports_file_offsets() -> None:
    pieces = run(JsonlSplitter(100, offset=1000), [b'{"a":1}\n{"b":2}\n'])

    assert [(p.start, p.end) for p in pieces] == [(1000, 1008), (1008, 1016)]


# --- JSON arrays -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 300))
def test_array_splitter_any_chunking_gives_exact_elements(size: int) -> None:
    elements = [json.dumps(e, ensure_ascii=False, indent=1).encode() for e in EVENTS]
    data = b" [\n" + b" ,\n".join(elements) + b"\n]\n"

    pieces = run(ArraySplitter(10_000), chunked(data, size))

    assert [p.raw for p in pieces] == elements
    assert [data[p.start : p.end] for p in pieces] == elements


def test_array_splitter_resume_after_an_element_continues_the_array() -> None:
    data = b'[{"a":1},{"b":2},{"c":3}]'
    first = ArraySplitter(100)
    list(first.feed(data[:12]))
    offset = first.safe_offset

    rest = run(ArraySplitter(100, offset=offset), [data[offset:]])

    assert offset == 8
    assert [p.raw for p in rest] == [b'{"b":2}', b'{"c":3}']


def test_array_splitter_unclosed_array_is_an_error_at_the_end() -> None:
    splitter = ArraySplitter(100)
    pieces = run(splitter, [b'[{"a":1},'])

    assert [p.raw for p in pieces] == [b'{"a":1}']
    assert splitter.error is not None


def test_array_splitter_garbage_between_elements_is_an_error() -> None:
    splitter = ArraySplitter(100)
    run(splitter, [b'[{"a":1} x {"b":2}]'])

    assert splitter.error is not None
    assert "expected" in splitter.error.detail


def test_array_splitter_broken_element_fails_within_the_size_bound() -> None:
    splitter = ArraySplitter(100)
    for _ in range(10):
        list(splitter.feed(b'[{"a": "' + b"x" * 100))

    assert splitter.error is not None


def test_split_batch_empty_array_has_no_pieces() -> None:
    assert split_batch(b" [ ] ", 100) == []


# --- the request parser ----------------------------------------------------------------------


def test_split_request_plain_json_object_is_one_event() -> None:
    pieces = split_request("application/json", b'{"id": "x"}', API)

    assert [p.raw for p in pieces] == [b'{"id": "x"}']


def test_split_request_unknown_media_type_is_415() -> None:
    try:
        split_request("text/plain", b"{}", API)
    except ApiError as exc:
        assert exc.status == 415
    else:
        raise AssertionError


def test_split_request_too_many_events_is_413() -> None:
    body = json.dumps([{}] * (API.max_events_per_request + 1)).encode()
    try:
        split_request("application/cloudevents-batch+json", body, API)
    except ApiError as exc:
        assert exc.status == 413
    else:
        raise AssertionError


def test_check_envelopes_too_large_single_event_is_event_too_large() -> None:
    body = b'{"id": "' + b"x" * API.max_event_bytes + b'"}'
    [checked] = check_envelopes(split_request("application/cloudevents+json", body, API))

    assert isinstance(checked.result, Rejection)
    assert checked.result.code is ReasonCode.EVENT_TOO_LARGE


CONTENT_TYPES = st.sampled_from(
    [
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/json",
        "application/json; charset=utf-8",
        "",
        "text/plain",
    ]
)


@settings(max_examples=400, deadline=None)
@given(content_type=CONTENT_TYPES, body=st.binary(max_size=2000))
def test_split_request_arbitrary_bytes_give_pieces_or_api_error(
    content_type: str, body: bytes
) -> None:
    try:
        pieces = split_request(content_type, body, API)
    except ApiError as exc:
        assert 400 <= exc.status < 500
        return
    for checked in check_envelopes(pieces):
        assert checked.result is not None


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(JSON_VALUES, max_size=8), cut=st.integers(0, 10_000))
def test_split_request_arbitrary_json_batches_and_their_prefixes_never_crash(
    values: list[object], cut: int
) -> None:
    body = json.dumps(values).encode()
    for candidate in (body, body[:cut]):
        try:
            pieces = split_request("application/cloudevents-batch+json", candidate, API)
        except ApiError as exc:
            assert exc.status in (400, 413)
            continue
        check_envelopes(pieces)


# --- the fast path for batches of objects -------------------------------------------------------

TRICKY_TEXT = st.text(alphabet='{},[] \n"\\ab', max_size=10)
OBJECTS = st.dictionaries(
    TRICKY_TEXT,
    st.recursive(
        st.none() | st.integers(-5, 5) | TRICKY_TEXT,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(TRICKY_TEXT, children, max_size=3)
        ),
        max_leaves=10,
    ),
    max_size=4,
)
SEPARATORS = st.sampled_from([",", ", ", " ,\n", "\t,\r\n "])


@settings(max_examples=500, deadline=None)
@given(
    values=st.lists(OBJECTS | JSON_VALUES, max_size=6),
    sep=SEPARATORS,
    pad=st.sampled_from(["", " ", "\n "]),
    cut=st.integers(0, 400),
    max_bytes=st.integers(5, 300),
)
def test_split_objects_agrees_with_split_batch_whenever_it_answers(
    values: list[object], sep: str, pad: str, cut: int, max_bytes: int
) -> None:
    body = f"{pad}[{pad}{sep.join(json.dumps(v) for v in values)}{pad}]{pad}".encode()
    for candidate in (body, body[:cut]):
        fast = split_objects(candidate, max_bytes)
        if fast is None:
            continue
        pieces = split_batch(candidate, max_bytes)
        assert isinstance(pieces, list)
        assert fast[0] == [p.raw for p in pieces]
        assert fast[1] == [json.loads(p.raw) for p in pieces]


@settings(max_examples=200, deadline=None)
@given(values=st.lists(OBJECTS, min_size=1, max_size=6), sep=SEPARATORS)
def test_split_objects_takes_every_array_of_small_objects(values: list[object], sep: str) -> None:
    assert split_objects(f"[{sep.join(json.dumps(v) for v in values)}]".encode(), 10_000)


EVENT_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["e1", "", 7, "x" * 300]),
        "source": st.sampled_from(["gw", ""]),
        "type": st.sampled_from(["api_calls", None]),
        "subject": st.sampled_from(["acct-1", "acct 2", "é"]),
        "time": st.sampled_from(["2026-10-31T23:59:59.250Z", "2026-10-31", "2026-10-31T23:59:59"]),
        "data": st.sampled_from([{"status": 200}, [], None]),
        "dataschema": st.sampled_from(["schemas/api_calls/v1", "latest", None]),
    },
)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(EVENT_FIELDS | JSON_VALUES, max_size=8))
def test_check_request_gives_what_the_general_path_gives(events: list[object]) -> None:
    body = json.dumps(events).encode()
    for content_type in ("application/cloudevents-batch+json", "application/json"):
        try:
            expected = check_envelopes(split_request(content_type, body, API))
        except ApiError as exc:
            with pytest.raises(ApiError) as raised:
                check_request(content_type, body, API)
            assert (raised.value.status, raised.value.detail) == (exc.status, exc.detail)
            continue
        assert check_request(content_type, body, API) == expected


def test_split_objects_leaves_a_body_full_of_false_boundaries_to_split_batch() -> None:
    body = json.dumps([{"s": "},{" * 100_000}, {"t": 1}]).encode()

    assert split_objects(body, 10**6) is None  # bounded work, not one parse per `},{`
    assert [p.raw for p in batch_pieces(body)] == [
        json.dumps({"s": "},{" * 100_000}).encode(),
        b'{"t": 1}',
    ]


def batch_pieces(body: bytes) -> list[Piece]:
    pieces = split_batch(body, 10**6)
    assert isinstance(pieces, list)
    return pieces
