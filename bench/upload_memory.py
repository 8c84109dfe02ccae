"""Memory of `meterstream serve` while it receives a large JSONL upload (a script, not a test).

    .venv/bin/python bench/upload_memory.py --size-mb 200

Needs the local stack (`meterstream up`). It writes a JSONL file of about --size-mb MB (one
malformed line in every 10,000), starts `meterstream serve` on a free loopback port with its
own raw topic, uploads the file with `meterstream.client`, samples the server's RSS every
0.25 s, and prints RSS over time, the peak, the counts and the records in Kafka. The server is
stopped, the topic deleted and the file removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from meterstream.api import admin
from meterstream.client import MeterstreamClient
from meterstream.config import load_settings
from meterstream.stack.kafka import create_topics

MB = 1024 * 1024
#: One line in this many is malformed (the API must count it as rejected).
BAD_EVERY = 10_000


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_file(path: Path, size_mb: int, accounts: list[str]) -> tuple[int, int]:
    """Write events until the file has `size_mb` MB; return (good lines, malformed lines)."""
    good = bad = 0
    target = size_mb * MB
    with path.open("wb", buffering=4 * MB) as f:
        written = 0
        while written < target:
            if (good + bad) % BAD_EVERY == BAD_EVERY - 1:
                line = b'{"id": "broken", \n'
                bad += 1
            else:
                event = {
                    "specversion": "1.0",
                    "id": f"bench-{good}",
                    "source": "bench/upload_memory",
                    "type": "llm_tokens",
                    "subject": accounts[good % len(accounts)],
                    "time": "2026-10-31T23:59:59.250Z",
                    "datacontenttype": "application/json",
                    "data": {"tokens": good % 4000, "model": "large"},
                }
                line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
                good += 1
            f.write(line)
            written += len(line)
    return good, bad


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """Wait until the server answers /health."""
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:  # noqa: PLR2004
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit("the server did not start")


def rss_mb(proc: psutil.Process) -> float:
    """Resident memory of the process and its children, in MB."""
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total / MB


def kafka_count(bootstrap: str, topic: str) -> int:
    """Records in a topic (sum of end offsets; the topic is new)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


@dataclass(frozen=True, slots=True)
class Setup:
    """The benchmark's tenant, topic and file."""

    topic: str
    token: str
    path: Path
    good: int
    bad: int


def prepare(size_mb: int, directory: Path | None) -> Setup:
    """A fresh topic, organisation, token and file."""
    settings = load_settings()
    unique = uuid.uuid4().hex[:8]
    topic = f"bench-upload-{unique}"
    create_topics(settings, [topic])
    org = f"bench-{unique}"
    accounts = [f"bench-{unique}-{i}" for i in range(20)]
    admin.create_org(settings, org)
    admin.add_accounts(settings, org, accounts)
    token = admin.create_token(settings, org, ["ingest:write"]).token
    path = Path(tempfile.mkdtemp(dir=directory)) / "events.jsonl"
    started = time.monotonic()
    good, bad = write_file(path, size_mb, accounts)
    print(  # noqa: T201
        f"file: {path.stat().st_size / MB:.1f} MB, {good} events + {bad} malformed lines "
        f"(written in {time.monotonic() - started:.1f} s)"
    )
    return Setup(topic, token, path, good, bad)


def start_server(topic: str) -> tuple[str, subprocess.Popen[bytes]]:
    """`meterstream serve` on a free loopback port, writing to `topic`."""
    port = free_port()
    env = {
        **os.environ,
        "METERSTREAM_API_PORT": str(port),
        "METERSTREAM_KAFKA_TOPICS_RAW": topic,
        "METERSTREAM_API_UPLOAD_EVENTS_PER_SECOND": "10000000",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "meterstream", "serve", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, server)
    return url, server


def upload_sampling(
    url: str, setup: Setup, pid: int
) -> tuple[dict[str, object], list[tuple[float, float]], float, float]:
    """Upload the file while sampling the server's RSS; return status, samples, idle, seconds."""
    proc = psutil.Process(pid)
    idle = rss_mb(proc)
    samples: list[tuple[float, float]] = []
    done = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.monotonic() - t0, rss_mb(proc)))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with MeterstreamClient(url, setup.token) as client:
            status = client.upload(setup.path)
    finally:
        done.set()
        sampler.join()
    return status, samples, idle, time.monotonic() - t0


def report(
    setup: Setup,
    status: dict[str, object],
    samples: list[tuple[float, float]],
    idle: float,
    elapsed: float,
) -> bool:
    """Print the figures; True if the counts are right."""
    size = setup.path.stat().st_size
    print("\nserver RSS over time (MB):")  # noqa: T201
    step = max(1, len(samples) // 20)
    for moment, rss in samples[::step]:
        print(f"  t={moment:6.1f}s  rss={rss:7.1f}")  # noqa: T201
    peak = max(rss for _, rss in samples)
    in_kafka = kafka_count(load_settings().kafka.bootstrap_servers, setup.topic)
    print(f"\nidle RSS before the upload: {idle:.1f} MB")  # noqa: T201
    print(f"peak RSS during the upload: {peak:.1f} MB ({peak - idle:+.1f} MB)")  # noqa: T201
    print(  # noqa: T201
        f"upload: {size / MB:.0f} MB in {elapsed:.1f} s = {size / MB / elapsed:.1f} MB/s, "
        f"{setup.good / elapsed:.0f} events/s"
    )
    print(  # noqa: T201
        f"status: state={status['state']} accepted={status['accepted']} "
        f"rejected={status['rejected']} offset={status['offset']} (file {size})"
    )
    print(f"records in Kafka: {in_kafka}")  # noqa: T201
    correct = (
        status["state"] == "done"
        and status["accepted"] == setup.good == in_kafka
        and status["rejected"] == setup.bad
        and status["offset"] == size
    )
    print("counts: " + ("correct" if correct else "WRONG"))  # noqa: T201
    return correct


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the file")
    args = parser.parse_args()
    setup = prepare(args.size_mb, args.dir)
    server: subprocess.Popen[bytes] | None = None
    try:
        url, server = start_server(setup.topic)
        correct = report(setup, *upload_sampling(url, setup, server.pid))
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        setup.path.unlink(missing_ok=True)
        setup.path.parent.rmdir()
        bootstrap = load_settings().kafka.bootstrap_servers
        AdminClient({"bootstrap.servers": bootstrap}).delete_topics([setup.topic])
    if not correct:
        sys.exit(1)


if __name__ == "__main__":
    main()
