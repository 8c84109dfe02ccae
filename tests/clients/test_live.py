"""Every SDK against a real `meterstream serve` on the local stack, and the job after it.

For each of the four clients (Python, Node, Go, Java) its live test sends 2,500 events in
1,000-event batches, a mixed batch and a 100-event upload through a proxy in front of the
server. The proxy swallows the 202 of the client's second batch (Kafka holds its events, the
client never hears so), cuts the connection and the server is killed with SIGKILL and
restarted: the client must resend the same bytes, and the job must count every event once.
After the bounded job ran, each client reads its figures back through /v1/usage and its
rejection through /v1/rejections, and the figures in PostgreSQL are checked here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from meterstream.api import admin
from meterstream.api.spec import SPEC_PATH, render
from meterstream.config import Settings
from tests.api.conftest import free_port
from tests.clients import live_python
from tests.clients.conftest import Sdk, Toolchains
from tests.pipeline_helpers import consume_all, job_options, run_bounded_job, totals_in_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.flink]

ORDER = ("python", "node", "go", "java")


class CuttingProxy:
    """Forwards a loopback port to the API. Armed with n, it swallows the n-th 202 answer,
    cuts that connection and refuses new ones until `resume()`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.countdown: int | None = None
        self.paused = False
        self.tripped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, nth: int) -> None:
        with self.lock:
            self.countdown, self.paused = nth, False
            self.tripped.clear()

    def resume(self) -> None:
        with self.lock:
            self.paused = False

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self.lock:
            paused = self.paused
        try:
            if paused:
                raise ConnectionRefusedError
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
        self._pump(upstream, client, True)

    def _trip(self) -> bool:
        with self.lock:
            if self.countdown is None:
                return False
            self.countdown -= 1
            if self.countdown:
                return False
            self.countdown, self.paused = None, True
            self.tripped.set()
            return True

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while data := src.recv(65536):
                if answers and b"HTTP/1.1 202 " in data and self._trip():
                    break  # the client never gets this answer
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


class Server:
    """`meterstream serve` as a process on a fixed port, killed and restarted at will."""

    def __init__(self, port: int, raw_topic: str, log: Path) -> None:
        self.port, self.log = port, log
        self.env = {**os.environ, "METERSTREAM_KAFKA_TOPICS_RAW": raw_topic}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "meterstream", "serve", "--port", str(self.port)]
                + ["--log-level", "warning"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def live_command(name: str, sdks: dict[str, Sdk]) -> tuple[list[str], Path]:
    if name == "python":
        return [sys.executable, "-m", "tests.clients.live_python"], Path.cwd()
    return list(sdks[name].live), sdks[name].directory


def run_phase(
    name: str,
    phase: str,
    env: dict[str, str],
    sdks: dict[str, Sdk],
    *,
    log: Path,
    on_trip: tuple[CuttingProxy, Server] | None = None,
) -> str:
    """Run one SDK's live test; when the proxy trips, kill the server and start it again."""
    command, cwd = live_command(name, sdks)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env={**env, "METERSTREAM_LIVE_PHASE": phase},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 600
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"{name} {phase} did not finish"
            if on_trip is not None and on_trip[0].tripped.wait(0.2):
                proxy, server = on_trip
                server.kill()  # mid-batch: the client is still waiting for its answer
                server.start()
                proxy.resume()
                on_trip = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text(errors="replace")
    assert proc.returncode == 0, f"{name} {phase} exited {proc.returncode}:\n{output[-6000:]}"
    marker = f"LIVE {phase.upper()} OK"
    assert marker in output, f"{name} {phase} did not run its live test:\n{output[-6000:]}"
    return output


def test_every_sdk_sends_survives_a_killed_server_and_reads_back_exact_figures(
    stack: Settings,
    topics: tuple[str, str],
    job_dir: Path,
    tmp_path: Path,
    toolchains: Toolchains,
) -> None:
    unique = uuid.uuid4().hex[:10]
    org = f"org-{unique}"
    accounts = {name: f"acct-{unique}-{name}" for name in ORDER}
    admin.create_org(stack, org)
    admin.add_accounts(stack, org, list(accounts.values()))
    token = admin.create_token(stack, org, ["ingest:write", "usage:read"]).token
    server = Server(free_port(), topics[0], tmp_path / "serve.log")
    server.start()
    proxy = CuttingProxy(server.port)
    try:
        served = httpx.get(f"http://127.0.0.1:{server.port}/openapi.json", timeout=10).json()
        assert render(served) == SPEC_PATH.read_text(), "clients/openapi.json is stale"
        base = {
            **toolchains.env,
            "METERSTREAM_LIVE_URL": f"http://127.0.0.1:{proxy.port}",
            "METERSTREAM_LIVE_TOKEN": token,
            "METERSTREAM_LIVE_STRANGER": f"acct-{unique}-stranger",
            "METERSTREAM_LIVE_DIR": str(tmp_path),
        }
        envs = {
            name: {
                **base,
                "METERSTREAM_LIVE_ACCOUNT": accounts[name],
                "METERSTREAM_LIVE_PREFIX": f"live-{unique}-{name}",
            }
            for name in ORDER
        }
        for name in ORDER:
            proxy.arm(2)  # the second 1,000-event batch
            run_phase(
                name,
                "send",
                envs[name],
                toolchains.sdks,
                log=tmp_path / f"{name}-send.log",
                on_trip=(proxy, server),
            )
            assert proxy.tripped.is_set(), f"{name}: the proxy never saw a second 202"
        assert server.starts == 1 + len(ORDER)

        records = [json.loads(v) for v in consume_all(stack, topics[0], timeout_s=30)]
        sent = Counter(r["subject"] for r in records)
        distinct = {(r["subject"], r["id"]) for r in records}
        for name in ORDER:
            ids = {i for a, i in distinct if a == accounts[name]}
            # 2,500 + ok + bad + 100 uploaded, and the swallowed batch in Kafka twice (1,000
            # events, fewer if the flush timer sent part of them first)
            assert len(ids) == live_python.COUNT + 1, name
            assert sent[accounts[name]] > len(ids), (name, sent[accounts[name]])

        run_bounded_job(
            job_options(
                topics, job_dir, f"clients-{unique}", bounded=True, archive_dir=tmp_path / "archive"
            ),
            tmp_path / "job.log",
        )
        for name in ORDER:
            totals = totals_in_postgres(stack, accounts[name])
            assert sum(q for q, _ in totals.values()) == Decimal(live_python.QUANTITY), name
            assert sum(n for _, n in totals.values()) == live_python.COUNT, name
            run_phase(
                name, "verify", envs[name], toolchains.sdks, log=tmp_path / f"{name}-verify.log"
            )
    finally:
        proxy.close()
        server.kill()
