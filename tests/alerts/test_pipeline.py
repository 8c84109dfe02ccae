"""End to end: events through the real job into PostgreSQL, the alerts service (its own process)
evaluating them, webhooks to a real receiver that checks every signature. The job and the
alerts service are SIGKILLed mid-stream and started again (the job from its checkpoint, so it
replays): every expected crossing arrives, none twice; a rejection burst and the stopped job
each give one `reached` and one `recovered`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from meterstream.alerts.receiver import WebhookReceiver
from meterstream.api.health import flink_report
from meterstream.bench.flinkjob import aggregate_argv
from meterstream.bench.jobwrap import REST_PORT_ENV
from meterstream.config import Settings
from meterstream.flink.launch import latest_checkpoint
from meterstream.kafka_io import produce
from meterstream.rules.validate import Validator
from meterstream.testing import LAST_MS_OF_MONTH, Record, cloud_event
from tests.alerts.conftest import FAST, RunningApi, Tenant, free_port
from tests.alerts.test_thresholds import THRESHOLD, create_rule, crossings, subscribe
from tests.pipeline_helpers import job_options, oracle, totals_in_postgres, wait_for

pytestmark = pytest.mark.e2e

JOB_NOT_RUNNING = "io.meterstream.health.job_not_running"
REJECTIONS = "io.meterstream.health.rejections"
CALLS = (20, 50, 100)
LARGE_TOKENS = (1000, 5000)


def stream(accounts: list[str], seed: int = 17) -> list[Record]:
    """Events for two periods: api_calls per account, llm_tokens for the first, retries too."""
    rng = random.Random(seed)
    now = datetime.now(UTC) - timedelta(minutes=5)
    plan = {  # (account index, period instant) -> api_calls events
        (0, now): 120,
        (0, LAST_MS_OF_MONTH): 30,
        (1, now): 60,
        (2, now): 10,
        (3, LAST_MS_OF_MONTH): 55,
    }
    records: list[Record] = []
    for (index, moment), n in plan.items():
        account = accounts[index]
        for i in range(n):
            event = cloud_event(
                f"c-{index}-{moment.month}-{i}",
                account,
                "api_calls",
                moment,
                {"endpoint": "/v1/search", "status": 200},
            )
            records.append(Record(account.encode(), json.dumps(event).encode()))
    for i in range(60):
        model = "large" if i % 3 else "small"
        event = cloud_event(
            f"t-{i}", accounts[0], "llm_tokens", now, {"tokens": 150, "model": model}
        )
        records.append(Record(accounts[0].encode(), json.dumps(event).encode()))
    rng.shuffle(records)
    retries = rng.sample(records, 40)  # client retries: the same records again, later
    return records + retries


def burst(account: str, n: int) -> list[Record]:
    """`n` events whose data has the wrong type (rejected with WRONG_TYPE)."""
    events = [
        cloud_event(
            f"bad-{time.time_ns()}-{i}",
            account,
            "llm_tokens",
            datetime.now(UTC),
            {"tokens": "many", "model": "large"},
        )
        for i in range(n)
    ]
    return [Record(account.encode(), json.dumps(e).encode()) for e in events]


def expected_crossings(
    totals: dict[Any, tuple[Decimal, int]],
    rules: dict[str, tuple[str, str, str | None, tuple[int, ...]]],
) -> set[tuple[str, str, str, str]]:
    """(rule, account, period, threshold) for every fixed threshold the oracle's totals reach."""
    out = set()
    for rule_id, (meter, account_filter, segment, thresholds) in rules.items():
        figures: Counter[tuple[str, str]] = Counter()
        for (account, m, period, dims), (quantity, _) in totals.items():
            if m != meter or (account_filter and account != account_filter):
                continue
            if segment is not None and dims != segment:
                continue
            figures[(account, period.isoformat())] += quantity  # type: ignore[assignment]
        for (account, period), figure in figures.items():
            out |= {(rule_id, account, period, str(t)) for t in thresholds if figure >= t}
    return out


