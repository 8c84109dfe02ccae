"""Ingest: the HTTP API's accepted events/s against raw confluent-kafka produce of the same events.

The baseline: 1,000-event batches produced with acks=all (idempotent, lz4), each batch waited
for before the next, as an API handler would before it answers; plus the streaming produce rate
of the pre-production. The API is measured through its documented CLI and HTTP interface
(`measure_ingest`, in rounds taken in turn with the baseline's); without `meterstream.api`
the figure is reported as "not measured yet".
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException
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
    #: The median of the rounds below.
    batch_events_per_s: float
    batch_p50_ms: float | None
    batch_p99_ms: float | None
    batches: int
    #: Each round's batch rate, in the order measured (interleaved with the API's rounds).
    batch_rounds: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class ApiFigures:
    """The ingest API, or why it was not measured."""

    status: str
    #: The median of the rounds below.
    events_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    detail: str = ""
    #: CPU ms per request while the requests ran: the server, this process's clients, and
    #: the local stack's PostgreSQL and Kafka broker (the 2 cores everything shares).
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    #: Each round's accepted events/s, in the order measured.
    rounds: tuple[float, ...] = ()


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


#: The API's rate limits, lifted for the measurement: the figure is the service's capacity.
UNLIMITED = {
    "METERSTREAM_API_TOKEN_REQUESTS_PER_SECOND": "1000000",
    "METERSTREAM_API_TOKEN_REQUEST_BURST": "1000000",
    "METERSTREAM_API_ACCOUNT_EVENTS_PER_SECOND": "1000000000",
    "METERSTREAM_API_ACCOUNT_EVENT_BURST": "1000000000",
}
CLIENTS = 4
#: Rounds of (raw produce, API) in `make bench`: both move with the machine's load, so each
#: figure is the median of rounds taken in turn, and the ratio compares like with like.
ROUNDS = 3
TOKEN = re.compile(r"^ms_[0-9a-f]{12}_\S+$", re.MULTILINE)


def measure_ingest(
    settings: Settings,
    topic: str,
    records: list[Record],
    streaming_events_per_s: float,
    rounds: int = ROUNDS,
) -> tuple[ProduceFigures, ApiFigures]:
    """Raw acked produce and `meterstream serve` on the same records, in `rounds` turns each.

    The API is measured through its documented interface only: `meterstream orgs create`,
    `accounts add`, `tokens create` and `serve` (its rate limits lifted, writing to `topic`),
    then 1,000-event `POST /v1/events` batches from a few concurrent clients on this machine.
    Each round produces the records raw, then posts them; every round sends them again.
    """
    produce_rates: list[float] = []
    produce_latencies: list[float] = []
    passes: list[_Pass] = []
    failure: ApiFigures | None = None
    with _ApiServer.start(settings, topic, records) as server:
        for round_ in range(max(1, rounds)):
            rate, latencies = batch_produce(settings, topic, records)
            produce_rates.append(rate)
            produce_latencies += [1000 * s for s in latencies]
            if isinstance(server, _ApiServer) and failure is None:
                try:
                    passes.append(server.post_all())
                except (OSError, HTTPException) as exc:  # the baseline's figures still count
                    failure = ApiFigures("failed", detail=f"round {round_ + 1}: {exc!r}"[:500])
        api = server if isinstance(server, ApiFigures) else failure or server.figures(passes)
    produce = ProduceFigures(
        streaming_events_per_s=streaming_events_per_s,
        batch_events_per_s=statistics.median(produce_rates),
        batch_p50_ms=percentile(produce_latencies, 50),
        batch_p99_ms=percentile(produce_latencies, 99),
        batches=len(produce_latencies),
        batch_rounds=tuple(produce_rates),
    )
    return produce, api


@dataclass(frozen=True, slots=True)
class _Pass:
    """One round of the API: every batch posted once."""

    seconds: float
    latencies_ms: list[float]
    accepted: int
    statuses: dict[int, int]
    cpu_s: dict[str, float]


@dataclass(slots=True)
class _ApiServer:
    """A tenant and a running `meterstream serve`, set up through the CLI."""

    settings: Settings
    env: dict[str, str]
    org: str
    token: str
    port: int
    batches: list[tuple[int, bytes]]
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextlib.contextmanager
    def start(
        cls, settings: Settings, topic: str, records: list[Record]
    ) -> Iterator[_ApiServer | ApiFigures]:
        """The running server, or an `ApiFigures` saying why there is none; stopped after."""
        if importlib.util.find_spec("meterstream.api") is None:
            yield ApiFigures("not measured yet", detail="meterstream.api does not exist yet")
            return
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
            accounts = sorted({r.key.decode() for r in records if r.key})
            _cli(["accounts", "add", org, *accounts], env)
            created = _cli(["tokens", "create", "--org", org, "--scope", "ingest:write"], env)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            yield ApiFigures("not measured", detail=f"could not set up a tenant: {exc}"[:500])
            return
        token = TOKEN.search(created)
        if token is None:
            yield ApiFigures("not measured", detail="`meterstream tokens create` printed no token")
            return
        server = cls(settings, env, org, token.group(0), port, _api_batches(records))
        try:
            if server._serve():
                yield server
            else:
                yield ApiFigures(
                    "not measured", detail="`meterstream serve` did not come up in 60 s"
                )
        finally:
            server._stop()

    def _serve(self) -> bool:
        """Start `meterstream serve`; whether it answered /health within 60 s."""
        exe = str(Path(sys.executable).with_name("meterstream"))
        self.process = subprocess.Popen(
            [exe, "serve", "--port", str(self.port), "--log-level", "warning"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            http = HTTPConnection("127.0.0.1", self.port, timeout=1)
            try:
                http.request("GET", "/health")
                if http.getresponse().status == 200:  # noqa: PLR2004
                    return True
            except (OSError, HTTPException):
                pass
            finally:
                http.close()
            time.sleep(0.2)
        return False

    def _stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _cli(["tokens", "revoke", self.token], self.env)

    def post_all(self) -> _Pass:
        """Post every batch once, timing it and the CPU of everything that served it."""
        assert self.process is not None  # noqa: S101 - only after _serve
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/cloudevents-batch+json",
        }
        processes = {"server": [self.process.pid, *children(self.process.pid)]} | service_pids(
            self.settings.stack_dir
        )
        cpu_before = {name: pids_cpu(pids) for name, pids in processes.items()}
        client_before = time.process_time()
        seconds, latencies, accepted, statuses = _post_all(self.port, headers, self.batches)
        cpu = {name: pids_cpu(pids) - cpu_before[name] for name, pids in processes.items()}
        cpu["clients"] = time.process_time() - client_before
        return _Pass(seconds, latencies, accepted, statuses, cpu)

    def figures(self, passes: list[_Pass]) -> ApiFigures:
        """The median round's rate; latency and CPU per request over all rounds."""
        latencies = [ms for p in passes for ms in p.latencies_ms]
        statuses: dict[int, int] = {}
        for p in passes:
            for status, n in p.statuses.items():
                statuses[status] = statuses.get(status, 0) + n
        requests = len(self.batches) * len(passes)
        rates = tuple(p.accepted / p.seconds for p in passes)
        return ApiFigures(
            "measured",
            events_per_s=statistics.median(rates),
            p50_ms=percentile(latencies, 50),
            p99_ms=percentile(latencies, 99),
            cpu_ms_per_request={
                name: 1000 * sum(p.cpu_s.get(name, 0.0) for p in passes) / requests
                for name in passes[0].cpu_s
            },
            rounds=rates,
            detail=(
                f"`meterstream serve` ({_processes(self.env)}), {CLIENTS} concurrent clients, "
                f"{len(passes)} rounds of {len(self.batches)} requests of up to 1,000 events, "
                f"HTTP statuses {statuses}, rate limits lifted; org {self.org}"
            ),
        )


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
