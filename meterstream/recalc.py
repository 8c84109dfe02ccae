"""Recalculation of a billing period from the audit archive: run the batch job, apply the result.

`recalculate` takes a PostgreSQL advisory lock (one run at a time), empties the staging table
for its scope, runs `jobs/recalculate_period.py` (Flink, batch) into it, then replaces the
scope's rows of `usage_aggregates` in one transaction, recording every difference in
`aggregate_changes` and the run in `recalculation_runs`. Rows whose figures are equal are not
touched, so a second run changes nothing. The corrections in force (docs/corrections.md) are
applied: the batch job voids and amends the counted events, and the events they take out of a
figure are not counted as losses.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from meterstream.archive import ArchiveError, check_owner, committed_files, stack_id
from meterstream.config import PROJECT_ROOT, Settings
from meterstream.errors import MeterstreamError
from meterstream.flink.launch import FAILURE_MARKER, root_cause
from meterstream.meters.model import Aggregation
from meterstream.meters.registry import MeterRegistry, load_registry
from meterstream.rules.validate import DEDUP_WINDOW
from meterstream.stack.flink import settings_env

JOB = PROJECT_ROOT / "jobs" / "recalculate_period.py"
STAGING = "usage_aggregates_recalc"
#: The batch job's progress is reported this often (seconds).
PROGRESS_S = 15
#: pg_advisory_lock key of recalculation (`meterstream migrate` uses 72656).
LOCK_KEY = 72657
_PERIOD = re.compile(r"(\d{4})-(\d{2})")
#: Billing time zones are at most 14 h from UTC, and an event may be 5 min ahead of its
#: arrival: one day on either side of a month holds every arrival of its events' first day.
ZONE_MARGIN = timedelta(days=1)


class RecalculationError(MeterstreamError):
    """A recalculation could not run or was refused."""


def parse_period(text: str) -> date:
    """The first day of the billing month `YYYY-MM`.

    >>> parse_period("2026-10")
    datetime.date(2026, 10, 1)
    """
    match = _PERIOD.fullmatch(text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:  # noqa: PLR2004 - months
        msg = f"period {text!r} is not a month in the form YYYY-MM (e.g. 2026-10)"
        raise RecalculationError(msg)
    return date(int(match.group(1)), int(match.group(2)), 1)


def next_month(day: date) -> date:
    """The first day of the month after `day`'s.

    >>> next_month(date(2026, 12, 1))
    datetime.date(2027, 1, 1)
    """
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def arrival_days(period_start: date) -> tuple[date, date]:
    """The arrival days (`dt` partitions) recalculating `period_start`'s month reads.

    An accepted event arrives at most 35 days after its event time (TIMESTAMP_TOO_OLD), and
    the streaming job remembers an idempotency key for 35 days: an arrival more than that before
    the period cannot decide which of the period's events came first.

    >>> arrival_days(date(2026, 10, 1))
    (datetime.date(2026, 8, 26), datetime.date(2026, 12, 7))
    """
    window = DEDUP_WINDOW + ZONE_MARGIN
    return period_start - window, next_month(period_start) + window


@dataclass(frozen=True, slots=True)
class RecalcScope:
    """What one recalculation replaces: a billing month, for one account or all of them."""

    period_start: date
    account_id: str | None = None

    def describe(self) -> str:
        """E.g. `2026-10, account acct-42` or `2026-10, all accounts`."""
        who = f"account {self.account_id}" if self.account_id else "all accounts"
        return f"{self.period_start:%Y-%m}, {who}"


@dataclass(frozen=True, slots=True)
class ArchiveScope:
    """What a recalculation reads: the arrival days' committed files and rows.

    `kinds`: each archived meter's aggregation(s), as its rows carry them.
    """

    files: int
    rows: int
    kinds: dict[str, frozenset[str]]

    def retired(self, registry: MeterRegistry) -> dict[str, Aggregation]:
        """The archived meters that `registry` no longer defines, with their aggregation.

        They are recalculated with the aggregation their rows carry, as the stream counted them.

        Raises:
            RecalculationError: such a meter was archived with several aggregations.
        """
        out: dict[str, Aggregation] = {}
        for meter, kinds in sorted(self.kinds.items()):
            if registry.current(meter) is not None:
                continue
            if len(kinds) != 1:
                msg = (
                    f"meter {meter!r} is no longer in schemas/ and its archived events carry "
                    f"several aggregations ({', '.join(sorted(kinds))}): restore its schema "
                    "to recalculate this period"
                )
                raise RecalculationError(msg)
            out[meter] = Aggregation(next(iter(kinds)))
        return out


def scan_archive(archive_dir: Path, period_start: date, account: str | None = None) -> ArchiveScope:
    """Read the meter and aggregation columns of the period's arrival days (`arrival_days`)."""
    import pyarrow.compute as pc  # noqa: PLC0415 - keep `meterstream --help` fast
    import pyarrow.parquet as pq  # noqa: PLC0415

    first, last = (d.isoformat() for d in arrival_days(period_start))
    files = [
        f
        for f in committed_files(archive_dir)
        if first <= f.parent.name.removeprefix("dt=") <= last
    ]
    rows, kinds = 0, defaultdict(set)
    for path in files:
        table = pq.read_table(path, columns=["account_id", "meter", "aggregation"])
        if account is not None:
            table = table.filter(pc.equal(table["account_id"], account))
        rows += table.num_rows
        for pair in table.group_by(["meter", "aggregation"]).aggregate([]).to_pylist():
            kinds[pair["meter"]].add(pair["aggregation"])
    return ArchiveScope(len(files), rows, {m: frozenset(k) for m, k in kinds.items()})


