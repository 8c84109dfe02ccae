"""`meterstream serve` as a process: HTTPS with a certificate and key, on loopback only; workers."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from meterstream.config import Settings
from meterstream.testing import LAST_MS_OF_MONTH, cloud_event
from tests.api.conftest import Tenant, free_port, read_topic

pytestmark = pytest.mark.integration


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_serve_with_certificate_and_key_speaks_https_on_loopback(
    stack: Settings, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meterstream",
            "serve",
            "--port",
            str(port),
            "--tls-certfile",
            str(cert),
            "--tls-keyfile",
            str(key),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                response = httpx.get(
                    f"https://127.0.0.1:{port}/health",
                    verify=ssl.create_default_context(cafile=cert),
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
        listening = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=False
        ).stdout
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        code = server.wait(timeout=30)

    assert response.json() == {"status": "ok"}
    assert [line.split()[3] for line in listening.splitlines()] == [f"127.0.0.1:{port}"]
    # uvicorn finishes in-flight requests, then re-raises the SIGTERM it caught.
    assert code in (0, -signal.SIGTERM)


def test_serve_with_workers_answers_from_several_processes_over_https(
    stack: Settings,
    tmp_path: Path,
    topics: tuple[str, str],
    make_tenant: Callable[..., Tenant],
) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    tenant = make_tenant(1)
    raw, _ = topics
    server = subprocess.Popen(
        [sys.executable, "-m", "meterstream", "serve", "--port", str(port), "--workers", "2"]
        + ["--tls-certfile", str(cert), "--tls-keyfile", str(key), "--log-level", "warning"],
        env={**os.environ, "METERSTREAM_KAFKA_TOPICS_RAW": raw},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    verify = ssl.create_default_context(cafile=cert)
    event = cloud_event("w-1", tenant.accounts[0], "api_calls", LAST_MS_OF_MONTH, {"status": 200})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                httpx.get(f"https://127.0.0.1:{port}/health", verify=verify)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        posted = httpx.post(
            f"https://127.0.0.1:{port}/v1/events",
            content=json.dumps([event]).encode(),
            headers={
                "Authorization": f"Bearer {tenant.tokens['ingest']}",
                "Content-Type": "application/cloudevents-batch+json",
            },
            verify=verify,
            timeout=30,
        )
        workers = subprocess.run(
            ["pgrep", "-P", str(server.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        code = server.wait(timeout=30)

    assert posted.status_code == 202, posted.text
    assert len(workers) >= 2  # the worker processes
    assert [v for _, v in read_topic(stack, raw, 1)] == [json.dumps([event]).encode()[1:-1]]
    assert code in (0, -signal.SIGTERM)
