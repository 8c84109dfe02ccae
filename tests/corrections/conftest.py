"""Fixtures of the corrections tests: a running job over an open and a closed period.

One job for all of tests/corrections (starting one takes half a minute), in a database of its
own (recalculating all accounts of a period touches only these tests' rows), with its own raw
topic, corrections topic and archive. Each test works on accounts of its own. The raw topic
keeps the producer's timestamps (CreateTime), so that events of a long-closed period can be
given the arrival times they had then: counted, not late.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

from meterstream.archive import committed_files
from meterstream.config import Settings
from meterstream.flink.launch import JobOptions, latest_checkpoint, start_job
from meterstream.rules.oracle import Corrections, Expected
from meterstream.rules.validate import Validator, ValidEvent
from meterstream.stack.flink import settings_env
from meterstream.stack.kafka import create_topics
from meterstream.testing import Record, cloud_event, generate
from tests.pipeline_helpers import (
    Arrival,
    alive,
    consume_arrivals,
    isolated_database,
    kill_job,
    oracle_of_arrivals,
    totals_in_postgres,
    wait_for,
)

#: The deployed allowed lateness (tests/conftest.py gives pipeline tests 60 days).
LATENESS_HOURS = 72
#: Events of the closed period: 50 days old, so their month closed at least 16 days ago.
CLOSED_AGE = timedelta(days=50)
#: Events of the open period: two hours old (their month is open for 72 hours after its end).
OPEN_AGE = timedelta(hours=2)


def produce_at(settings: Settings, topic: str, records: list[tuple[Record, int | None]]) -> None:
    """Produce records with the given CreateTime timestamps (ms; None: now), acknowledged."""
    producer = Producer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True}
    )
    failures: list[str] = []
    for record, stamp in records:
        kwargs = {"timestamp": stamp} if stamp is not None else {}
        producer.produce(
            topic,
            record.value,
            key=record.key,
            on_delivery=lambda err, _msg: failures.append(str(err)) if err else None,
            **kwargs,
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert failures == []


def event_time_ms(record: Record) -> int:
    """The record's event time plus a minute: when it "arrived" (epoch ms)."""
    moment = datetime.fromisoformat(json.loads(record.value)["time"].replace("Z", "+00:00"))
    return int((moment + timedelta(minutes=1)).timestamp() * 1000)


@dataclass
class CorrectionsRun:
    """The module's job, its settings and inputs, and what the tests learn along the way."""

    settings: Settings
    validator: Validator
    prefix: str
    topic: str
    job_dir: Path
    log: Path
    job: subprocess.Popen[bytes] | None = None
    arrivals: list[Arrival] = field(default_factory=list)
    special: dict[str, Record] = field(default_factory=dict)

    def options(self, restore_from: str | None = None) -> JobOptions:
        return JobOptions(
            topic=self.topic,
            rejected_topic=f"{self.topic}-rejected",
            group_id=f"g-{self.topic}",
            checkpoint_dir=self.job_dir,
            job_name=f"corr-{self.prefix}",
            restore_from=restore_from,
            env=settings_env(self.settings),
        )

    def start(self, restore_from: str | None = None) -> None:
        self.job = start_job(self.options(restore_from), log=self.log)

    def running(self) -> bool:
        assert self.job is not None
        return alive(self.job, self.log)

    def kill(self) -> Path:
        """SIGKILL the job after a checkpoint newer than now; return that checkpoint."""
        seen = latest_checkpoint(self.job_dir)
        wait_for(
            lambda: self.running() and latest_checkpoint(self.job_dir) != seen, 60, "a checkpoint"
        )
        assert self.job is not None
        kill_job(self.job)
        checkpoint = latest_checkpoint(self.job_dir)
        assert checkpoint is not None
        return checkpoint

    def oracle(self, corrections: Corrections | None = None, **kwargs: object) -> Expected:
        return oracle_of_arrivals(
            self.settings, self.validator, self.arrivals, corrections=corrections, **kwargs
        )

    def totals(self) -> dict:
        return totals_in_postgres(self.settings, self.prefix)

    def first_arrivals(self) -> dict[tuple[str, str], tuple[Arrival, ValidEvent]]:
        """(account, key) -> the first arrival that the job counted (or found late)."""
        out: dict[tuple[str, str], tuple[Arrival, ValidEvent]] = {}
        for arrival in self.arrivals:
            event = self.validator.validate(arrival.value, arrival.arrived_at)
            if isinstance(event, ValidEvent):
                out.setdefault((event.account_id, event.dedup_key), (arrival, event))
        return out


def read_all(settings: Settings, topic: str, count: int) -> list[Arrival]:
    """The topic's `count` records (a reader that went quiet too early reads again)."""
    for _ in range(10):
        arrivals = consume_arrivals(settings, topic)
        if len(arrivals) >= count:
            return arrivals
    msg = f"{topic} does not hold the {count} records produced"
    raise AssertionError(msg)


def archived_rows(root: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in committed_files(root))


def late_time(now: datetime) -> datetime:
    """An hour before the latest month start whose month closed over an hour ago: an event of
    that time arriving now is late, and at most 35 days old."""
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    if now < start + timedelta(hours=LATENESS_HOURS + 1):
        start = datetime(start.year - (start.month == 1), (start.month - 2) % 12 + 1, 1, tzinfo=UTC)
    return start - timedelta(hours=1)