def retired_note(retired: dict[str, Aggregation]) -> str:
    """One line naming the meters recalculated from their archived definition."""
    named = ", ".join(f"{meter} ({kind.value})" for meter, kind in retired.items())
    return (
        f"note: not in schemas/ any more, recalculated with the aggregation their events "
        f"were archived with: {named}"
    )


@dataclass(frozen=True, slots=True)
class Change:
    """One usage_aggregates row a recalculation adds, changes or removes."""

    account_id: str
    meter: str
    dimensions: str
    change: str
    old_quantity: Any
    new_quantity: Any
    old_event_count: int | None
    new_event_count: int | None


@dataclass(frozen=True, slots=True)
class RecalcResult:
    """The outcome: the run's id, its scope, and each row it added, changed or removed."""

    run_id: uuid.UUID
    scope: RecalcScope
    applied: bool
    changes: list[Change] = field(default_factory=list)
    #: Meters not in schemas/ any more, recalculated with their archived aggregation.
    retired: dict[str, Aggregation] = field(default_factory=dict)

    def count(self, kind: str) -> int:
        """How many rows were `added`, `changed` or `removed`."""
        return sum(1 for c in self.changes if c.change == kind)


_SCOPE = "period_start = %(period)s AND (%(account)s::text IS NULL OR account_id = %(account)s)"
#: Erased accounts' figures are left as the erasure left them: their events are gone.
_NOT_ERASED = (
    "account_id NOT IN (SELECT pseudonym FROM erased_accounts UNION ALL"
    " SELECT kept_account_id FROM erased_accounts WHERE kept_account_id IS NOT NULL)"
)
#: The columns a recalculation compares: any difference is a change.
_FIGURES = (
    "aggregation",
    "quantity",
    "event_count",
    "first_event_at",
    "last_event_at",
    "last_arrived_at",
)
_KEY = ("account_id", "meter", "period_start", "dimensions")

