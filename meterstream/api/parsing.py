"""Splitting request bodies and uploaded files into events, keeping each event's exact bytes.

Pure and incremental: a splitter is fed chunks and yields `Piece`s (an event's byte span in the
file and its raw bytes), so a file of any size is never held whole in memory. Malformed input
is a value (`Piece.too_large`, `SplitError`), never an exception the caller must catch.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson

WHITESPACE = " \t\r\n"
_DECODER = json.JSONDecoder()
#: `}`, `,`, `{` with JSON whitespace between: every boundary between two objects of an array is
#: one of these (a few more may lie inside an element, in a string or a nested array).
_OBJECT_BOUNDARY = re.compile(rb"\}[ \t\r\n]*,[ \t\r\n]*\{")

Format = Literal["jsonl", "json"]


@dataclass(frozen=True, slots=True)
class Piece:
    """One event as found in a file: where it starts and ends (bytes) and its raw bytes.

    When the event is longer than allowed, `raw` holds only its first bytes and `too_large`
    is set; the event is rejected without being parsed.
    """

    start: int
    end: int
    raw: bytes
    too_large: bool = False


@dataclass(frozen=True, slots=True)
class SplitError:
    """The file cannot be split any further (a JSON array that is not valid JSON)."""

    offset: int
    detail: str


class JsonlSplitter:
    r"""Splits JSON Lines: one event per line; blank lines are skipped.

    >>> s = JsonlSplitter(max_event_bytes=100)
    >>> [p.raw for p in s.feed(b'{"a": 1}\n\n{"b"')] + [p.raw for p in s.finish()]
    [b'{"a": 1}', b'{"b"']
    """

    def __init__(self, max_event_bytes: int, offset: int = 0) -> None:
        self._max = max_event_bytes
        self._buffer = b""
        self._start = offset  # file offset of _buffer[0]
        self._skipping = False  # inside an over-long line, discarding until its newline
        self._skip_head = b""
        self._skip_start = 0
        self.error: SplitError | None = None

    @property
    def safe_offset(self) -> int:
        """File offset up to which every event has been yielded (a resume point)."""
        return self._skip_start if self._skipping else self._start

    def feed(self, chunk: bytes) -> Iterator[Piece]:
        """Add the next bytes of the file; yield every event they complete."""
        buffer = self._buffer + chunk if self._buffer else chunk
        base = self._start
        pos = 0
        while True:
            newline = buffer.find(b"\n", pos)
            if newline < 0:
                break
            if self._skipping:
                self._skipping = False
                yield Piece(self._skip_start, base + newline + 1, self._skip_head, too_large=True)
            else:
                piece = self._line(buffer, base, pos, newline)
                if piece is not None:
                    yield piece
            pos = newline + 1
        rest = buffer[pos:]
        if self._skipping:
            rest = b""
        elif len(rest) > self._max:
            self._skipping, self._skip_start = True, base + pos
            self._skip_head, rest = rest[:200], b""
        self._start = base + len(buffer) - len(rest)
        self._buffer = rest

    def finish(self) -> Iterator[Piece]:
        """The end of the file: yield the last line if it has no newline."""
        if self._skipping:
            self._skipping = False
            yield Piece(self._skip_start, self._start, self._skip_head, too_large=True)
        elif self._buffer:
            piece = self._line(self._buffer, self._start, 0, len(self._buffer))
            self._start += len(self._buffer)
            self._buffer = b""
            if piece is not None:
                yield piece

    def _line(self, buffer: bytes, base: int, pos: int, end: int) -> Piece | None:
        line = buffer[pos:end]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            return None
        stop = base + (end + 1 if end < len(buffer) else end)
        if len(line) > self._max:
            return Piece(base + pos, stop, line[:200], too_large=True)
        return Piece(base + pos, stop, line)


class ArraySplitter:
    """Splits one JSON array into its elements, each with its exact bytes.

    A resumed upload starts right after an element (`offset` > 0): then a `,` or `]` is next.

    >>> s = ArraySplitter(max_event_bytes=100)
    >>> [p.raw for p in s.feed(b' [{"a": 1}, {"b": ')] + [p.raw for p in s.feed(b'[2]} ]')]
    [b'{"a": 1}', b'{"b": [2]}']
    >>> list(s.finish()), s.error
    ([], None)
    """

    def __init__(self, max_event_bytes: int, offset: int = 0) -> None:
        self._max = max_event_bytes
        self._text = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._offset = offset  # file offset of _text[0]
        self._state = "sep" if offset > 0 else "open"
        self._safe = offset
        self.error: SplitError | None = None

    @property
    def safe_offset(self) -> int:
        """File offset just after the last element yielded (a resume point)."""
        return self._safe

    def feed(self, chunk: bytes) -> Iterator[Piece]:
        """Add the next bytes of the file; yield every element they complete."""
        if self.error is not None:
            return
        try:
            text = self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            self.error = SplitError(self._offset + len(self._text.encode()), f"not UTF-8: {exc}")
            return
        yield from self._scan(self._text + text, final=False)

    def finish(self) -> Iterator[Piece]:
        """The end of the file: the array must be complete."""
        if self.error is not None:
            return
        try:
            text = self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            self.error = SplitError(self._offset, f"not UTF-8: {exc}")
            return
        yield from self._scan(self._text + text, final=True)
        if self.error is None and self._state != "end":
            self.error = SplitError(self._offset, "the JSON array is not closed with ]")

    def _scan(self, text: str, *, final: bool) -> Iterator[Piece]:
        pos, offset, n = 0, self._offset, len(text)
        while self.error is None:
            while pos < n and text[pos] in WHITESPACE:
                pos += 1
                offset += 1
            if pos >= n:
                break
            if self._state != "value" and not (self._state == "first" and text[pos] != "]"):
                self._punctuation(text[pos], offset)
                pos, offset = pos + 1, offset + 1
                continue
            # A value starts here.
            try:
                _, end = _DECODER.raw_decode(text, pos)
            except (ValueError, RecursionError) as exc:
                if final or len(text) - pos > self._max:
                    self.error = SplitError(
                        offset, f"element is not valid JSON of at most {self._max} bytes: {exc}"
                    )
                break  # otherwise probably incomplete: wait for more bytes
            if end >= n and not final:
                break  # a number at the end of a chunk may continue in the next one
            raw = text[pos:end].encode()
            stop = offset + len(raw)
            too_large = len(raw) > self._max
            yield Piece(offset, stop, raw[:200] if too_large else raw, too_large=too_large)
            self._state = "sep"
            self._safe = stop
            pos, offset = end, stop
        self._text = text[pos:]
        self._offset = offset

    def _punctuation(self, char: str, offset: int) -> None:
        """Move past `[`, `,` or `]` (where the state allows it), or record the error."""
        expected = {"open": "[", "first": "]", "sep": ",]"}.get(self._state, "")
        if char not in expected:
            what = (
                "data after the closing ] of the array"
                if self._state == "end"
                else (
                    "an upload in format json must be an array"
                    if self._state == "open"
                    else f"expected {' or '.join(expected)} but found {char!r}"
                )
            )
            self.error = SplitError(offset, what)
        elif char == "[":
            self._state = "first"
        elif char == ",":
            self._state = "value"
        else:
            self._state = "end"


def new_splitter(
    fmt: Format, max_event_bytes: int, offset: int = 0
) -> JsonlSplitter | ArraySplitter:
    """A splitter for an upload in format `fmt`, starting at byte `offset` of the file."""
    if fmt == "jsonl":
        return JsonlSplitter(max_event_bytes, offset)
    return ArraySplitter(max_event_bytes, offset)


def split_batch(body: bytes, max_event_bytes: int) -> list[Piece] | SplitError:
    """The elements of a `application/cloudevents-batch+json` body (a JSON array).

    >>> [p.raw for p in split_batch(b'[{"id": "a"}, 7]', 100)]
    [b'{"id": "a"}', b'7']
    >>> split_batch(b'{"id": "a"}', 100)
    SplitError(offset=0, detail='a batch must be an array')
    """
    splitter = ArraySplitter(max_event_bytes)
    pieces = [*splitter.feed(body), *splitter.finish()]
    if splitter.error is not None:
        detail = splitter.error.detail.replace("an upload in format json", "a batch")
        return SplitError(splitter.error.offset, detail)
    return pieces


def split_objects(body: bytes, max_event_bytes: int) -> tuple[list[bytes], list[Any]] | None:
    """The elements of a JSON array of objects, each parsed: (raw bytes, parsed); or None.

    The fast path of `split_batch` for the usual batch: one C-speed regex pass finds the
    candidate boundaries and orjson parses each element from its exact bytes (a candidate
    inside an element leaves an unparsable piece, which is joined to the next). When every
    element parses as an object and the separators are JSON whitespace and commas, the body
    is that JSON array. Anything else (another element type, invalid JSON, an element over
    `max_event_bytes`) gives None: `split_batch` then finds the elements or the error.

    >>> split_objects(b' [{"a": [{}, {}]},{"b": 2}] ', 100)
    ([b'{"a": [{}, {}]}', b'{"b": 2}'], [{'a': [{}, {}]}, {'b': 2}])
    >>> split_objects(b'[{"a": 1}, 7]', 100) is None
    True
    """
    ws = b" \t\r\n"
    inner = body.strip(ws)
    if len(inner) < 2 or inner[:1] != b"[" or inner[-1:] != b"]":  # noqa: PLR2004
        return None
    first = len(body) - len(body.lstrip(ws)) + 1  # just after the [
    inner = inner[1:-1]
    start = first + len(inner) - len(inner.lstrip(ws))
    end = first + len(inner.rstrip(ws))
    raws: list[bytes] = []
    docs: list[Any] = []
    if start >= end:
        return raws, docs  # `[ ]`
    if body[start] != ord("{"):
        return None
    # Each failed attempt re-parses its element from the start: bound the work, so that a body
    # full of `},{` inside strings costs at most a few passes before the general splitter.
    budget = 2 * len(body)
    # One loop, no helper call per element: this runs for every event the API receives.
    for boundary in _OBJECT_BOUNDARY.finditer(body, start, end):
        stop = boundary.start() + 1
        raw = body[start:stop]
        try:
            docs.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            budget -= len(raw)
            if budget < 0:
                return None
            continue  # the boundary is inside this element: extend it to the next one
        raws.append(raw)
        start = boundary.end() - 1
    raw = body[start:end]
    try:
        docs.append(orjson.loads(raw))
    except orjson.JSONDecodeError:
        return None
    raws.append(raw)
    if max(map(len, raws)) > max_event_bytes:
        return None
    return raws, docs
