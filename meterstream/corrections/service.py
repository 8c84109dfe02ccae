"""Recording corrections: void (one event, or a meter's events in a time range) and amend.

Each request is checked against the audit archive (was the event counted?) and the earlier
corrections (nothing after a void), then recorded in one PostgreSQL transaction: a
`corrections` row and an outbox row per event, and one `audit_trail` row. After the commit the
outbox is published to Kafka (`outbox.publish_pending`); if Kafka does not take it, the rows
wait there and are retried. The CLI and the API both call these functions.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from meterstream.archive import ArchiveError, archive_root, check_owner, stack_id
from meterstream.config import Settings
from meterstream.corrections import archived
from meterstream.corrections.model import (
    Action,
    ArchivedEvent,
    Correction,
    CorrectionError,
    Refusal,
    account_time_zone,
    applies_in_stream,
    epoch_ms,
)
from meterstream.corrections.outbox import CORRECTION_COLUMNS, correction_of, publish_pending
from meterstream.events import parse_envelope
from meterstream.meters.registry import load_registry
from meterstream.rules.periods import period_start
from meterstream.rules.reasons import Rejection
from meterstream.rules.validate import Validator, ValidEvent

#: Who made a correction when it came from the command line.
OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks: an API token of an organisation, or the operator (CLI, any account)."""

    who: str = OPERATOR
    org_id: str | None = None


@dataclass(frozen=True, slots=True)
class Amendment:
    """The new content of an amended event, as the Python rules checked it."""

    payload: str
    event: ValidEvent


@dataclass(slots=True)
class CorrectionResult:
    """What one request recorded, and whether Kafka has it yet."""

    request_id: uuid.UUID
    corrections: list[Correction] = field(default_factory=list)
    #: Events of a range that were voided already, or late (never counted): left alone.
    skipped_voided: int = 0
    skipped_late: int = 0
    published: bool = False
    publish_error: str = ""

    def describe(self) -> dict[str, Any]:
        """JSON-ready, as the API answers and `--format json` prints."""
        return {
            "request_id": str(self.request_id),
            "corrections": [c.describe() for c in self.corrections],
            "skipped_voided": self.skipped_voided,
            "skipped_late": self.skipped_late,
            "published": self.published,
            "publish_error": self.publish_error or None,
        }


@functools.cache
def _validator(schemas_dir: Path) -> Validator:
    return Validator(load_registry(schemas_dir))


def _archive(settings: Settings) -> Path:
    root = archive_root(settings)
    if not root.is_dir():
        msg = (
            f"there is no audit archive at {root}: corrections need it to know which events "
            "were counted (the aggregation job writes it)"
        )
        raise CorrectionError(Refusal.NO_ARCHIVE, msg)
    try:
        check_owner(root, stack_id(settings))
    except ArchiveError as exc:
        raise CorrectionError(Refusal.NO_ARCHIVE, str(exc)) from exc
    return root


def _not_erased(settings: Settings, account: str) -> None:
    from meterstream.corrections.erasure import erased  # noqa: PLC0415

    with psycopg.connect(settings.postgres.conninfo) as conn:
        row = erased(conn, account)
    if row is not None:
        msg = (
            f"account {account!r} was erased on {row['last_erased_at']:%Y-%m-%d}: its events "
            "are gone, so they cannot be corrected"
        )
        raise CorrectionError(Refusal.ACCOUNT_ERASED, msg)


def _not_in_archive(settings: Settings, what: str) -> CorrectionError:
    seconds = settings.flink.checkpoint_interval_ms / 1000
    return CorrectionError(
        Refusal.NOT_COUNTED,
        f"{what} is not in the audit archive: it was never accepted, or it arrived moments ago "
        f"(the archive's files are committed at each checkpoint, every {seconds:g} s after "
        "arrival: try again shortly)",
    )


