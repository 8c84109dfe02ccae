"""Batch uploads: JSONL and JSON arrays, counts, resuming by offset, the client and the CLI."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meterstream.cli import app as cli_app
from meterstream.client import MeterstreamClient
from meterstream.testing import LAST_MS_OF_MONTH, cloud_event
from tests.api.conftest import RunningApi, Tenant, read_topic

pytestmark = pytest.mark.integration


def lines(prefix: str, accounts: list[str], n: int) -> list[bytes]:
    return [
        json.dumps(
            cloud_event(
                f"{prefix}-{i}",
                accounts[i % len(accounts)],
                "llm_tokens",
                LAST_MS_OF_MONTH,
                {"tokens": i, "model": "small"},
            )
        ).encode()
        for i in range(n)
    ]


def ids_in(api: RunningApi, expected: int) -> set[str]:
    return {json.loads(v)["id"] for _, v in read_topic(api.settings, api.topic, expected)}


def test_upload_jsonl_counts_accepted_and_rejected_and_lists_rejections(
    serve_api: Callable[..., RunningApi], make_tenant: Callable[..., Tenant]
) -> None:
    api = serve_api(upload_commit_events=50)
    tenant, other = make_tenant(), make_tenant()
    good = lines("j", tenant.accounts, 400)
    body = b"\n".join([*good[:200], b"{not json", *lines("f", other.accounts, 1), *good[200:]])

    with api.client(tenant.tokens["ingest"]) as http:
        response = http.post("/v1/uploads", params={"format": "jsonl"}, content=body + b"\n")
        status = http.get(f"/v1/uploads/{response.json()['upload_id']}").json()

    assert response.status_code == 201, response.text
    assert (status["state"], status["accepted"], status["rejected"]) == ("done", 400, 2)
    assert status["offset"] == len(body) + 1
    assert [r["reason"] for r in status["rejections"]] == [
        "MALFORMED_JSON",
        "ACCOUNT_NOT_IN_ORGANISATION",
    ]
    assert status["rejections"][0]["offset"] == sum(len(g) + 1 for g in good[:200])
    assert ids_in(api, 400) == {f"j-{i}" for i in range(400)}


def test_upload_json_array_is_split_into_its_events(
    api: RunningApi, make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant()
    body = b"[\n" + b",\n".join(lines("a", tenant.accounts, 120)) + b"\n]\n"

    with api.client(tenant.tokens["ingest"]) as http:
        response = http.post(
            "/v1/uploads", content=body, headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 201
    assert (response.json()["accepted"], response.json()["rejected"]) == (120, 0)
    assert ids_in(api, 120) == {f"a-{i}" for i in range(120)}


def test_upload_invalid_json_array_fails_with_counts_up_to_the_error(
    api: RunningApi, make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant()
    body = b"[" + b",".join(lines("x", tenant.accounts, 3)) + b", oops]"

    with api.client(tenant.tokens["ingest"]) as http:
        response = http.post("/v1/uploads", params={"format": "json"}, content=body)

    doc = response.json()
    assert response.status_code == 422
    assert (doc["state"], doc["accepted"]) == ("failed", 3)
    assert "at byte" in doc["error"]


def test_upload_resumes_from_the_committed_offset_with_exact_counts(
    api: RunningApi, make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant()
    data = b"\n".join(lines("r", tenant.accounts, 300)) + b"\n"
    cut = len(data) // 2 + 7  # mid-line

    with api.client(tenant.tokens["ingest"]) as http:
        first = http.post(
            "/v1/uploads",
            params={"format": "jsonl"},
            content=data[:cut],
            headers={"Upload-Complete": "?0"},
        ).json()
        offset = first["offset"]
        upload = f"/v1/uploads/{first['upload_id']}"
        wrong = http.patch(upload, content=data[offset + 1 :], headers={"Upload-Offset": "1"})
        rest = http.patch(upload, content=data[offset:], headers={"Upload-Offset": str(offset)})
        again = http.patch(upload, content=b"", headers={"Upload-Offset": str(len(data))})

    assert first["state"] == "open"
    assert offset == data.rfind(b"\n", 0, cut) + 1
    assert wrong.status_code == 409
    assert wrong.json()["offset"] == offset
    assert rest.status_code == 200, rest.text
    assert (rest.json()["state"], rest.json()["accepted"]) == ("done", 300)
    assert rest.json()["offset"] == len(data)
    assert again.status_code == 409
    assert ids_in(api, 300) == {f"r-{i}" for i in range(300)}


def test_upload_broken_connection_is_resumed_by_the_client_without_loss(
    serve_api: Callable[..., RunningApi], make_tenant: Callable[..., Tenant], tmp_path: Path
) -> None:
    api = serve_api(upload_commit_events=100)
    tenant = make_tenant()
    data = b"\n".join(lines("c", tenant.accounts, 2000)) + b"\n"
    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    upload_id = str(uuid.uuid4())
    host, port = api.url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/uploads?format=jsonl HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {tenant.tokens['ingest']}\r\nUpload-Id: {upload_id}\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + data[: len(data) // 2])
        time.sleep(0.5)
    client = MeterstreamClient(api.url, tenant.tokens["ingest"], backoff_s=0.1)
    deadline = time.monotonic() + 10
    while (status := client.upload_status(upload_id)) is None or status["state"] == "open":
        assert time.monotonic() < deadline
        time.sleep(0.1)

    assert status["state"] == "interrupted"
    assert 0 < status["offset"] < len(data)
    final = client.upload(path, upload_id=upload_id)
    client.close()

    assert (final["state"], final["accepted"], final["rejected"]) == ("done", 2000, 0)
    assert ids_in(api, 2000) == {f"c-{i}" for i in range(2000)}


def test_upload_command_line_sends_a_file(
    api: RunningApi, make_tenant: Callable[..., Tenant], tmp_path: Path
) -> None:
    tenant = make_tenant()
    path = tmp_path / "events.json"
    path.write_bytes(b"[" + b",".join(lines("cli", tenant.accounts, 50)) + b"]")

    result = CliRunner().invoke(
        cli_app, ["upload", str(path), "--url", api.url, "--token", tenant.tokens["ingest"]]
    )

    assert result.exit_code == 0, result.output
    assert "done, 50 accepted, 0 rejected" in result.output


def test_upload_lines_with_nul_characters_are_rejected_and_stored(
    api: RunningApi, make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant()
    body = b'\x00\n{"id": "\\u0000"}\n' + lines("n", tenant.accounts, 1)[0] + b"\n"

    with api.client(tenant.tokens["ingest"]) as http:
        response = http.post("/v1/uploads", params={"format": "jsonl"}, content=body)

    doc = response.json()
    assert response.status_code == 201, response.text
    assert (doc["state"], doc["accepted"], doc["rejected"]) == ("done", 1, 2)
    assert doc["rejections"][0]["excerpt"] == "\ufffd"
