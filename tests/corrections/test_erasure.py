"""Erasure of one account among many, on the real stack, while the job keeps running.

The account first gets a life in every store (its events in both periods, a conflicting repeat,
a rejected and a late event, an organisation, a time zone, events and an upload through the
API, corrections, a recalculation, an alert rule). It is erased through the API while other
accounts keep sending (the job writes archive files meanwhile). Afterwards no table, no archive
file and no API answer holds its id, its event ids or its payload string; the other accounts'
figures are unchanged and the new ones all counted; the archive verifies; the account's
recalculation and corrections are refused; a recalculation of the other accounts finds nothing
to change in the rewritten archive.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from meterstream.api import admin
from meterstream.archive import committed_files, in_progress_files, seal, verify
from meterstream.corrections.model import CorrectionError, Refusal
from meterstream.corrections.service import Actor, amend_event, void_event
from meterstream.recalc import RecalcScope, RecalculationError, recalculate
from meterstream.testing import Record, cloud_event
from tests.corrections.conftest import CorrectionsRun, produce_at, read_all
from tests.corrections.test_api import served
from tests.pipeline_helpers import oracle_of_arrivals, totals_in_postgres, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.flink]


def tables_naming(settings: object, needle: str) -> dict[str, int]:
    """Rows of every table whose text contains `needle` (a plain substring), by table."""
    with psycopg.connect(settings.postgres.conninfo) as conn:  # type: ignore[attr-defined]
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
        ]
        found = {}
        for table in tables:
            row = conn.execute(
                f'SELECT count(*) FROM "{table}" t WHERE strpos(t::text, %s) > 0',  # noqa: S608
                (needle,),
            ).fetchone()
            if row and row[0]:
                found[table] = row[0]
    return found


def archive_naming(root: Path, needle: str) -> int:
    """Rows of the committed archive files with `needle` in any column."""
    count = 0
    for path in committed_files(root):
        table = pq.ParquetFile(path).read()
        hit = pc.fill_null(pc.match_substring(pc.cast(table.column(0), "string"), needle), False)
        for column in table.columns[1:]:
            found = pc.fill_null(pc.match_substring(pc.cast(column, "string"), needle), False)
            hit = pc.or_(hit, found)
        count += pc.sum(hit).as_py() or 0
    return count


def figures(settings: object) -> dict[tuple, tuple]:
    with psycopg.connect(settings.postgres.conninfo) as conn:  # type: ignore[attr-defined]
        rows = conn.execute(
            "SELECT account_id, meter, period_start, dimensions, aggregation, quantity,"
            " event_count, first_event_at, last_event_at, last_arrived_at FROM usage_aggregates"
        ).fetchall()
    return {tuple(r[:4]): tuple(r[4:]) for r in rows}


def test_erasing_one_account_among_many_leaves_nothing_of_it_while_the_job_runs(  # noqa: PLR0915
    corrections_run: CorrectionsRun,
) -> None:
    run = corrections_run
    settings = dataclasses.replace(
        run.settings,
        kafka=dataclasses.replace(
            run.settings.kafka,
            topics=dataclasses.replace(run.settings.kafka.topics, raw=run.topic),
        ),
    )
    root = Path(settings.flink.archive_dir)
    docs = {k: json.loads(v.value) for k, v in run.special.items() if k.startswith("erase")}
    account = docs["erase-0-0"]["subject"]
    person = docs["erase-0-0"]["data"]["user_id"]
    org = f"org-{uuid.uuid4().hex[:10]}"
    admin.create_org(settings, org)
    admin.add_accounts(settings, org, [account])
    tokens = {
        name: admin.create_token(settings, org, scopes).token
        for name, scopes in {
            "admin": ["admin"],
            "read": ["usage:read"],
            "ingest": ["ingest:write"],
            "alerts": ["alerts:write"],
        }.items()
    }
    with psycopg.connect(settings.postgres.conninfo) as conn:
        conn.execute(
            "INSERT INTO account_time_zones (account_id, time_zone) VALUES (%s, 'UTC')", (account,)
        )

    with served(settings) as api:
        # Through the API: an event (quota counts), an upload with a line rejected, a rule.
        now = datetime.now(UTC).replace(microsecond=0)
        sent = cloud_event(f"{account}-api", account, "active_users", now, {"user_id": person})
        answer = api.client(tokens["ingest"]).post("/v1/events", json=sent)
        assert answer.status_code == 202, answer.text
        bad_line = json.dumps({**sent, "id": f"{account}-up", "time": "yesterday"})
        answer = api.client(tokens["ingest"]).post(
            "/v1/uploads", params={"format": "jsonl"}, content=bad_line + "\n"
        )
        assert answer.status_code in (200, 201), answer.text
        rule = {
            "kind": "usage_threshold",
            "name": f"tokens of {account}",
            "account": account,
            "meter": "llm_tokens",
            "thresholds": ["1"],
        }
        answer = api.client(tokens["alerts"]).post("/v1/alerts/rules", json=rule)
        assert answer.status_code == 201, answer.text
        # Corrections: a void in the open period, an amend in the closed one, recalculated.
        void_event(settings, Actor(), account, docs["erase-0-1"]["id"], f"{account} asked")
        closed = {**docs["erase-1-1"], "data": {"tokens": 70, "model": "small"}}
        amended = amend_event(settings, Actor(), json.dumps(closed).encode(), "typo")
        period = amended.corrections[0].period_start
        recalculate(settings, RecalcScope(period, account), archive_dir=root, reason=account)
        wait_for(lambda: archive_naming(root, sent["id"]) == 1, 60, "the API's event archived")

        strings = [account, person, *(d["id"] for d in docs.values()), sent["id"]]
        before = {s: tables_naming(settings, s) for s in (account, person)}
        for table in (
            "rejected_events",
            "late_events",
            "usage_aggregates",
            "corrections",
            "audit_trail",
            "alert_rules",
            "upload_rejections",
            "account_daily_counts",
            "accounts",
            "account_time_zones",
            "aggregate_changes",
            "recalculation_runs",
        ):
            assert table in before[account], (table, before)
        archived = archive_naming(root, account)
        assert archived == len(docs)  # every special one but the rejected, and the API's
        others = {k: v for k, v in figures(settings).items() if k[0] != account}
        mine = {k[1:]: v for k, v in figures(settings).items() if k[0] == account}

        # Other accounts keep sending while the account is erased.
        live_prefix = f"l{run.prefix[1:]}"
        live: list[Record] = []
        stop = threading.Event()

        def send() -> None:
            i = 0
            while not stop.is_set():
                batch = []
                for _ in range(20):
                    who = f"{live_prefix}-{i % 3}"
                    doc = cloud_event(
                        f"{who}-{i}",
                        who,
                        "api_calls",
                        datetime.now(UTC),
                        {"endpoint": "/l", "status": 200},
                    )
                    batch.append(Record(who.encode(), json.dumps(doc).encode()))
                    i += 1
                produce_at(settings, run.topic, [(r, None) for r in batch])
                live.extend(batch)
                stop.wait(0.2)

        sender = threading.Thread(target=send)
        sender.start()
        try:
            # Erase while the job is writing a file (its rows are committed at a checkpoint).
            wait_for(lambda: bool(in_progress_files(root)), 60, "the job writing a file")
            answer = api.client(tokens["admin"]).post(
                f"/v1/accounts/{account}/erasure", json={"reason": f"{account} left; GDPR"}
            )
        finally:
            stop.set()
            sender.join(timeout=30)
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["remaining"] == {}, result
        assert result["archive"]["rows_removed"] == archived
        # The job was writing files when the erasure began; they were committed and checked.
        assert result["archive"]["in_progress_at_start"] >= 1
        assert result["archive"]["still_in_progress"] == []
        assert result["counts"]["rejected_events"] == 2  # the rejected record, the conflict
        assert result["counts"]["late_events"] == 1
        pseudonym = result["pseudonym"]

        # The job kept running, and counted what the other accounts sent meanwhile.
        assert run.running()
        arrivals = read_all(settings, run.topic, len(run.arrivals) + len(live) + 1)
        wanted = oracle_of_arrivals(
            settings, run.validator, [a for a in arrivals if a.value in {r.value for r in live}]
        ).totals
        assert sum(n for _, n in wanted.values()) == len(live)
        wait_for(
            lambda: run.running() and totals_in_postgres(settings, live_prefix) == wanted,
            120,
            "the events sent during the erasure",
        )

        # Nothing of the account anywhere: tables, archive files, API answers.
        for needle in strings:
            assert tables_naming(settings, needle) == {}, needle
            assert archive_naming(root, needle) == 0, needle
        read = api.client(tokens["read"])
        for path in ("/v1/usage", "/v1/rejections", "/v1/corrections", "/v1/audit"):
            body = read.get(path).text
            assert not any(needle in body for needle in strings), (path, body)
        # The organisation no longer owns it (the API's account cache is 5 s old at most).
        wait_for(
            lambda: read.get("/v1/usage", params={"account": account}).status_code == 404,
            30,
            "the account gone from its organisation",
        )
        trail = read.get("/v1/audit").json()["items"]
        assert [a["action"] for a in trail][-2:] == ["erase", "erase"]
        assert {a["account_id"] for a in trail} == {pseudonym}

    # Its figures are kept under the pseudonym, the others' are unchanged.
    after = figures(settings)
    assert {k: v for k, v in after.items() if k[0] != pseudonym} == {
        **others,
        **{k: v for k, v in after.items() if k[0].startswith(live_prefix)},
    }
    assert {k[1:]: v for k, v in after.items() if k[0] == pseudonym} == mine
    seal(root)
    checked = verify(root)
    assert checked.ok, checked
    assert checked.replaced >= 1
    with pytest.raises(RecalculationError, match="erased"):
        recalculate(settings, RecalcScope(period, account), archive_dir=root)
    with pytest.raises(CorrectionError) as refused:
        void_event(settings, Actor(), account, docs["erase-0-0"]["id"], "x")
    assert refused.value.code is Refusal.ACCOUNT_ERASED
    # Flink reads the rewritten files, and nothing else was lost from them.
    dry = recalculate(settings, RecalcScope(period), archive_dir=root, dry_run=True)
    assert dry.changes == []
