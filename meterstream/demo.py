"""`meterstream demo`: sample records through the real job, then what became of each of them.

Every number the demo prints is read back from the job's outputs (PostgreSQL), for exactly the
records this run produced: their Kafka positions find their rejections and late events, and
the run's own account ids (`demo-<run>-NNNN`) find their figures.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from rich.console import Console

from meterstream.config import Settings
from meterstream.display import compact_table, figures_table, period_label, segment_label
from meterstream.flink.launch import JobOptions
from meterstream.kafka_io import produce
from meterstream.rules.periods import is_late
from meterstream.rules.reasons import ReasonCode
from meterstream.rules.validate import DEDUP_WINDOW
from meterstream.store.queries import usage_aggregates
from meterstream.testing import Record, cloud_event, generate

#: The sample's accounts, and how many conflicting repeats and late events it adds.
ACCOUNTS = 20
CONFLICTS = 5
LATE = 5
#: Sample event times: the last `SPREAD` * 2, ending an hour ago (none in the future).
SPREAD = timedelta(hours=6)

#: Kafka positions (partition, offset) of the records a run produced.
Positions = list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Story:
    """What happened to one run's sample records, read from the job's outputs."""

    produced: int
    accounts: int
    #: Distinct events in the run's figures (`usage_aggregates.event_count`), and the figures.
    counted: int
    figures: int
    #: Records counted, but logged with a warning (by reason code).
    warnings: dict[str, int] = field(default_factory=dict)
    #: Repeats of an id with other content (DUPLICATE_ID_CONFLICT): not counted.
    conflicts: int = 0
    #: Records rejected by validation, by reason code (conflicts not included).
    rejected: dict[str, int] = field(default_factory=dict)
    #: First arrivals after their period closed (`late_events`), by period.
    late: dict[date, int] = field(default_factory=dict)

    @property
    def ignored(self) -> int:
        """The records no output mentions: repeats of an event already received, same content.

        The job drops those silently (a client's retry), so they are what is left over.
        """
        return (
            self.produced
            - self.counted
            - self.conflicts
            - sum(self.rejected.values())
            - sum(self.late.values())
        )


def late_time(now: datetime, allowed_lateness: timedelta) -> datetime | None:
    """An event time whose period has closed by `now` but is young enough to be accepted.

    The last minute of the newest closed month that is under the 35-day age limit, or None
    when there is none (an allowed lateness of a month or more).

    >>> late_time(datetime(2026, 12, 5, tzinfo=UTC), timedelta(hours=72)).isoformat()
    '2026-11-30T23:59:00+00:00'
    >>> late_time(datetime(2026, 12, 2, tzinfo=UTC), timedelta(hours=72)).isoformat()
    '2026-10-31T23:59:00+00:00'
    >>> late_time(datetime(2026, 8, 3, 23, 59, tzinfo=UTC), timedelta(hours=72)).isoformat()
    '2026-06-30T23:59:00+00:00'
    >>> late_time(datetime(2026, 12, 5, tzinfo=UTC), timedelta(days=60)) is None
    True
    """
    month = datetime(now.year, now.month, 1, tzinfo=UTC)
    for _ in range(2):
        candidate = month - timedelta(minutes=1)
        if now - candidate >= DEDUP_WINDOW - timedelta(hours=1):
            return None
        if is_late(candidate, now, "UTC", allowed_lateness):
            return candidate
        month = datetime(candidate.year, candidate.month, 1, tzinfo=UTC)
    return None


def demo_records(
    events: int, account_prefix: str, now: datetime, allowed_lateness: timedelta
) -> list[Record]:
    """The demo's sample: something of every kind of record the pipeline meets.

    `events` new events of the last 12 hours with client retries and broken records
    (`testing.generate`, seed 7), then `CONFLICTS` repeats of an id with other content and,
    when `late_time` finds a closed period, `LATE` events for it.
    """
    records = generate(
        events,
        seed=7,
        accounts=ACCOUNTS,
        account_prefix=account_prefix,
        around=now - SPREAD - timedelta(hours=1),
        spread=SPREAD,
    )
    # The generator's valid events have ids `<prefix>-evt-...`; its broken records do not.
    marker = f'"id": "{account_prefix}-evt-'.encode()
    tokens = [
        doc
        for doc in (json.loads(r.value) for r in records if marker in r.value)
        if doc["type"] == "llm_tokens"
    ]
    for doc in tokens[:CONFLICTS]:
        doc["data"]["tokens"] += 1
        records.append(Record(doc["subject"].encode(), json.dumps(doc).encode()))
    moment = late_time(now, allowed_lateness)
    if moment is not None:
        for i in range(LATE):
            account = f"{account_prefix}-{i:04d}"
            data = {"endpoint": "/v1/search", "status": 200}
            event = cloud_event(f"{account_prefix}-late-{i}", account, "api_calls", moment, data)
            records.append(Record(account.encode(), json.dumps(event).encode()))
    return records


def _ours(positions: Positions) -> dict[str, list[int]]:
    return {"p": [p for p, _ in positions], "o": [o for _, o in positions]}


def read_story(
    settings: Settings, *, topic: str, positions: Positions, account_prefix: str, accounts: int
) -> Story:
    """What the job's PostgreSQL outputs record of the records at `positions` of `topic`.

    Their figures are found by their accounts, which all start with `account_prefix`.
    """
    join = (
        " JOIN unnest(%(p)s::int[], %(o)s::bigint[]) AS ours(p, o)"
        " ON t.source_partition = ours.p AND t.source_offset = ours.o"
        " WHERE t.source_topic = %(topic)s"
    )
    params = {**_ours(positions), "topic": topic, "prefix": account_prefix}
    with psycopg.connect(settings.postgres.conninfo, row_factory=dict_row) as conn:
        logged = conn.execute(
            "SELECT t.severity, t.reason_code,"
            " count(DISTINCT (t.source_partition, t.source_offset)) AS records"
            f" FROM rejected_events t{join} GROUP BY 1, 2 ORDER BY 3 DESC, 2",
            params,
        ).fetchall()
        late = conn.execute(
            f"SELECT t.period_start, count(*) AS records FROM late_events t{join}"
            " GROUP BY 1 ORDER BY 1",
            params,
        ).fetchall()
        figures = conn.execute(
            "SELECT count(*) AS figures, coalesce(sum(event_count), 0) AS events"
            " FROM usage_aggregates WHERE starts_with(account_id, %(prefix)s)",
            params,
        ).fetchone()
    conflict = ReasonCode.DUPLICATE_ID_CONFLICT.value
    errors = [r for r in logged if r["severity"] == "error"]
    return Story(
        produced=len(positions),
        accounts=accounts,
        counted=int(figures["events"]) if figures else 0,
        figures=int(figures["figures"]) if figures else 0,
        warnings={r["reason_code"]: r["records"] for r in logged if r["severity"] == "warning"},
        conflicts=sum(r["records"] for r in errors if r["reason_code"] == conflict),
        rejected={r["reason_code"]: r["records"] for r in errors if r["reason_code"] != conflict},
        late={r["period_start"]: r["records"] for r in late},
    )


def meter_summary(settings: Settings, account_prefix: str) -> list[dict[str, Any]]:
    """The run's figures summed up per meter, period and segment."""
    with psycopg.connect(settings.postgres.conninfo, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT meter, period_start, dimensions, aggregation, count(*) AS accounts,"
            " sum(event_count) AS events FROM usage_aggregates"
            " WHERE starts_with(account_id, %s) GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3",
            (account_prefix,),
        ).fetchall()


def _codes(counts: dict[str, int]) -> str:
    return ", ".join(f"{code} {n:,}" for code, n in counts.items())


#: Lines the demo prints fit this many columns (a terminal's default; what a pipe gets).
WIDTH = 80


def story_lines(story: Story, *, account_prefix: str, since: datetime, ms: str) -> list[str]:
    """The story as lines of at most `WIDTH` characters: the fates, then what to read next.

    `ms` is how the reader runs the CLI (e.g. `.venv/bin/meterstream`).
    """
    n = len(f"{story.produced:,}")
    indent = " " * (n + 4)

    def fate(count: int, text: str) -> list[str]:
        return textwrap.wrap(
            f"  {count:>{n},}  {text}",
            WIDTH,
            subsequent_indent=indent,
            break_on_hyphens=False,
            break_long_words=False,
        )

    lines = [f"What happened to the {story.produced:,} sample records"]
    lines += fate(
        story.counted,
        f"counted in {story.figures:,} figures of {story.accounts} accounts (usage_aggregates)",
    )
    if story.warnings:
        lines += [f"{indent}of which with a warning: {_codes(story.warnings)}"]
    lines += fate(story.ignored, "ignored: repeats of an event already received, same content")
    lines += fate(story.conflicts, "conflicts: an id again with other content, not counted")
    rejected = sum(story.rejected.values())
    lines += fate(rejected, "rejected" + (f": {_codes(story.rejected)}" if rejected else ""))
    late = ", ".join(f"{period_label(p)} {c:,}" for p, c in story.late.items())
    lines += fate(
        sum(story.late.values()),
        "late: after their period closed, not counted" + (f" ({late})" if late else ""),
    )
    lines += [
        "Where to look next",
        f"  {ms} aggregates --account {account_prefix}",
        f'  {ms} rejections --since "{since:%Y-%m-%d %H:%M:%S}"',
    ]
    lines += [f"  {ms} recalculate --period {period_label(p)} --dry-run" for p in story.late]
    lines += ["  docs/sql.md: the tables behind these figures, and queries to start from"]
    return lines


def run_demo(
    settings: Settings,
    console: Console,
    *,
    events: int,
    ms: str = ".venv/bin/meterstream",
    start_stack: Callable[[], None] | None = None,
) -> int:
    """Produce `events` new sample events, run the job over the raw topic, tell the story.

    Returns the job's exit code (0 when all went well).
    """
    if start_stack is not None:
        start_stack()
    run = uuid.uuid4().hex[:4]
    prefix = f"demo-{run}"
    since = datetime.now(UTC).replace(microsecond=0)
    lateness = timedelta(hours=settings.flink.allowed_lateness_hours)
    records = demo_records(events, prefix, since, lateness)
    topic = settings.kafka.topics.raw
    positions: Positions = []
    produce(settings, topic, records, positions)
    console.print(
        f"produced {len(positions):,} sample records for accounts {prefix}-0000 to"
        f" {prefix}-{ACCOUNTS - 1:04d}\nrunning the job over {topic} ...",
        highlight=False,
    )
    checkpoint_dir = settings.stack_dir / "checkpoints" / f"demo-{run}"
    options = JobOptions(bounded=True, job_name="meterstream-demo", checkpoint_dir=checkpoint_dir)
    code = subprocess.call(options.argv())
    if code != 0:
        return code
    summary = compact_table(
        "meter",
        "period",
        "segment",
        "aggregation",
        "#accounts",
        "#events",
        title="Figures per meter and segment",
    )
    for row in meter_summary(settings, prefix):
        summary.add_row(
            row["meter"],
            period_label(row["period_start"]),
            segment_label(row["dimensions"]),
            row["aggregation"],
            str(row["accounts"]),
            f"{row['events']:,}",
        )
    console.print(summary)
    first = f"{prefix}-0000"
    console.print(
        figures_table(
            usage_aggregates(settings, first), with_account=False, title=f"The figures of {first}"
        )
    )
    story = read_story(
        settings, topic=topic, positions=positions, account_prefix=prefix, accounts=ACCOUNTS
    )
    for text in story_lines(story, account_prefix=prefix, since=since, ms=ms):
        console.print(text, highlight=False, markup=False)
    return 0
