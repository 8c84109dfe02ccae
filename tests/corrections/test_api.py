"""The corrections routes on a real server: scopes, answers, and tenant isolation.

A token voids and amends only its organisation's accounts (another's is 404, like one that does
not exist, and nothing is recorded), needs `usage:correct` to do so and `usage:read` to list;
lists show only its organisation's corrections and audit rows, with the token as who did it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from meterstream.api import admin
from meterstream.config import Settings
from tests.api.conftest import RunningApi, free_port, start_api
from tests.corrections.conftest import CorrectionsRun

pytestmark = [pytest.mark.integration, pytest.mark.flink]


@contextlib.contextmanager
def served(settings: Settings) -> Iterator[RunningApi]:
    """The real app in a thread, with `settings` (its database, archive, topics), on a port."""
    port = free_port()
    running = start_api(
        dataclasses.replace(settings, api=dataclasses.replace(settings.api, port=port))
    )
    try:
        yield running
    finally:
        running.stop()


def tenant(settings: Settings, accounts: list[str], **scopes: list[str]) -> dict[str, str]:
    """An organisation owning `accounts`, with a token per named scope list."""
    org = f"org-{uuid.uuid4().hex[:10]}"
    admin.create_org(settings, org)
    admin.add_accounts(settings, org, accounts)
    return {"org": org} | {
        name: admin.create_token(settings, org, wanted).token for name, wanted in scopes.items()
    }


def error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    code: str = response.json()["error"]
    return code


def test_correction_routes_need_their_scope_and_stay_in_their_organisation(  # noqa: PLR0915
    corrections_run: CorrectionsRun,
) -> None:
    run = corrections_run
    events = [json.loads(run.special[f"api-{i}"].value) for i in range(3)]
    account = events[0]["subject"]
    mine = tenant(
        run.settings,
        [account],
        correct=["usage:correct"],
        read=["usage:read"],
        ingest=["ingest:write"],
        admin=["admin"],
    )
    other = tenant(
        run.settings,
        [f"{account}-other"],
        both=["usage:correct", "usage:read"],
        admin=["admin"],
    )
    void_1 = {"account": account, "event_id": events[0]["id"], "reason": "duplicate shipment"}
    new_2 = {**events[1], "data": {"tokens": 1234, "model": "large"}}

    with served(run.settings) as api:
        correct, read, ingest = (api.client(mine[k]) for k in ("correct", "read", "ingest"))
        stranger = api.client(other["both"])
        anonymous = api.client()

        # Scopes: no token, a token without usage:correct (or usage:read for the lists).
        assert error(anonymous.post("/v1/corrections/void", json=void_1), 401) == "UNAUTHENTICATED"
        assert error(ingest.post("/v1/corrections/void", json=void_1), 403) == "FORBIDDEN"
        assert error(read.post("/v1/corrections/void", json=void_1), 403) == "FORBIDDEN"
        assert error(ingest.get("/v1/corrections"), 403) == "FORBIDDEN"
        assert error(correct.get("/v1/audit"), 403) == "FORBIDDEN"
        # Another organisation's account: 404 as for one that does not exist, nothing recorded.
        assert error(stranger.post("/v1/corrections/void", json=void_1), 404) == "NOT_FOUND"
        amend = {"event": new_2, "reason": "x"}
        assert error(stranger.post("/v1/corrections/amend", json=amend), 404) == "NOT_FOUND"
        assert error(stranger.get("/v1/corrections", params={"account": account}), 404)

        made = correct.post("/v1/corrections/void", json=void_1)
        assert made.status_code == 201, made.text
        body = made.json()
        assert body["published"] is True
        ((voided,),) = [body["corrections"]]
        assert (voided["action"], voided["event_id"], voided["in_stream"]) == (
            "void",
            events[0]["id"],
            True,
        )
        again = correct.post("/v1/corrections/void", json=void_1)
        assert error(again, 409) == "ALREADY_VOIDED"
        unknown = {**void_1, "event_id": "never-sent"}
        assert error(correct.post("/v1/corrections/void", json=unknown), 404) == "NOT_COUNTED"
        call = {"endpoint": "/x", "status": 200}
        wrong_meter = {"event": {**new_2, "type": "api_calls", "data": call}, "reason": "x"}
        answer = correct.post("/v1/corrections/amend", json=wrong_meter)
        assert error(answer, 422) == "INVALID_AMENDMENT"
        assert "meter" in answer.json()["detail"]
        assert correct.post("/v1/corrections/amend", json=amend).status_code == 201
        admin_amend = {"event": {**events[2], "data": {"tokens": 1, "model": "large"}}}
        made = api.client(mine["admin"]).post(
            "/v1/corrections/amend", json=admin_amend | {"reason": "admin may"}
        )
        assert made.status_code == 201, made.text

        listed = read.get("/v1/corrections", params={"limit": 2})
        assert listed.status_code == 200, listed.text
        first = listed.json()
        second = read.get("/v1/corrections", params={"cursor": first["next_cursor"]}).json()
        items: list[dict[str, Any]] = first["items"] + second["items"]
        assert second["next_cursor"] is None
        assert [(c["action"], c["event_id"], c["new_quantity"]) for c in items] == [
            ("void", events[0]["id"], None),
            ("amend", events[1]["id"], "1234"),
            ("amend", events[2]["id"], "1"),
        ]
        token_id = mine["correct"].split("_")[1]
        assert [c["requested_by"] for c in items[:2]] == [token_id, token_id]
        trail = read.get("/v1/audit").json()["items"]
        assert [(a["action"], a["actor"], a["account_id"]) for a in trail][:2] == [
            ("void", token_id, account),
            ("amend", token_id, account),
        ]
        assert trail[0]["reason"] == "duplicate shipment"
        assert trail[0]["org_id"] == mine["org"]
        # The other organisation sees none of it, and cannot erase the account; erasure needs
        # admin (nothing is erased here: the account keeps its corrections).
        assert stranger.get("/v1/corrections").json() == {"items": [], "next_cursor": None}
        assert stranger.get("/v1/audit").json() == {"items": [], "next_cursor": None}
        erasure = f"/v1/accounts/{account}/erasure"
        foreign = api.client(other["admin"]).post(erasure, json={"reason": "x"})
        assert error(foreign, 404) == "NOT_FOUND"
        assert error(correct.post(erasure, json={"reason": "x"}), 403) == "FORBIDDEN"
        assert len(read.get("/v1/corrections").json()["items"]) == 3
