"""Events per second sent through one client of each SDK to the local API, against Python's.

    .venv/bin/python bench/sdk_throughput.py [--events 100000] [--rounds 3]

Needs the toolchains of clients/ (Node, Go, Maven) and starts the local stack if it is not
running (and stops what it started). It starts `meterstream serve` on a free loopback port with
its own raw topic and rate limits out of the way, and one organisation, account and token.
Then, round after round, each client in turn (Python, Node, Go, Java), in a process of its
own, makes `--events` api_calls events and sends them with its batching sender (1,000-event
batches), one request at a time, timed from its first event to the end of `close()`; every
event must come back accepted. It prints each run, the median events/s per SDK and its ratio
to the Python client's median of the same run. Build and start-up (npm, go build, Maven,
JVM) are not timed. The server and the client share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from confluent_kafka.admin import AdminClient

from meterstream.api import admin
from meterstream.config import PROJECT_ROOT, load_settings
from meterstream.stack import kafka, local, postgres
from meterstream.stack.kafka import create_topics

CLIENTS = PROJECT_ROOT / "clients"
SDKS = ("python", "node", "go", "java")
COMMANDS = {
    "python": ([sys.executable, str(Path(__file__).resolve()), "--child"], PROJECT_ROOT),
    "node": (["node", "dist/bench/throughput.js"], CLIENTS / "node"),
    "go": (["go", "run", "./internal/throughput"], CLIENTS / "go"),
    "java": (
        ["mvn", "-B", "-q", "-o", "-Dstyle.color=never", "surefire:test", "-Dtest=ThroughputBench"]
        + ["-Dsurefire.failIfNoSpecifiedTests=false"],
        CLIENTS / "java",
    ),
}


def child() -> None:
    """The Python client's run (a process of its own, like the other SDKs')."""
    from meterstream.client import BatchResult, MeterstreamClient, make_event  # noqa: PLC0415

    env = os.environ
    events, accepted = int(env["METERSTREAM_BENCH_EVENTS"]), 0

    def count(result: BatchResult) -> None:
        nonlocal accepted
        accepted += result.accepted

    account, prefix = env["METERSTREAM_BENCH_ACCOUNT"], env["METERSTREAM_BENCH_PREFIX"]
    data = {"endpoint": "/v1/search", "status": 200}
    started = time.perf_counter()
    with MeterstreamClient(
        env["METERSTREAM_BENCH_URL"], env["METERSTREAM_BENCH_TOKEN"], on_result=count
    ) as client:
        for i in range(events):
            client.add(make_event("api_calls", account, data, event_id=f"{prefix}-{i}"))
    seconds = time.perf_counter() - started
    print(json.dumps({"sdk": "python", "events": events, "accepted": accepted, "seconds": seconds}))  # noqa: T201


def tool_env() -> dict[str, str]:
    """The environment with the Go toolchain on PATH where this project's machines keep it."""
    env = dict(os.environ)
    if Path("/usr/local/go/bin").is_dir():
        env["PATH"] = env.get("PATH", "") + os.pathsep + "/usr/local/go/bin"
    return env


def build(env: dict[str, str]) -> None:
    """Fetch and compile what each SDK's run needs, so that no run times a build."""
    steps = [
        (["npm", "ci", "--no-audit", "--no-fund"], CLIENTS / "node"),
        (["npm", "run", "build"], CLIENTS / "node"),
        (["go", "build", "./..."], CLIENTS / "go"),
        (["mvn", "-B", "-q", "-Dstyle.color=never", "test-compile"], CLIENTS / "java"),
    ]
    for command, cwd in steps:
        subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)


def start_server(topic: str, port: int) -> subprocess.Popen[bytes]:
    """`meterstream serve` on `port`, writing to `topic`, with rate limits out of the way."""
    env = {
        **os.environ,
        "METERSTREAM_API_PORT": str(port),
        "METERSTREAM_KAFKA_TOPICS_RAW": topic,
        "METERSTREAM_API_TOKEN_REQUESTS_PER_SECOND": "1000000",
        "METERSTREAM_API_TOKEN_REQUEST_BURST": "1000000",
        "METERSTREAM_API_ACCOUNT_EVENTS_PER_SECOND": "100000000",
        "METERSTREAM_API_ACCOUNT_EVENT_BURST": "100000000",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "meterstream", "serve", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        if server.poll() is not None:
            sys.exit(f"the server exited with {server.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except httpx.TransportError:
            if time.monotonic() > deadline:
                sys.exit("the server did not start")
            time.sleep(0.2)


def free_port() -> int:
    """A free loopback port."""
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_one(sdk: str, env: dict[str, str]) -> dict[str, float]:
    """One timed run of one SDK; exits if not every event was accepted."""
    command, cwd = COMMANDS[sdk]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    lines = re.findall(r'\{[^{}]*"sdk"[^{}]*\}', done.stdout)
    if done.returncode != 0 or not lines:
        sys.exit(f"{sdk} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    result = json.loads(lines[-1])
    if result["accepted"] != result["events"]:
        sys.exit(f"{sdk}: {result['accepted']} of {result['events']} events accepted")
    return result


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each SDK, taken in turn")
    parser.add_argument("--sdks", default=",".join(SDKS), help="comma-separated, python first")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return
    sdks = [s for s in args.sdks.split(",") if s]
    settings = load_settings()
    env = tool_env()
    build(env)
    before = local.status(settings)
    local.up(settings, say=lambda _line: None)
    run_id = uuid.uuid4().hex[:8]
    topic = f"bench-sdk-{run_id}-raw"
    create_topics(settings, [topic], partitions=4)
    org, account = f"bench-sdk-{run_id}", f"bench-sdk-{run_id}-acct"
    admin.create_org(settings, org)
    admin.add_accounts(settings, org, [account])
    token = admin.create_token(settings, org, ["ingest:write"]).token
    port = free_port()
    server = start_server(topic, port)
    results: dict[str, list[float]] = {sdk: [] for sdk in sdks}
    try:
        for round_ in range(1, args.rounds + 1):
            for sdk in sdks:
                run_env = {
                    **env,
                    "METERSTREAM_BENCH_URL": f"http://127.0.0.1:{port}",
                    "METERSTREAM_BENCH_TOKEN": token,
                    "METERSTREAM_BENCH_ACCOUNT": account,
                    "METERSTREAM_BENCH_EVENTS": str(args.events),
                    "METERSTREAM_BENCH_PREFIX": f"{run_id}-{sdk}-{round_}",
                }
                result = run_one(sdk, run_env)
                rate = result["events"] / result["seconds"]
                results[sdk].append(rate)
                print(f"round {round_} {sdk:7} {rate:10,.0f} events/s")  # noqa: T201
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers}).delete_topics([topic])
        if not before["kafka"]:
            kafka.stop(settings)
        if not before["postgres"]:
            postgres.stop(settings)
    base = statistics.median(results[sdks[0]])
    print(f"\nrun {run_id}: {args.events:,} events per run, median of {args.rounds} rounds")  # noqa: T201
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # noqa: T201
    print(f"| SDK | events/s | vs {sdks[0]} |\n|---|---:|---:|")  # noqa: T201
    for sdk in sdks:
        median = statistics.median(results[sdk])
        print(f"| {sdk} | {median:,.0f} | {median / base:.2f}x |")  # noqa: T201


if __name__ == "__main__":
    main()