def _record(account: str, event_id: str, meter: str, when: datetime, data: dict) -> Record:
    doc = cloud_event(event_id, account, meter, when, data)
    return Record(account.encode(), json.dumps(doc).encode())


def special_records(prefix: str, now: datetime) -> dict[str, tuple[Record, int | None]]:
    """Accounts of their own for the refusal test (`<prefix>-x`: a seats report and a
    conflicting one under the same key, a late event, an event to amend and void), the API test
    (`<prefix>-api`) and the erasure test (`<prefix>-erase`: events of both periods, a repeat in
    conflict, a rejected and a late one, all carrying a string found nowhere else)."""
    x, api, erase = f"{prefix}-x", f"{prefix}-api", f"{prefix}-erase"
    moment = (now - OPEN_AGE).replace(microsecond=0)
    closed = (now - CLOSED_AGE).replace(microsecond=0)
    late = late_time(now)
    call = {"endpoint": "/x", "status": 200}
    out: dict[str, tuple[Record, int | None]] = {
        "seat": (_record(x, f"{prefix}-seat-a", "seats", moment, {"seats": 7}), None),
        "conflict": (_record(x, f"{prefix}-seat-b", "seats", moment, {"seats": 9}), None),
        "late": (_record(x, f"{prefix}-late", "api_calls", late, call), None),
        "single": (
            _record(x, f"{prefix}-single", "llm_tokens", moment, {"tokens": 5, "model": "small"}),
            None,
        ),
    }
    for i in range(3):
        tokens = {"tokens": 10 * (i + 1), "model": "large"}
        out[f"api-{i}"] = (_record(api, f"{api}-{i}", "llm_tokens", moment, tokens), None)
    person = {"user_id": f"person-{prefix}"}  # the erased account's "personal" payload string
    for i, (when, stamp) in enumerate(
        [(moment, None), (closed, int(closed.timestamp() * 1000) + 60_000)]
    ):
        for j, (meter, data) in enumerate(
            [("active_users", person), ("llm_tokens", {"tokens": 7, "model": "small"})]
        ):
            out[f"erase-{i}-{j}"] = (_record(erase, f"{erase}-{i}-{j}", meter, when, data), stamp)
    out["erase-conflict"] = (
        _record(erase, f"{erase}-0-1", "llm_tokens", moment, {"tokens": 8, "model": "small"}),
        None,
    )
    out["erase-late"] = (_record(erase, f"{erase}-late", "active_users", late, person), None)
    out["erase-rejected"] = (
        _record(erase, f"{erase}-bad", "active_users", moment, {"user_id": 12, "who": person}),
        None,
    )
    return out


# Package scope: the job stops after the last test of tests/corrections, not at the end of the
# session (it would keep running, and reading a broker other tests restart, through all of them).
@pytest.fixture(scope="package")
def corrections_run(
    stack: Settings, validator: Validator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CorrectionsRun]:
    """The job, running over events of an open and a closed period; every event counted and
    archived before the tests start."""
    unique = uuid.uuid4().hex[:8]
    prefix = f"c{unique}"
    work = tmp_path_factory.mktemp("corrections")
    topic = f"test-{unique}-raw"
    create_topics(stack, [topic])  # CreateTime: arrival times are ours to give
    create_topics(stack, [f"{topic}-rejected", f"test-{unique}-corrections"])
    with isolated_database(stack, allowed_lateness_hours=LATENESS_HOURS) as isolated:
        topics = replace(isolated.kafka.topics, corrections=f"test-{unique}-corrections")
        settings = replace(
            isolated,
            kafka=replace(isolated.kafka, topics=topics),
            flink=replace(isolated.flink, archive_dir=str(work / "archive")),
        )
        run = CorrectionsRun(
            settings, validator, prefix, topic, work / "checkpoints", work / "job.log"
        )
        now = datetime.now(UTC)
        closed = generate(
            480,
            seed=72,
            accounts=4,
            account_prefix=prefix,
            duplicate_rate=0.05,
            malformed_rate=0,
            around=now - CLOSED_AGE,
            spread=timedelta(hours=1),
        )
        opened = generate(
            480,
            seed=71,
            accounts=4,
            account_prefix=prefix,
            duplicate_rate=0.05,
            malformed_rate=0,
            around=now - OPEN_AGE,
            spread=timedelta(hours=1),
        )
        specials = special_records(f"x{unique}", now)
        run.special = {name: record for name, (record, _) in specials.items()}
        produce_at(settings, topic, [(r, event_time_ms(r)) for r in closed])
        produce_at(settings, topic, [(r, None) for r in opened])
        # One producer keeps their order: the conflicting repeat comes after its first arrival.
        produce_at(settings, topic, list(specials.values()))
        run.arrivals = read_all(settings, topic, len(closed) + len(opened) + len(specials))
        accepted = sum(
            isinstance(validator.validate(a.value, a.arrived_at), ValidEvent) for a in run.arrivals
        )
        run.start()
        try:
            expected = run.oracle().totals
            wait_for(
                lambda: (
                    run.running()
                    and run.totals()
                    == {k: v for k, v in expected.items() if k[0].startswith(prefix)}
                ),
                240,
                "every event counted",
            )
            archive = Path(settings.flink.archive_dir)
            wait_for(lambda: archived_rows(archive) == accepted, 60, "every event archived")
            yield run
        finally:
            if run.job is not None:
                kill_job(run.job)