def void_event(
    settings: Settings,
    actor: Actor,
    account: str,
    event_id: str,
    reason: str,
    *,
    period: date | None = None,
) -> CorrectionResult:
    """Void one counted event, by account and event id (`period`: only look there).

    Raises:
        CorrectionError: the event was not counted, is voided already, or the account is not
            the actor's.
    """
    _not_erased(settings, account)
    root = _archive(settings)
    days = archived.period_days(period) if period else None
    keys = archived.arrivals_of_event(root, account, event_id, days)
    if not keys:
        raise _not_in_archive(settings, f"event {event_id!r} of account {account!r}")
    counted = [ka.first for ka in keys.values() if ka.first.event_id == event_id]
    if not counted:
        ka = next(iter(keys.values()))
        msg = (
            f"event {event_id!r} of account {account!r} was not counted: its idempotency key "
            f"{ka.dedup_key!r} arrived first as event {ka.first.event_id!r}, and this one was a "
            "repeat (DUPLICATE_ID_CONFLICT or a retry)"
        )
        raise CorrectionError(Refusal.NOT_COUNTED, msg)
    return _record(settings, actor, account, [(e, None) for e in counted], reason=reason)


def void_range(
    settings: Settings,
    actor: Actor,
    account: str,
    *,
    meter: str,
    start: datetime,
    end: datetime,
    reason: str,
) -> CorrectionResult:
    """Void every counted event of the account's `meter` with event time in [start, end).

    The range is resolved now, to the events counted so far: events sent later with times in
    it are counted. Events voided already, or late, are skipped.

    Raises:
        CorrectionError: no counted event in the range, a bad range, or not the actor's account.
    """
    if start.tzinfo is None or end.tzinfo is None or end <= start:
        msg = "a range needs a start before its end, both with a UTC offset"
        raise CorrectionError(Refusal.BAD_REQUEST, msg)
    _not_erased(settings, account)
    root = _archive(settings)
    start_ms, end_ms = epoch_ms(start.astimezone(UTC)), epoch_ms(end.astimezone(UTC))
    with psycopg.connect(settings.postgres.conninfo) as conn:
        # Keys amended into the range (an amend may move an id-keyed event's time).
        amended = {
            row[0]
            for row in conn.execute(
                "SELECT dedup_key FROM effective_corrections WHERE account_id = %s AND meter = %s"
                " AND action = 'amend' AND new_event_time_ms >= %s AND new_event_time_ms < %s",
                (account, meter, start_ms, end_ms),
            )
        }
    keys = archived.arrivals_in_range(
        root, account, meter=meter, start_ms=start_ms, end_ms=end_ms, extra_keys=amended
    )
    chosen = [ka.first for ka in keys.values() if ka.first.meter == meter]
    return _record(
        settings,
        actor,
        account,
        [(e, None) for e in chosen],
        reason=reason,
        in_range=(start_ms, end_ms),
    )


def amend_event(
    settings: Settings, actor: Actor, payload: bytes | str, reason: str
) -> CorrectionResult:
    """Replace a counted event's content by `payload`, a full CloudEvent with the same key.

    The new content must pass the meter's rules as if it had arrived with the original, keep
    the idempotency key and the meter, and stay in the same billing period (the account's time
    zone). To change any of those, void the event and send a new one.

    Raises:
        CorrectionError: INVALID_AMENDMENT for content that breaks one of these rules;
            NOT_COUNTED, ALREADY_VOIDED as for a void.
    """
    text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else payload
    envelope = parse_envelope(payload)
    if isinstance(envelope, Rejection):
        msg = f"the new content is not a usable event: {envelope.code}: {envelope.detail}"
        raise CorrectionError(Refusal.INVALID_AMENDMENT, msg)
    validator = _validator(settings.schemas_dir)
    # First at its own time (always inside the time window): the key it would be counted under.
    first_check = validator.validate_envelope(envelope, envelope.event_time)
    if isinstance(first_check, Rejection):
        msg = f"the new content is rejected by the rules: {first_check.code}: {first_check.detail}"
        raise CorrectionError(Refusal.INVALID_AMENDMENT, msg)
    account, key = first_check.account_id, first_check.dedup_key
    _not_erased(settings, account)
    root = _archive(settings)
    days = archived.period_days(period_start(first_check.event_time))
    keys = archived.arrivals_of_keys(root, account, {key}, days)
    if key not in keys:
        raise _not_in_archive(settings, f"the key {key!r} of account {account!r}")
    original = keys[key].first
    new = validator.validate_envelope(envelope, original.arrived_at)
    if isinstance(new, Rejection):
        msg = (
            f"the new content is rejected by the rules as if it had arrived with the original "
            f"({original.arrived_at.isoformat()}): {new.code}: {new.detail}"
        )
        raise CorrectionError(Refusal.INVALID_AMENDMENT, msg)
    if new.meter != original.meter:
        msg = (
            f"an amend keeps the meter ({original.meter}), this is {new.meter}: void the event "
            "and send a new one instead"
        )
        raise CorrectionError(Refusal.INVALID_AMENDMENT, msg)

    def same_period(time_zone: str) -> None:
        moved = period_start(new.event_time, time_zone)
        if moved != original.period_start:
            msg = (
                f"the new time {new.event_time.isoformat()} is in the billing period {moved:%Y-%m}"
                f" ({time_zone}), the event was counted in {original.period_start:%Y-%m}: void "
                "it and send a new event instead"
            )
            raise CorrectionError(Refusal.INVALID_AMENDMENT, msg)

    return _record(
        settings,
        actor,
        account,
        [(original, Amendment(text, new))],
        reason=reason,
        check_period=same_period,
    )


