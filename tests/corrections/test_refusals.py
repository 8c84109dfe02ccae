"""What a correction may not do, on the real stack: each refusal with its code and its reason.

An event that was never counted (a repeat of another event's key, a late event, one not in
the archive) cannot be corrected; nothing follows a void; an amend keeps the key, the meter and
the billing period and must pass the meter's rules. What is accepted is recorded (corrections,
audit trail), published in the contract's shape, and reaches the job's figures.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from meterstream.corrections.model import CorrectionError, Refusal
from meterstream.corrections.service import (
    Actor,
    amend_event,
    audit_entries,
    list_corrections,
    void_event,
    void_range,
)
from tests.corrections.conftest import CorrectionsRun
from tests.pipeline_helpers import consume_arrivals, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.flink]


def refused(code: Refusal, call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(CorrectionError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    assert caught.value.code is code, caught.value.detail
    return caught.value.detail


def figure(run: CorrectionsRun, account: str, meter: str) -> list[tuple[Decimal, int]]:
    with psycopg.connect(run.settings.postgres.conninfo) as conn:
        return conn.execute(
            "SELECT quantity, event_count FROM usage_aggregates WHERE account_id = %s"
            " AND meter = %s",
            (account, meter),
        ).fetchall()


def test_corrections_of_uncounted_or_voided_events_and_bad_amends_are_refused(
    corrections_run: CorrectionsRun,
) -> None:
    run, operator = corrections_run, Actor()
    settings = run.settings
    seat, conflict, late, single = (
        json.loads(run.special[name].value) for name in ("seat", "conflict", "late", "single")
    )
    account = single["subject"]

    # seats are keyed by (account, meter, time): seat-b repeated seat-a's key, with other content.
    detail = refused(
        Refusal.NOT_COUNTED, void_event, settings, operator, account, conflict["id"], "x"
    )
    assert seat["id"] in detail and "repeat" in detail
    detail = refused(Refusal.NOT_COUNTED, void_event, settings, operator, account, late["id"], "x")
    assert "closed" in detail
    detail = refused(Refusal.NOT_COUNTED, void_event, settings, operator, account, "nope", "x")
    assert "moments ago" in detail and "checkpoint" in detail
    refused(Refusal.BAD_REQUEST, void_event, settings, operator, account, single["id"], " ")
    refused(
        Refusal.NOT_FOUND,
        void_event,
        settings,
        Actor("t0", "other-org"),
        account,
        single["id"],
        "x",
    )
    now = datetime.now(UTC)
    refused(
        Refusal.BAD_REQUEST,
        void_range,
        settings,
        operator,
        account,
        meter="seats",
        start=now,
        end=now - timedelta(hours=1),
        reason="x",
    )

    def amended(**changes: object) -> bytes:
        return json.dumps({**single, **changes}).encode()

    other_meter = amended(type="api_calls", data={"endpoint": "/x", "status": 200})
    assert "keeps the meter" in refused(
        Refusal.INVALID_AMENDMENT, amend_event, settings, operator, other_meter, "x"
    )
    wrong_type = amended(data={"tokens": "five", "model": "small"})
    assert "WRONG_TYPE" in refused(
        Refusal.INVALID_AMENDMENT, amend_event, settings, operator, wrong_type, "x"
    )
    moment = datetime.fromisoformat(single["time"].replace("Z", "+00:00"))
    month_before = moment.replace(day=1, hour=0, minute=0, second=0) - timedelta(hours=1)
    other_period = amended(time=month_before.isoformat().replace("+00:00", "Z"))
    assert "billing period" in refused(
        Refusal.INVALID_AMENDMENT, amend_event, settings, operator, other_period, "x"
    )
    unknown = amended(id="never-sent")
    refused(Refusal.NOT_COUNTED, amend_event, settings, operator, unknown, "x")

    # Amend, amend again (the last one is in force), void; then nothing more.
    first = amend_event(settings, operator, amended(data={"tokens": 50, "model": "small"}), "typo")
    wait_for(lambda: figure(run, account, "llm_tokens") == [(Decimal(50), 1)], 60, "the amend")
    second = amend_event(settings, operator, amended(data={"tokens": 70, "model": "small"}), "b")
    wait_for(lambda: figure(run, account, "llm_tokens") == [(Decimal(70), 1)], 60, "amend again")
    voided = void_event(settings, operator, account, single["id"], "sent by mistake")
    wait_for(lambda: figure(run, account, "llm_tokens") == [], 60, "the void: no figure left")
    assert "voided already" in refused(
        Refusal.ALREADY_VOIDED, void_event, settings, operator, account, single["id"], "x"
    )
    refused(Refusal.ALREADY_VOIDED, amend_event, settings, operator, amended(), "x")

    results = (first, second, voided)
    assert all(r.published and len(r.corrections) == 1 for r in results)
    assert all(r.corrections[0].in_stream for r in results)
    listed = list_corrections(settings, account=account)
    assert [(c["action"], c["new_quantity"], c["requested_by"]) for c in listed] == [
        ("amend", "50", "operator"),
        ("amend", "70", "operator"),
        ("void", None, "operator"),
    ]
    trail = audit_entries(settings, account=account)
    assert [(a["action"], a["actor"], a["reason"]) for a in trail] == [
        ("amend", "operator", "typo"),
        ("amend", "operator", "b"),
        ("void", "operator", "sent by mistake"),
    ]
    assert trail[2]["details"]["correction_ids"] == [str(voided.corrections[0].correction_id)]
    # The topic holds the three messages, keyed by account, in the contract's shape.
    messages = [
        json.loads(a.value) for a in consume_arrivals(settings, settings.kafka.topics.corrections)
    ]
    mine = [m for m in messages if m["account_id"] == account]
    assert [(m["action"], m["quantity"], m["dedup_key"]) for m in mine] == [
        ("amend", "50.000000000", f"id:{single['id']}"),
        ("amend", "70.000000000", f"id:{single['id']}"),
        ("void", None, f"id:{single['id']}"),
    ]
    assert set(mine[0]) == {
        "correction_id", "account_id", "dedup_key", "action", "in_stream", "meter",
        "aggregation", "period_start", "dimensions", "quantity", "unique_value",
        "event_time_ms", "fingerprint",
    }  # fmt: skip
    assert mine[0]["dimensions"] == '{"model":"small"}'
    assert mine[0]["event_time_ms"] == int(moment.timestamp() * 1000)
