"""The API's fast path for `events.parse_envelope`, for an event that is already parsed.

`accepted_ids` answers only for the usual, valid event: it returns the id and account of an
event that `parse_envelope` accepts, or None, and then `parse_envelope` decides (and says why
it rejects). `tests/api/test_envelope.py` holds the two to that contract.
"""

from __future__ import annotations

import re
from typing import Any

from meterstream.events import ACCOUNT_ID, MAX_ID_LENGTH, parse_time

#: Account ids seen to be well-formed: batches name the same accounts again and again.
_GOOD_ACCOUNTS: set[str] = set()
MAX_REMEMBERED = 100_000
#: An RFC 3339 time (`events.RFC3339`) with every field in range but the day of the month.
_IN_RANGE = re.compile(
    r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?"
    r"([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)"
)
#: Dates (`YYYY-MM-DD`) of times `parse_time` accepted: a batch's events share a few days.
_GOOD_DATES: set[str] = set()


def valid_time(value: str) -> bool:
    """Whether `events.parse_time` accepts `value`, mostly without parsing it.

    A time in range on a date already seen valid is valid, except in years 1 and 9999, where
    an offset can take it out of the range of a UTC datetime.

    >>> valid_time("2026-10-31T23:59:59.250Z"), valid_time("2026-02-29T00:00:00Z")
    (True, False)
    """
    in_range = _IN_RANGE.fullmatch(value) is not None
    if in_range and value[:10] in _GOOD_DATES:
        return True
    if parse_time(value) is None:
        return False
    if in_range and value[:4] not in ("0001", "9999"):
        if len(_GOOD_DATES) >= MAX_REMEMBERED:
            _GOOD_DATES.clear()
        _GOOD_DATES.add(value[:10])
    return True


def accepted_ids(doc: dict[str, Any]) -> tuple[str, str] | None:
    """(id, account) of a parsed CloudEvent that passes every envelope check, else None.

    None means "not known here": `parse_envelope` has the answer.

    >>> accepted_ids({"id": "e1", "source": "s", "type": "api_calls", "subject": "a-1",
    ...     "time": "2026-10-31T23:59:59Z", "data": {}})
    ('e1', 'a-1')
    >>> accepted_ids({"id": "e1"}) is None
    True
    """
    try:
        event_id = doc["id"]
        source = doc["source"]
        meter = doc["type"]
        account = doc["subject"]
        when = doc["time"]
        data = doc["data"]
    except KeyError:
        return None
    # orjson makes exact str and dict objects; `type(...) is` is isinstance for them.
    if (
        type(event_id) is not str
        or type(source) is not str
        or type(meter) is not str
        or type(account) is not str
        or type(when) is not str
        or type(data) is not dict
        or not (event_id and source and meter and when)
        or len(event_id) > MAX_ID_LENGTH
        or doc.get("dataschema") is not None
    ):
        return None
    if account not in _GOOD_ACCOUNTS:
        if not ACCOUNT_ID.fullmatch(account):
            return None
        if len(_GOOD_ACCOUNTS) >= MAX_REMEMBERED:
            _GOOD_ACCOUNTS.clear()
        _GOOD_ACCOUNTS.add(account)
    if not valid_time(when):
        return None
    return event_id, account