class Process:
    """A child process in its own session, with its log."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def alive(self) -> bool:
        assert self.proc.poll() is None, f"{self.log.name} exited:\n{self.log.read_text()[-4000:]}"
        return True


@dataclass
class Pipeline:
    """The job (with its REST API on a port of its own) and the alerts service, as processes."""

    settings: Settings
    topics: tuple[str, str]
    job_dir: Path
    logs: Path
    job_name: str = field(default_factory=lambda: f"alerts-{uuid.uuid4().hex[:8]}")
    started: list[Process] = field(default_factory=list)

    def job(self, restore: Path | None = None) -> Process:
        options = replace(
            job_options(self.topics, self.job_dir, self.job_name),
            archive_dir=self.logs / "archive",
            restore_from=str(restore) if restore else None,
        )
        env = {REST_PORT_ENV: str(self.settings.flink.rest_port)}
        self.started.append(Process(aggregate_argv(options), env, self.logs / "job.log"))
        return self.started[-1]

    def service(self) -> Process:
        env = {
            f"METERSTREAM_ALERTS_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in FAST.items()
        }
        env["METERSTREAM_FLINK_REST_PORT"] = str(self.settings.flink.rest_port)
        argv = [sys.executable, "-m", "meterstream", "alerts", "serve"]
        self.started.append(Process(argv, env, self.logs / "alerts.log"))
        return self.started[-1]

    def job_state(self) -> str | None:
        flink = replace(self.settings.flink, job_name=self.job_name)
        report = flink_report(replace(self.settings, flink=flink))
        return report.get("job_state") if report.get("reachable") else None

    def produce(self, records: list[Record]) -> None:
        produce(self.settings, self.topics[0], records)


@pytest.fixture
def pipeline(
    alerts_settings: Settings, topics: tuple[str, str], job_dir: Path, tmp_path: Path
) -> Iterator[Pipeline]:
    flink = replace(alerts_settings.flink, rest_port=free_port())
    running = Pipeline(replace(alerts_settings, flink=flink), topics, job_dir, tmp_path)
    yield running
    for process in running.started:
        process.kill()


def health(receiver: WebhookReceiver, prefix: str) -> list[str]:
    """`reached` / `recovered`, in order, of the health notifications of one kind."""
    seen: dict[str, str] = {}
    for got in receiver.events():
        if got.event["type"].startswith(prefix):
            seen.setdefault(got.webhook_id, got.event["type"].rsplit(".", 1)[1])
    return list(seen.values())


def usage_rules(api: RunningApi, org: Tenant, from_period: str) -> dict[str, Any]:
    """The organisation's rules; returns each threshold rule's (meter, account, segment,
    thresholds) by id, for `expected_crossings`."""
    token = org.tokens["admin"]
    calls = create_rule(
        api,
        token,
        {
            "kind": "usage_threshold",
            "name": "calls",
            "meter": "api_calls",
            "thresholds": list(CALLS),
            "from_period": from_period,
        },
    )
    large = create_rule(
        api,
        token,
        {
            "kind": "usage_threshold",
            "name": "large",
            "meter": "llm_tokens",
            "account": org.accounts[0],
            "segment": {"model": "large"},
            "thresholds": list(LARGE_TOKENS),
            "from_period": from_period,
        },
    )
    create_rule(
        api,
        token,
        {
            "kind": "rejections",
            "name": "burst",
            "reason": "WRONG_TYPE",
            "above": 5,
            "window_seconds": 10,
        },
    )
    return {
        calls: ("api_calls", "", None, CALLS),
        large: ("llm_tokens", org.accounts[0], '{"model":"large"}', LARGE_TOKENS),
    }


def test_stream_crossings_and_health_through_kills_of_the_job_and_the_service(
    alerts_api: RunningApi,
    tenant: Callable[..., Tenant],
    receiver: WebhookReceiver,
    validator: Validator,
    pipeline: Pipeline,
) -> None:
    org, operator = tenant(4), tenant(0, operator=True)
    settings = pipeline.settings
    records = stream(org.accounts)
    totals = oracle(settings, validator, [r.value for r in records]).totals
    subscribe(alerts_api, org.tokens["admin"], receiver)
    subscribe(alerts_api, operator.tokens["admin"], receiver)
    rules = usage_rules(alerts_api, org, min(key[2] for key in totals).strftime("%Y-%m"))
    expected = expected_crossings(totals, rules)
    assert len(expected) == 10  # calls: 3 + 1 + 2 + 0 + 2; large tokens: 2

    third = len(records) // 3
    pipeline.produce(records[:third])
    job = pipeline.job()
    wait_for(lambda: job.alive() and pipeline.job_state() == "RUNNING", 180, "the job RUNNING")
    # Watch the job only once it runs: its start-up is not an outage.
    create_rule(
        alerts_api,
        operator.tokens["admin"],
        {"kind": "job_not_running", "name": "job", "job_name": pipeline.job_name, "for_seconds": 0},
    )
    service = pipeline.service()
    wait_for(lambda: service.alive() and bool(receiver.events(THRESHOLD)), 120, "a crossing")
    wait_for(lambda: latest_checkpoint(pipeline.job_dir) is not None, 60, "a checkpoint")

    # Mid-stream: the job is killed while events keep coming; the service sees it stopped,
    # and is killed too, with deliveries pending.
    feeder = threading.Thread(
        target=lambda: [
            pipeline.produce(records[i : i + 20])
            for i in range(third, 2 * third, 20)
            if not time.sleep(0.05)
        ]
    )
    feeder.start()
    time.sleep(1.0)
    job.kill()
    assert receiver.wait_for(lambda r: health(r, JOB_NOT_RUNNING) == ["reached"], 60)
    feeder.join(timeout=120)
    receiver.fail_next(3, status=503)
    service.kill()
    pipeline.produce(records[2 * third :] + burst(org.accounts[1], 8))

    checkpoint = latest_checkpoint(pipeline.job_dir)
    assert checkpoint is not None
    job = pipeline.job(checkpoint)
    pipeline.service()
    wait_for(lambda: job.alive() and pipeline.job_state() == "RUNNING", 180, "the job RUNNING")
    prefix = f"acct-{org.org_id.removeprefix('org-')}"
    wait_for(lambda: totals_in_postgres(settings, prefix) == totals, 180, "the oracle's totals")
    assert receiver.wait_for(lambda r: set(crossings(r)) >= expected, 60), crossings(receiver)
    for kind in (JOB_NOT_RUNNING, REJECTIONS):
        assert receiver.wait_for(lambda r, k=kind: health(r, k) == ["reached", "recovered"], 60)
    receiver.wait_for(lambda _r: False, 3)  # anything more would arrive now

    got = crossings(receiver)
    assert set(got) == expected
    assert set(got.values()) == {1}  # each crossing is one notification (one webhook-id)
    for webhook_id in {r.webhook_id for r in receiver.events()}:
        assert len({r.body for r in receiver.events() if r.webhook_id == webhook_id}) == 1
    assert health(receiver, JOB_NOT_RUNNING) == ["reached", "recovered"]
    assert health(receiver, REJECTIONS) == ["reached", "recovered"]
    assert not receiver.refused
