"""The Python client's live test, run by tests/clients/test_live.py like the other SDKs' live tests.

Phase `send` (METERSTREAM_LIVE_PHASE): 2,500 llm_tokens events through the batching sender
(tokens i % 100 + 1, model small/large by parity), a batch with one event of another
organisation's account and one the pipeline will reject (WRONG_TYPE), and an upload of 100
events. Phase `verify` (after the job ran): the usage rows, page by page, and the rejection.
"""

from __future__ import annotations

import json
import os
import sys
from decimal import Decimal
from pathlib import Path

from meterstream.client import AuthenticationError, MeterstreamClient, make_event

EVENTS, UPLOADED = 2_500, 100
QUANTITY = sum(i % 100 + 1 for i in range(EVENTS)) + UPLOADED + 7
COUNT = EVENTS + UPLOADED + 1


def tokens(n: object, event_id: str, account: str) -> dict[str, object]:
    """An llm_tokens event of the small model."""
    return make_event("llm_tokens", account, {"tokens": n, "model": "small"}, event_id=event_id)


def send(url: str, token: str, env: dict[str, str]) -> None:
    """Send everything; fail (exit 1) on any surprise."""
    account, prefix = env["METERSTREAM_LIVE_ACCOUNT"], env["METERSTREAM_LIVE_PREFIX"]
    stranger, tmp = env["METERSTREAM_LIVE_STRANGER"], Path(env["METERSTREAM_LIVE_DIR"])
    with MeterstreamClient(url, token, backoff_s=0.2, max_backoff_s=2, max_attempts=40) as client:
        for i in range(EVENTS):
            data = {"tokens": i % 100 + 1, "model": "small" if i % 2 == 0 else "large"}
            client.add(make_event("llm_tokens", account, data, event_id=f"{prefix}-{i}"))
        client.flush()
        mixed = client.send_batch(
            [
                make_event(
                    "llm_tokens", account, {"tokens": 7, "model": "small"}, event_id=f"{prefix}-ok"
                ),
                make_event(
                    "llm_tokens", stranger, {"tokens": 1, "model": "small"}, event_id=f"{prefix}-x"
                ),
                make_event(
                    "llm_tokens",
                    account,
                    {"tokens": "lots", "model": "small"},
                    event_id=f"{prefix}-bad",
                ),
            ]
        )
        statuses = [(r.status, r.reason) for r in mixed.results]
        assert statuses == [
            ("accepted", None),
            ("rejected", "ACCOUNT_NOT_IN_ORGANISATION"),
            ("accepted", None),
        ], statuses
        path = tmp / "python-upload.jsonl"
        path.write_text(
            "".join(
                json.dumps(
                    make_event(
                        "llm_tokens",
                        account,
                        {"tokens": 1, "model": "small"},
                        event_id=f"{prefix}-up-{i}",
                    )
                )
                + "\n"
                for i in range(UPLOADED)
            )
        )
        progress: list[tuple[int, int]] = []
        status = client.upload(path, progress=lambda sent, size: progress.append((sent, size)))
        assert (status["state"], status["accepted"], status["rejected"]) == ("done", UPLOADED, 0), (
            status
        )
        assert progress[-1] == (path.stat().st_size, path.stat().st_size), progress[-1]


def verify(url: str, token: str, account: str, prefix: str) -> None:
    """Read back what the job counted, through the API."""
    with MeterstreamClient(url, token) as client:
        rows = list(client.usage(account=account, limit=1))
        assert len(rows) >= 2, rows  # two segments (models): pages of one row each
        assert sum(Decimal(r["quantity"]) for r in rows) == QUANTITY, rows
        assert sum(r["event_count"] for r in rows) == COUNT, rows
        rejected = list(client.rejections(account=account))
        assert [r["reason"] for r in rejected] == ["WRONG_TYPE"], rejected
        assert f"{prefix}-bad" in rejected[0]["raw_payload"]
    with MeterstreamClient(url, "ms_000000000000_wrong") as stranger:
        try:
            list(stranger.usage())
        except AuthenticationError:
            pass
        else:
            msg = "a wrong token must raise AuthenticationError"
            raise AssertionError(msg)


def main() -> None:
    env = os.environ
    url, token = env["METERSTREAM_LIVE_URL"], env["METERSTREAM_LIVE_TOKEN"]
    account, prefix = env["METERSTREAM_LIVE_ACCOUNT"], env["METERSTREAM_LIVE_PREFIX"]
    if env["METERSTREAM_LIVE_PHASE"] == "send":
        send(url, token, dict(env))
        print("LIVE SEND OK")  # noqa: T201
    else:
        verify(url, token, account, prefix)
        print("LIVE VERIFY OK")  # noqa: T201


if __name__ == "__main__":
    sys.exit(main())
