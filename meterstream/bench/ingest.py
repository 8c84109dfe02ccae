"""Ingest: the HTTP API's accepted events/s against raw confluent-kafka produce of the same events.

The baseline: 1,000-event batches produced with acks=all (idempotent, lz4), each batch waited
for before the next, as an API handler would before it answers; plus the streaming produce rate
of the pre-production. The API is measured through its documented CLI and HTTP interface
(`measure_api`); without `meterstream.api` the figure is reported as "not measured yet".
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from meterstream.bench.freshness import percentile
from meterstream.bench.profile import children, pids_cpu, service_pids
from meterstream.config import Settings
from meterstream.testing import Record

BATCH = 1_000


@dataclass(frozen=True, slots=True)
class ProduceFigures:
    """Raw produce of the benchmark's events (the API's baseline)."""

    streaming_events_per_s: float
    batch_events_per_s: float
    batch_p50_ms: float | None
    batch_p99_ms: float | None
    batches: int


@dataclass(frozen=True, slots=True)
class ApiFigures:
    """The ingest API, or why it was not measured."""

    status: str
    events_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    detail: str = ""
    #: CPU ms per request while the requests ran: the server, this process's clients, and
    #: the local stack's PostgreSQL and Kafka broker (the 2 cores everything shares).
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)


def _producer(settings: Settings) -> Producer:
    return Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )


def batch_produce(
    settings: Settings, topic: str, records: list[Record]
) -> tuple[float, list[float]]:
    """Produce `records` in 1,000-event batches, each acknowledged (acks=all) before the next."""
    producer = _producer(settings)
    latencies: list[float] = []
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    start = time.perf_counter()
    for offset in range(0, len(records), BATCH):
        began = time.perf_counter()
        for record in records[offset : offset + BATCH]:
            producer.produce(topic, record.value, key=record.key, on_delivery=on_delivery)
        producer.flush(30)
        latencies.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    if failures:
        msg = f"{len(failures)} records failed: {failures[:3]}"
        raise RuntimeError(msg)
    return len(records) / elapsed, latencies


def measure_produce(
    settings: Settings, topic: str, records: list[Record], streaming_events_per_s: float
) -> ProduceFigures:
    """The raw-produce baseline: batch figures measured now, the streaming rate given."""
    rate, latencies = batch_produce(settings, topic, records)
    ms = [1000 * s for s in latencies]
    return ProduceFigures(
        streaming_events_per_s=streaming_events_per_s,
        batch_events_per_s=rate,
        batch_p50_ms=percentile(ms, 50),
        batch_p99_ms=percentile(ms, 99),
        batches=len(latencies),
    )


#: The API's rate limits, lifted for the measurement: the figure is the service's capacity.
UNLIMITED = {
    "METERSTREAM_API_TOKEN_REQUESTS_PER_SECOND": "1000000",
    "METERSTREAM_API_TOKEN_REQUEST_BURST": "1000000",
    "METERSTREAM_API_ACCOUNT_EVENTS_PER_SECOND": "1000000000",
    "METERSTREAM_API_ACCOUNT_EVENT_BURST": "1000000000",
}
CLIENTS = 4
TOKEN = re.compile(r"^ms_[0-9a-f]{12}_\S+$", re.MULTILINE)


def _cli(args: list[str], env: dict[str, str]) -> str:
    exe = str(Path(sys.executable).with_name("meterstream"))
    result = subprocess.run(
        [exe, *args], env=env, capture_output=True, text=True, check=False, timeout=300
    )
    if result.returncode != 0:
        msg = f"meterstream {args[0]} {args[1] if len(args) > 1 else ''} failed: {result.stdout}"
        raise RuntimeError(msg + result.stderr)
    return result.stdout


def _api_batches(records: list[Record]) -> list[tuple[int, bytes]]:
    """1,000-event JSON-array bodies of the records that are JSON at all.

    A not-JSON record cannot be an element of a batch; the API rejects the other malformed
    records one by one, as the job would.
    """
    usable: list[bytes] = []
    for record in records:
        try:
            json.loads(record.value)
        except ValueError:
            continue
        usable.append(record.value)
    return [
        (len(usable[i : i + BATCH]), b"[" + b",".join(usable[i : i + BATCH]) + b"]")
        for i in range(0, len(usable), BATCH)
    ]


def measure_api(settings: Settings, topic: str, records: list[Record]) -> ApiFigures:
    """Accepted events/s and request latency of `meterstream serve`, against the same records.

    Through the documented interface only: `meterstream orgs create`, `accounts add`,
    `tokens create` and `serve` (its rate limits lifted, writing to the bench's topic), then
    1,000-event `POST /v1/events` batches from a few concurrent clients on this machine.
    """
    if importlib.util.find_spec("meterstream.api") is None:
        return ApiFigures("not measured yet", detail="meterstream.api does not exist yet")
    import httpx  # noqa: PLC0415 - the API's own client dependency

    port = _free_port()
    env = {
        **os.environ,
        **UNLIMITED,
        "METERSTREAM_KAFKA_TOPICS_RAW": topic,
        "METERSTREAM_API_PORT": str(port),
    }
    org = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        _cli(["orgs", "create", org], env)
        _cli(["accounts", "add", org, *sorted({r.key.decode() for r in records if r.key})], env)
        token_match = TOKEN.search(
            _cli(["tokens", "create", "--org", org, "--scope", "ingest:write"], env)
        )
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return ApiFigures("not measured", detail=f"could not set up a tenant: {exc}"[:500])
    if token_match is None:
        return ApiFigures("not measured", detail="`meterstream tokens create` printed no token")
    headers = {
        "Authorization": f"Bearer {token_match.group(0)}",
        "Content-Type": "application/cloudevents-batch+json",
    }
    exe = str(Path(sys.executable).with_name("meterstream"))
    server = subprocess.Popen(
        [exe, "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/health", timeout=1).status_code == 200:  # noqa: PLR2004
                    break
            time.sleep(0.2)
        else:
            return ApiFigures("not measured", detail="`meterstream serve` did not come up in 60 s")
        batches = _api_batches(records)
        processes = {"server": [server.pid, *children(server.pid)]} | service_pids(
            settings.stack_dir
        )
        cpu_before = {name: pids_cpu(pids) for name, pids in processes.items()}
        client_before = time.process_time()
        elapsed, latencies, accepted, statuses = _post_all(port, headers, batches)
        cpu = {
            name: 1000 * (pids_cpu(pids) - cpu_before[name]) / len(batches)
            for name, pids in processes.items()
        } | {"clients": 1000 * (time.process_time() - client_before) / len(batches)}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _cli(["tokens", "revoke", token_match.group(0)], env)
    return ApiFigures(
        "measured",
        events_per_s=accepted / elapsed,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        cpu_ms_per_request=cpu,
        detail=(
            f"`meterstream serve` ({_processes(env)}), {CLIENTS} concurrent clients, "
            f"{len(batches)} requests of up to 1,000 events, HTTP statuses {statuses}, "
            f"rate limits lifted; org {org}"
        ),
    )


def _processes(env: dict[str, str]) -> str:
    """How many server processes `meterstream serve` runs (`METERSTREAM_API_WORKERS`)."""
    workers = env.get("METERSTREAM_API_WORKERS", "1").strip() or "1"
    return "one process" if workers == "1" else f"{workers} worker processes"


def _post_all(
    port: int, headers: dict[str, str], batches: list[tuple[int, bytes]]
) -> tuple[float, list[float], int, dict[int, int]]:
    """POST every batch from CLIENTS threads: (seconds, latencies in ms, accepted, statuses).

    The load generator shares the machine with the server, so it is kept lean: the standard
    library's `http.client` on one keep-alive connection per thread (httpx cost about twice
    its CPU per request), and `orjson` for the answers.
    """
    todo = iter(batches)
    lock = threading.Lock()
    latencies: list[float] = []
    accepted = [0]
    statuses: dict[int, int] = {}

    def client() -> None:
        http = HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                with lock:
                    item = next(todo, None)
                if item is None:
                    return
                began = time.perf_counter()
                http.request("POST", "/v1/events", body=item[1], headers=headers)
                response = http.getresponse()
                body = response.read()
                took = 1000 * (time.perf_counter() - began)
                with lock:
                    latencies.append(took)
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    if response.status == 202:  # noqa: PLR2004
                        accepted[0] += int(orjson.loads(body).get("accepted", 0))
        finally:
            http.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, latencies, accepted[0], statuses


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
