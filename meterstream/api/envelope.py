"""The API's fast path for `events.parse_envelope`, for an event that is already parsed.

`accepted_ids` answers only for the usual, valid event: it returns the id and account of an
event that `parse_envelope` accepts, or None, and then `parse_envelope` decides (and says why
it rejects). `tests/api/test_envelope.py` holds the two to that contract.
"""

from __future__ import annotations

from typing import Any

from meterstream.events import ACCOUNT_ID, MAX_ID_LENGTH, parse_time

#: Account ids seen to be well-formed: batches name the same accounts again and again.
_GOOD_ACCOUNTS: set[str] = set()
MAX_REMEMBERED = 100_000


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
    if parse_time(when) is None:
        return None
    return event_id, account