def _record(
    settings: Settings,
    actor: Actor,
    account: str,
    targets: list[tuple[ArchivedEvent, Amendment | None]],
    *,
    reason: str,
    in_range: tuple[int, int] | None = None,
    check_period: Callable[[str], None] | None = None,
) -> CorrectionResult:
    """Check the targets against late events and earlier corrections; record what remains."""
    if not reason.strip():
        raise CorrectionError(Refusal.BAD_REQUEST, "give a reason (it is kept in the audit trail)")
    result = CorrectionResult(uuid.uuid4())
    with (
        psycopg.connect(settings.postgres.conninfo, row_factory=dict_row) as conn,
        conn.transaction(),
    ):
        # One correction of an account at a time: two voids of one event cannot both pass.
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"corrections:{account}",)
        )
        owner = _owner(conn, account, actor)
        tz = account_time_zone(
            _scalar(
                conn, "SELECT time_zone FROM account_time_zones WHERE account_id = %s", (account,)
            )
        )
        if check_period is not None:
            check_period(tz)
        kept = _still_counted(conn, account, targets, result, in_range)
        lateness = _scalar(conn, "SELECT allowed_lateness FROM billing_config", ())
        ttl = timedelta(days=settings.flink.dedup_ttl_days)
        now = datetime.now(UTC)
        for event, amendment in kept:
            in_stream = applies_in_stream(
                event.period_start,
                tz,
                lateness or timedelta(0),
                arrived_at=event.arrived_at,
                now=now,
                dedup_ttl=ttl,
            )
            correction = _correction(result.request_id, account, event, amendment, in_stream)
            _insert(conn, correction, owner=owner, amendment=amendment, reason=reason, actor=actor)
            result.corrections.append(correction)
        _audit(conn, result, owner=owner, actor=actor, account=account, reason=reason)
    # Recorded: from here on nothing may fail the request. What Kafka does not take now stays
    # in the outbox and is retried (the API's relay, `meterstream corrections publish`).
    try:
        published = publish_pending(settings)
        mine = {c.correction_id for c in result.corrections}
        result.published = mine <= set(published.sent) or not _in_outbox(settings, mine)
        result.publish_error = published.error
    except Exception as exc:  # noqa: BLE001 - PostgreSQL or Kafka gone since the commit
        result.publish_error = f"{type(exc).__name__}: {exc}"
    return result