# The differences between the period's current rows (locked) and the recalculated ones.
DIFF = f"""
CREATE TEMPORARY TABLE recalc_diff ON COMMIT DROP AS
WITH old AS (
  SELECT * FROM usage_aggregates WHERE {_SCOPE} AND {_NOT_ERASED} FOR UPDATE
), new AS (
  SELECT * FROM {STAGING} WHERE {_SCOPE} AND {_NOT_ERASED}
)
SELECT coalesce(n.account_id, o.account_id) AS account_id,
       coalesce(n.meter, o.meter) AS meter,
       coalesce(n.period_start, o.period_start) AS period_start,
       coalesce(n.dimensions, o.dimensions) AS dimensions,
       CASE WHEN o.account_id IS NULL THEN 'added'
            WHEN n.account_id IS NULL THEN 'removed'
            ELSE 'changed' END AS change,
       coalesce(n.aggregation, o.aggregation) AS aggregation,
       o.quantity AS old_quantity, n.quantity AS new_quantity,
       o.event_count AS old_event_count, n.event_count AS new_event_count,
       o.last_arrived_at AS old_last_arrived_at, n.last_arrived_at AS new_last_arrived_at,
       n.first_event_at, n.last_event_at
FROM old AS o FULL JOIN new AS n
  ON (o.account_id, o.meter, o.period_start, o.dimensions)
   = (n.account_id, n.meter, n.period_start, n.dimensions)
WHERE ({", ".join(f"o.{c}" for c in _FIGURES)})
      IS DISTINCT FROM ({", ".join(f"n.{c}" for c in _FIGURES)})
"""

_ON_KEY = " AND ".join(f"u.{c} = d.{c}" for c in _KEY)
REMOVE = f"""
DELETE FROM usage_aggregates AS u USING recalc_diff AS d
WHERE d.change = 'removed' AND {_ON_KEY}
"""
UPSERT = """
INSERT INTO usage_aggregates (account_id, meter, period_start, dimensions, aggregation, quantity,
                              event_count, first_event_at, last_event_at, last_arrived_at)
SELECT account_id, meter, period_start, dimensions, aggregation, new_quantity, new_event_count,
       first_event_at, last_event_at, new_last_arrived_at
FROM recalc_diff WHERE change <> 'removed'
ON CONFLICT (account_id, meter, period_start, dimensions) DO UPDATE SET
  aggregation = EXCLUDED.aggregation, quantity = EXCLUDED.quantity,
  event_count = EXCLUDED.event_count, first_event_at = EXCLUDED.first_event_at,
  last_event_at = EXCLUDED.last_event_at, last_arrived_at = EXCLUDED.last_arrived_at
"""
RECORD_RUN = """
INSERT INTO recalculation_runs (run_id, period_start, account_id, reason, archive_dir,
                                rows_added, rows_changed, rows_removed, started_at)
VALUES (%(run_id)s, %(period)s, %(account)s, %(reason)s, %(archive_dir)s,
        %(added)s, %(changed)s, %(removed)s, %(started_at)s)
"""
RECORD_CHANGES = """
INSERT INTO aggregate_changes (run_id, account_id, meter, period_start, dimensions, change,
                               aggregation, old_quantity, new_quantity, old_event_count,
                               new_event_count, old_last_arrived_at, new_last_arrived_at, reason)
SELECT %(run_id)s, account_id, meter, period_start, dimensions, change, aggregation,
       old_quantity, new_quantity, old_event_count, new_event_count, old_last_arrived_at,
       new_last_arrived_at, %(reason)s
FROM recalc_diff
"""
CLEAR_STAGING = f"DELETE FROM {STAGING} WHERE {_SCOPE}"


def _params(scope: RecalcScope) -> dict[str, Any]:
    return {"period": scope.period_start, "account": scope.account_id}


#: Per figure of the scope, how many counted events the corrections in force take out of it
#: (voided, or amended into another segment): a recalculation may count that many fewer.
CORRECTED_OUT = """
SELECT account_id, meter, dimensions, count(*) AS events
FROM effective_corrections
WHERE period_start = %(period)s AND (%(account)s::text IS NULL OR account_id = %(account)s)
  AND (action = 'void' OR new_dimensions IS DISTINCT FROM dimensions)
GROUP BY account_id, meter, dimensions
"""


