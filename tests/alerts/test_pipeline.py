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
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
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


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


def test_stream_crossings_and_health_through_kills_of_the_job_and_the_service(
    alerts_api: RunningApi,
    alerts_settings: Settings,
    tenant: Callable[..., Tenant],
    receiver: WebhookReceiver,
    topics: tuple[str, str],
    job_dir: Path,
    tmp_path: Path,
    validator: Validator,
    processes: list[Process],
) -> None:
    org, operator = tenant(4), tenant(0, operator=True)
    accounts = org.accounts
    job_name = f"alerts-{org.org_id}"
    rest_port = free_port()
    settings = replace(alerts_settings, flink=replace(alerts_settings.flink, rest_port=rest_port))
    records = stream(accounts)
    totals = oracle(settings, validator, [r.value for r in records]).totals
    periods = sorted({key[2] for key in totals})
    token = org.tokens["admin"]
    subscribe(alerts_api, token, receiver)
    subscribe(alerts_api, operator.tokens["admin"], receiver)
    from_period = periods[0].strftime("%Y-%m")
    calls = create_rule(
        alerts_api,
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
        alerts_api,
        token,
        {
            "kind": "usage_threshold",
            "name": "large",
            "meter": "llm_tokens",
            "account": accounts[0],
            "segment": {"model": "large"},
            "thresholds": list(LARGE_TOKENS),
            "from_period": from_period,
        },
    )
    create_rule(
        alerts_api,
        token,
        {
            "kind": "rejections",
            "name": "burst",
            "reason": "WRONG_TYPE",
            "above": 5,
            "window_seconds": 10,
        },
    )
    expected = expected_crossings(
        totals,
        {
            calls: ("api_calls", "", None, CALLS),
            large: ("llm_tokens", accounts[0], '{"model":"large"}', LARGE_TOKENS),
        },
    )
    assert len(expected) == 10  # 3 + 1 + 2 + 0 + 2 for calls, 2 for large tokens

    options = replace(job_options(topics, job_dir, job_name), archive_dir=tmp_path / "archive")
    job_env = {REST_PORT_ENV: str(rest_port)}
    service_env = {
        **{
            f"METERSTREAM_ALERTS_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in FAST.items()
        },
        "METERSTREAM_FLINK_REST_PORT": str(rest_port),
    }
    service_argv = [sys.executable, "-m", "meterstream", "alerts", "serve"]

    def start_job(restore: Path | None = None) -> Process:
        argv = aggregate_argv(replace(options, restore_from=str(restore) if restore else None))
        processes.append(Process(argv, job_env, tmp_path / "job.log"))
        return processes[-1]

    def start_service() -> Process:
        processes.append(Process(service_argv, service_env, tmp_path / "alerts.log"))
        return processes[-1]

    def job_state() -> str | None:
        report = flink_report(replace(settings, flink=replace(settings.flink, job_name=job_name)))
        return report.get("job_state") if report.get("reachable") else None

    def health(prefix: str) -> list[str]:
        seen: dict[str, str] = {}
        for got in receiver.events():
            if got.event["type"].startswith(prefix):
                seen.setdefault(got.webhook_id, got.event["type"].rsplit(".", 1)[1])
        return list(seen.values())

    third = len(records) // 3
    produce(settings, topics[0], records[:third])
    job = start_job()
    wait_for(lambda: job.alive() and job_state() == "RUNNING", 180, "the job RUNNING")
    # Watch the job only once it runs: its start-up is not an outage.
    create_rule(
        alerts_api,
        operator.tokens["admin"],
        {
            "kind": "job_not_running",
            "name": "job",
            "job_name": job_name,
            "for_seconds": 0,
        },
    )
    service = start_service()
    wait_for(lambda: service.alive() and bool(receiver.events(THRESHOLD)), 120, "a crossing")
    wait_for(lambda: latest_checkpoint(job_dir) is not None, 60, "a checkpoint")

    # Mid-stream: the job is killed while events keep coming; the service sees it stopped,
    # and is killed too, with deliveries pending.
    feeder = threading.Thread(
        target=lambda: [
            produce(settings, topics[0], records[i : i + 20])
            for i in range(third, 2 * third, 20)
            if not time.sleep(0.05)
        ]
    )
    feeder.start()
    time.sleep(1.0)
    job.kill()
    assert receiver.wait_for(lambda _r: health(JOB_NOT_RUNNING) == ["reached"], 60)
    feeder.join(timeout=120)
    receiver.fail_next(3, status=503)
    service.kill()
    produce(settings, topics[0], records[2 * third :] + burst(accounts[1], 8))

    checkpoint = latest_checkpoint(job_dir)
    assert checkpoint is not None
    job = start_job(checkpoint)
    start_service()
    wait_for(lambda: job.alive() and job_state() == "RUNNING", 180, "the restored job RUNNING")
    wait_for(
        lambda: totals_in_postgres(settings, f"acct-{org.org_id.removeprefix('org-')}") == totals,
        180,
        "the oracle's totals in PostgreSQL",
    )
    assert receiver.wait_for(lambda r: set(crossings(r)) >= expected, 60), crossings(receiver)
    assert receiver.wait_for(lambda _r: health(JOB_NOT_RUNNING) == ["reached", "recovered"], 60)
    assert receiver.wait_for(lambda _r: health(REJECTIONS) == ["reached", "recovered"], 60), health(
        REJECTIONS
    )
    receiver.wait_for(lambda _r: False, 3)  # anything more would arrive now

    got = crossings(receiver)
    assert set(got) == expected
    assert set(got.values()) == {1}  # each crossing is one notification (one webhook-id)
    for webhook_id in {r.webhook_id for r in receiver.events()}:
        assert len({r.body for r in receiver.events() if r.webhook_id == webhook_id}) == 1
    assert health(JOB_NOT_RUNNING) == ["reached", "recovered"]
    assert health(REJECTIONS) == ["reached", "recovered"]
    assert not receiver.refused