def _still_counted(
    conn: psycopg.Connection[Any],
    account: str,
    targets: list[tuple[ArchivedEvent, Amendment | None]],
    result: CorrectionResult,
    in_range: tuple[int, int] | None,
) -> list[tuple[ArchivedEvent, Amendment | None]]:
    """The targets that are counted now: not late, not voided (in a range: others skipped)."""
    late = _late_positions(conn, [e for e, _ in targets])
    last = _last_actions(conn, account, [e.dedup_key for e, _ in targets])
    kept: list[tuple[ArchivedEvent, Amendment | None]] = []
    for event, amendment in targets:
        action, amended_ms = last.get(event.dedup_key, ("", None))
        if in_range and not in_range[0] <= (amended_ms or event.event_time_ms) < in_range[1]:
            continue
        if (event.source_topic, event.source_partition, event.source_offset) in late:
            if in_range:
                result.skipped_late += 1
                continue
            msg = (
                f"event {event.event_id!r} of account {account!r} was not counted: it arrived "
                f"after its period {event.period_start:%Y-%m} had closed (it is in late_events)"
            )
            raise CorrectionError(Refusal.NOT_COUNTED, msg)
        if action == Action.VOID:
            if in_range:
                result.skipped_voided += 1
                continue
            msg = f"event {event.event_id!r} of account {account!r} is voided already"
            raise CorrectionError(Refusal.ALREADY_VOIDED, msg)
        kept.append((event, amendment))
    if not kept:
        msg = f"no counted event of account {account!r} to correct" + (
            f" in that range ({result.skipped_voided} voided already, {result.skipped_late} late)"
            if in_range
            else ""
        )
        raise CorrectionError(Refusal.NOT_COUNTED, msg)
    return kept


def _correction(
    request_id: uuid.UUID,
    account: str,
    event: ArchivedEvent,
    amendment: Amendment | None,
    in_stream: bool,
) -> Correction:
    new = amendment.event if amendment else None
    return Correction(
        correction_id=uuid.uuid4(),
        request_id=request_id,
        account_id=account,
        action=Action.AMEND if amendment else Action.VOID,
        dedup_key=event.dedup_key,
        event_id=event.event_id,
        meter=event.meter,
        aggregation=event.aggregation,
        period_start=event.period_start,
        dimensions=event.dimensions,
        in_stream=in_stream,
        new_dimensions=new.dimensions if new else None,
        new_quantity=new.quantity if new else None,
        new_unique_value=new.unique_value if new else None,
        new_event_time_ms=epoch_ms(new.event_time) if new else None,
        new_fingerprint=new.fingerprint if new else None,
    )


def _audit(
    conn: psycopg.Connection[Any],
    result: CorrectionResult,
    *,
    owner: str | None,
    actor: Actor,
    account: str,
    reason: str,
) -> None:
    """The request's audit row: what, in words without ids; the correction ids in details."""
    corrections = result.corrections
    action = corrections[0].action.value
    meters = ", ".join(sorted({c.meter for c in corrections}))
    periods = sorted({f"{c.period_start:%Y-%m}" for c in corrections})
    noun = "event" if len(corrections) == 1 else "events"
    what = f"{action} of {len(corrections)} counted {meters} {noun} ({', '.join(periods)})"
    conn.execute(
        "INSERT INTO audit_trail (org_id, actor, action, account_id, what, reason, details)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            owner,
            actor.who,
            action,
            account,
            what,
            reason,
            Jsonb(
                {
                    "request_id": str(result.request_id),
                    "corrections": len(corrections),
                    "correction_ids": [str(c.correction_id) for c in corrections],
                    "in_stream": sum(c.in_stream for c in corrections),
                    "skipped_voided": result.skipped_voided,
                    "skipped_late": result.skipped_late,
                }
            ),
        ),
    )