def _losses(changes: list[Change], corrected_out: dict[tuple[str, str, str], int]) -> list[Change]:
    """Rows that would count fewer events than corrections explain.

    Such a row means the archive lacks events the figures counted.
    """
    return [
        c
        for c in changes
        if (c.new_event_count or 0)
        < (c.old_event_count or 0) - corrected_out.get((c.account_id, c.meter, c.dimensions), 0)
    ]


def apply_recalculation(
    conn: Any,
    scope: RecalcScope,
    *,
    run_id: uuid.UUID,
    reason: str,
    archive_dir: Path,
    started_at: datetime,
    dry_run: bool = False,
    force: bool = False,
) -> RecalcResult:
    """Replace the scope's usage_aggregates rows by the staged ones, in one transaction.

    `conn` is an autocommit psycopg connection with client-side binding (`ClientCursor`).

    Late events only ever add events to a figure, and corrections take out at most the events
    they void or move. A row that would lose more events (or vanish)
    means the archive misses some of what was counted (it was started after the period began,
    or files were removed), so the whole run is refused unless `force`.

    Raises:
        RecalculationError: a row would lose events and `force` is not set.
    """
    import psycopg  # noqa: PLC0415 - keep `meterstream --help` fast

    params = {**_params(scope), "run_id": run_id, "reason": reason}
    with conn.transaction():
        conn.execute(DIFF, params)
        rows = conn.execute(
            "SELECT account_id, meter, dimensions, change, old_quantity, new_quantity,"
            " old_event_count, new_event_count FROM recalc_diff"
            " ORDER BY account_id, meter, dimensions"
        ).fetchall()
        changes = [Change(*row) for row in rows]
        corrected_out = {
            (account, meter, dimensions): events
            for account, meter, dimensions, events in conn.execute(CORRECTED_OUT, params)
        }
        losses = _losses(changes, corrected_out)
        if losses and not force:
            shown = "\n  ".join(
                f"{c.account_id} {c.meter} {c.dimensions or '-'}: "
                f"{c.old_event_count} -> {c.new_event_count or 0} events"
                for c in losses[:10]
            )
            msg = (
                f"recalculating {scope.describe()} would remove counted events from "
                f"{len(losses)} rows; the archive does not hold everything that was counted "
                f"(nothing was changed; --force applies it anyway):\n  {shown}"
            )
            raise RecalculationError(msg)
        if dry_run:
            raise psycopg.Rollback
        conn.execute(REMOVE)
        conn.execute(UPSERT)
        conn.execute(
            RECORD_RUN,
            {
                **params,
                "archive_dir": str(archive_dir),
                "added": sum(c.change == "added" for c in changes),
                "changed": sum(c.change == "changed" for c in changes),
                "removed": sum(c.change == "removed" for c in changes),
                "started_at": started_at,
            },
        )
        conn.execute(RECORD_CHANGES, params)
        conn.execute(CLEAR_STAGING, params)
    return RecalcResult(run_id, scope, applied=not dry_run, changes=changes)


def _quiet(_line: str) -> None:
    pass


def _failure(log: Path) -> str:
    """The cause of a failed batch job, in one line, from its log."""
    text = log.read_text(errors="replace")
    for line in reversed(text.splitlines()):
        if line.startswith(FAILURE_MARKER):
            return line.removeprefix(FAILURE_MARKER).strip()
    return root_cause(text[-20_000:])


def run_batch_job(
    settings: Settings,
    scope: RecalcScope,
    archive_dir: Path,
    *,
    log: Path,
    timeout_s: float,
    say: Callable[[str], None] = _quiet,
) -> None:
    """Run jobs/recalculate_period.py for the scope into the staging table; raise on failure.

    Says how long it has run every `PROGRESS_S`. Interrupted (Ctrl-C), it stops the job first.
    """
    argv = [sys.executable, str(JOB), "--period", f"{scope.period_start:%Y-%m}"]
    argv += ["--archive-dir", str(archive_dir)]
    if scope.account_id:
        argv += ["--account", scope.account_id]
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            # The child loads the same settings (tests and callers may have changed them).
            env={**os.environ, **settings_env(settings)},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            while (code := proc.poll()) is None:
                elapsed = time.monotonic() - started
                if elapsed > timeout_s:
                    msg = (
                        f"the recalculation job did not finish within {timeout_s:.0f} s; see {log}"
                    )
                    raise RecalculationError(msg)
                time.sleep(0.5)
                if int(time.monotonic() - started) // PROGRESS_S > int(elapsed) // PROGRESS_S:
                    say(f"batch job running ({time.monotonic() - started:.0f} s; log {log})")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if code != 0:
        msg = f"the recalculation job failed: {_failure(log)} (exit {code}; log {log})"
        raise RecalculationError(msg)


