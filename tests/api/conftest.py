"""Fixtures for the ingest API: a real uvicorn server on loopback, tenants, a topic reader."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from meterstream.config import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningApi:
    """A served app: its base URL and the settings it runs with (its own raw topic)."""

    url: str
    settings: Settings
    server: Any
    thread: threading.Thread
    producer: Any

    @property
    def topic(self) -> str:
        return self.settings.kafka.topics.raw

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.producer.close()


def start_api(settings: Settings) -> RunningApi:
    """The real API app under uvicorn in a thread on `settings.api.port`, once it answers."""
    import uvicorn  # noqa: PLC0415

    from meterstream.api.app import create_app  # noqa: PLC0415
    from meterstream.api.producer import KafkaEventProducer  # noqa: PLC0415

    producer = KafkaEventProducer(settings)
    config = uvicorn.Config(
        create_app(settings, producer),
        host="127.0.0.1",
        port=settings.api.port,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return RunningApi(f"http://127.0.0.1:{settings.api.port}", settings, server, thread, producer)


@pytest.fixture
def serve_api(stack: Settings) -> Iterator[Callable[..., RunningApi]]:
    """Start the real app under uvicorn in a thread, on its own port and raw topic."""

    from meterstream.stack.kafka import create_topics  # noqa: PLC0415

    started: list[RunningApi] = []

    def start(**api_changes: Any) -> RunningApi:
        topic = f"test-api-{uuid.uuid4().hex[:10]}-raw"
        create_topics(stack, [topic], partitions=2)
        port = free_port()
        kafka = dataclasses.replace(
            stack.kafka, topics=dataclasses.replace(stack.kafka.topics, raw=topic)
        )
        api = dataclasses.replace(stack.api, port=port, **api_changes)
        running = start_api(dataclasses.replace(stack, kafka=kafka, api=api))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def api(serve_api: Callable[..., RunningApi]) -> RunningApi:
    """A server with the default limits."""
    return serve_api()


@dataclass
class Tenant:
    """An organisation with accounts and one token per scope set."""

    org_id: str
    accounts: list[str]
    tokens: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def make_tenant(stack: Settings) -> Callable[..., Tenant]:
    """Create a uniquely named organisation with `n_accounts` accounts and tokens."""
    from meterstream.api import admin  # noqa: PLC0415

    def make(n_accounts: int = 2, *, operator: bool = False, quota: int | None = None) -> Tenant:
        unique = uuid.uuid4().hex[:10]
        org_id = f"org-{unique}"
        admin.create_org(stack, org_id, operator=operator)
        accounts = [f"acct-{unique}-{i}" for i in range(n_accounts)]
        admin.add_accounts(stack, org_id, accounts, quota)
        tenant = Tenant(org_id, accounts)
        for name, scopes in {
            "ingest": ["ingest:write"],
            "read": ["usage:read"],
            "admin": ["admin"],
        }.items():
            tenant.tokens[name] = admin.create_token(stack, org_id, scopes).token
        return tenant

    return make


def post_batch(http: httpx.Client, prefix: str, account: str, n: int = 20) -> httpx.Response:
    """POST `n` new api_calls events (ids `<prefix>-<i>`) for `account` as one batch."""
    from meterstream.testing import LAST_MS_OF_MONTH, cloud_event  # noqa: PLC0415

    events = [
        cloud_event(f"{prefix}-{i}", account, "api_calls", LAST_MS_OF_MONTH, {"status": 200})
        for i in range(n)
    ]
    return http.post(
        "/v1/events",
        content=json.dumps(events),
        headers={"Content-Type": "application/cloudevents-batch+json"},
    )


def read_topic(
    settings: Settings, topic: str, expected: int, timeout_s: float = 30.0
) -> list[tuple[bytes | None, bytes]]:
    """Every record of `topic` (key, value), reading until `expected` are there or time is up."""
    from confluent_kafka import Consumer  # noqa: PLC0415

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[tuple[bytes | None, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                if len(records) >= expected:
                    break
                continue
            if message.error() is None:
                records.append((message.key(), message.value() or b""))
    finally:
        consumer.close()
    return records