def _scalar(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> Any:
    row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    return next(iter(row.values())) if row else None


def _owner(conn: psycopg.Connection[Any], account: str, actor: Actor) -> str | None:
    owner = _scalar(conn, "SELECT org_id FROM accounts WHERE account_id = %s", (account,))
    if actor.org_id is not None and owner != actor.org_id:
        msg = f"no account {account!r} in your organisation"
        raise CorrectionError(Refusal.NOT_FOUND, msg)
    return owner


def _late_positions(
    conn: psycopg.Connection[Any], events: list[ArchivedEvent]
) -> set[tuple[str, int, int]]:
    """The Kafka positions among `events`' that the job recorded as late."""
    rows = conn.execute(
        "SELECT source_topic, source_partition, source_offset FROM late_events"
        " WHERE (source_topic, source_partition, source_offset) IN"
        " (SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[]))",
        (
            [e.source_topic for e in events],
            [e.source_partition for e in events],
            [e.source_offset for e in events],
        ),
    ).fetchall()
    return {(r["source_topic"], r["source_partition"], r["source_offset"]) for r in rows}


def _last_actions(
    conn: psycopg.Connection[Any], account: str, keys: list[str]
) -> dict[str, tuple[str, int | None]]:
    """Each key's correction in force: (action, its event time in ms if amended)."""
    rows = conn.execute(
        "SELECT dedup_key, action, new_event_time_ms FROM effective_corrections"
        " WHERE account_id = %s AND dedup_key = ANY(%s)",
        (account, keys),
    ).fetchall()
    return {r["dedup_key"]: (r["action"], r["new_event_time_ms"]) for r in rows}


def _insert(
    conn: psycopg.Connection[Any],
    correction: Correction,
    *,
    owner: str | None,
    amendment: Amendment | None,
    reason: str,
    actor: Actor,
) -> None:
    """The correction's row and its outbox row."""
    row = conn.execute(
        "INSERT INTO corrections (correction_id, request_id, org_id, account_id, action,"
        " dedup_key, event_id, meter, aggregation, period_start, dimensions, new_payload,"
        " new_dimensions, new_quantity, new_unique_value, new_event_time_ms, new_fingerprint,"
        " reason, requested_by, in_stream)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " RETURNING seq",
        (
            correction.correction_id,
            correction.request_id,
            owner,
            correction.account_id,
            correction.action.value,
            correction.dedup_key,
            correction.event_id,
            correction.meter,
            correction.aggregation,
            correction.period_start,
            correction.dimensions,
            amendment.payload if amendment else None,
            correction.new_dimensions,
            correction.new_quantity,
            correction.new_unique_value,
            correction.new_event_time_ms,
            correction.new_fingerprint,
            reason,
            actor.who,
            correction.in_stream,
        ),
    ).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns the row
    conn.execute(
        "INSERT INTO correction_outbox (correction_id, seq) VALUES (%s, %s)",
        (correction.correction_id, row["seq"]),
    )


def _in_outbox(settings: Settings, ids: set[uuid.UUID]) -> bool:
    with psycopg.connect(settings.postgres.conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM correction_outbox WHERE correction_id = ANY(%s)", (list(ids),)
        ).fetchone()
    return bool(row and row[0])


def list_corrections(
    settings: Settings,
    *,
    org_id: str | None = None,
    account: str | None = None,
    after_seq: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Corrections in the order they were made (an organisation's only, if given)."""
    with psycopg.connect(settings.postgres.conninfo, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT c.seq, c.reason, c.requested_by, c.created_at, c.erased_at,"
            f" {CORRECTION_COLUMNS} FROM corrections c"
            " WHERE (%(org)s::text IS NULL OR c.org_id = %(org)s)"
            " AND (%(account)s::text IS NULL OR c.account_id = %(account)s)"
            " AND c.seq > coalesce(%(after)s, 0) ORDER BY c.seq LIMIT %(limit)s",
            {"org": org_id, "account": account, "after": after_seq, "limit": limit},
        ).fetchall()
    out = []
    for row in rows:
        item = correction_of(row).describe()
        item.update(
            seq=row["seq"],
            reason=row["reason"],
            requested_by=row["requested_by"],
            created_at=row["created_at"].isoformat(),
            erased=row["erased_at"] is not None,
        )
        out.append(item)
    return out


def audit_entries(
    settings: Settings,
    *,
    org_id: str | None = None,
    account: str | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The audit trail in order (an organisation's rows only, if given)."""
    with psycopg.connect(settings.postgres.conninfo, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT audit_id, org_id, actor, action, account_id, what, reason, details, created_at"
            " FROM audit_trail WHERE (%(org)s::text IS NULL OR org_id = %(org)s)"
            " AND (%(account)s::text IS NULL OR account_id = %(account)s)"
            " AND audit_id > coalesce(%(after)s, 0) ORDER BY audit_id LIMIT %(limit)s",
            {"org": org_id, "account": account, "after": after_id, "limit": limit},
        ).fetchall()
    return [{**row, "created_at": row["created_at"].isoformat()} for row in rows]