def _refuse_erased(settings: Settings, account: str) -> None:
    """Refuse to recalculate an erased account: its events are no longer in the archive."""
    import psycopg  # noqa: PLC0415

    from meterstream.corrections.erasure import erased  # noqa: PLC0415

    with psycopg.connect(settings.postgres.conninfo) as conn:
        row = erased(conn, account)
    if row is not None:
        kept = {
            "keep": "are kept as they were",
            "pseudonymise": f"are kept under the pseudonym {row['pseudonym']}",
            "delete": "were deleted",
        }[row["figures"]]
        msg = (
            f"account {account} was erased on {row['last_erased_at']:%Y-%m-%d}: its events are "
            f"no longer in the audit archive, so its periods cannot be recalculated (its figures "
            f"{kept})"
        )
        raise RecalculationError(msg)


def recalculate(
    settings: Settings,
    scope: RecalcScope,
    *,
    archive_dir: Path,
    reason: str = "recalculation",
    dry_run: bool = False,
    force: bool = False,
    timeout_s: float = 3600,
    say: Callable[[str], None] = _quiet,
) -> RecalcResult:
    """Recalculate the scope from the archive and apply it (see the module docstring).

    `say` gets one line per phase (and the batch job's progress). Interrupted, it stops the
    batch job and changes nothing.

    Raises:
        RecalculationError: the archive is missing or another stack's, another recalculation
            runs, the job failed, or the result would remove counted events (without `force`).
    """
    import psycopg  # noqa: PLC0415 - keep `meterstream --help` fast

    if scope.account_id is not None:
        _refuse_erased(settings, scope.account_id)
    if not archive_dir.is_dir():
        msg = f"there is no audit archive at {archive_dir} (the job writes it; see --archive-dir)"
        raise RecalculationError(msg)
    try:
        check_owner(archive_dir, stack_id(settings))
    except ArchiveError as exc:
        raise RecalculationError(str(exc)) from exc
    archived = scan_archive(archive_dir, scope.period_start, scope.account_id)
    first, last = arrival_days(scope.period_start)
    say(f"archive: {archived.rows} events in {archived.files} files arrived {first} .. {last}")
    retired = archived.retired(load_registry(settings.schemas_dir))
    if retired:
        say(retired_note(retired))
    run_id = uuid.uuid4()
    started_at = datetime.now(UTC)
    log = settings.stack_dir / "logs" / "recalculate" / f"{run_id}.log"
    with psycopg.connect(settings.postgres.conninfo, autocommit=True) as lock:
        row = lock.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        if not row or not row[0]:
            msg = "another recalculation is running (PostgreSQL advisory lock held); try later"
            raise RecalculationError(msg)
        try:
            lock.execute(CLEAR_STAGING, _params(scope))
            say("batch job: first arrivals and figures into the staging table ...")
            run_batch_job(settings, scope, archive_dir, log=log, timeout_s=timeout_s, say=say)
            say("comparing with usage_aggregates ...")
            # Client-side binding: PostgreSQL takes no parameters in CREATE TABLE AS.
            with psycopg.connect(
                settings.postgres.conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor
            ) as conn:
                result = apply_recalculation(
                    conn,
                    scope,
                    run_id=run_id,
                    reason=reason,
                    archive_dir=archive_dir,
                    started_at=started_at,
                    dry_run=dry_run,
                    force=force,
                )
            return replace(result, retired=retired)
        finally:
            lock.execute(CLEAR_STAGING, _params(scope))
            lock.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
