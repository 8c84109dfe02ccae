"""Erasure of an account's personal data from every store meterstream owns (right to erasure).

One PostgreSQL transaction removes or pseudonymises everything that names the account: the
validation log, late events, upload rejections, quota counts, alert rules and notifications,
corrections (rows kept, personal fields dropped), the audit trail, and, by the
`erasure.figures` setting, its billing figures (kept, kept under a pseudonym, or deleted).
Then the audit archive's files are rewritten without the account's rows and sealed again
(`meterstream.archive.erase_rows`). Every erasure leaves audit rows with counts and no personal
data. The pseudonym is `erased-` and 20 hex digits of an HMAC of the account id, keyed by a
random secret of the database: the same account always gets the same pseudonym, and nothing
else can be learnt from it. Kafka's topics are not touched (docs/corrections.md).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from meterstream.archive import ArchiveErasure, archive_root, erase_rows
from meterstream.config import ERASURE_FIGURES, Settings
from meterstream.corrections.model import CorrectionError, Refusal
from meterstream.events import ACCOUNT_ID

#: The characters of an account id: the account's text is found only between other characters.
_ID_CHARS = "A-Za-z0-9._:@-"
PSEUDONYM = re.compile(r"erased-[0-9a-f]{20}")


def pseudonym(secret: str, account: str) -> str:
    """The erased account's pseudonym: the same for the same account and key, unlinkable without.

    >>> a = pseudonym("key", "acct-42")
    >>> bool(PSEUDONYM.fullmatch(a)), a == pseudonym("key", "acct-42"), a == pseudonym("k", "x")
    (True, True, False)
    """
    digest = hmac.new(secret.encode(), account.encode(), hashlib.sha256).hexdigest()
    return f"erased-{digest[:20]}"


def mention(account: str) -> str:
    r"""A regular expression (PostgreSQL's and Python's) for the account id as a whole word.

    The character before it is group 1; the one after is not consumed.

    >>> re.sub(mention("acct-4.2"), r"\1X", "acct-4.2,acct-4.2 acct-4.20 (acct-4.2)")
    'X,X acct-4.20 (X)'
    """
    return f"(^|[^{_ID_CHARS}]){re.escape(account)}(?=$|[^{_ID_CHARS}])"


@dataclass(slots=True)
class ErasureResult:
    """What an erasure did: its id, the pseudonym, and counts per store (no personal data)."""

    erasure_id: uuid.UUID
    pseudonym: str
    figures: str
    counts: dict[str, int] = field(default_factory=dict)
    archive: ArchiveErasure = field(default_factory=ArchiveErasure)
    #: Tables that still name the account afterwards (rows counted after the erasure began,
    #: or kept by the `keep` policy): run the erasure again once the account is quiet.
    remaining: dict[str, int] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-ready, as the API answers and the CLI prints."""
        return {
            "erasure_id": str(self.erasure_id),
            "pseudonym": self.pseudonym,
            "figures": self.figures,
            "counts": self.counts,
            "archive": {
                "files_checked": self.archive.files_checked,
                "files_rewritten": self.archive.files_rewritten,
                "rows_removed": self.archive.rows_removed,
                "in_progress_at_start": self.archive.in_progress_at_start,
                "still_in_progress": self.archive.still_in_progress,
            },
            "remaining": self.remaining,
        }


def secret(conn: psycopg.Connection[Any]) -> str:
    """The database's pseudonym key (migration 0011)."""
    row = conn.execute("SELECT secret FROM erasure_secret").fetchone()
    if row is None:
        msg = "erasure_secret is empty: run `meterstream migrate`"
        raise CorrectionError(Refusal.BAD_REQUEST, msg)
    return str(row["secret"] if isinstance(row, dict) else row[0])


def erased(conn: psycopg.Connection[Any], account: str) -> dict[str, Any] | None:
    """The erased_accounts row of `account` (an id, or a pseudonym), or None."""
    key = account if PSEUDONYM.fullmatch(account) else pseudonym(secret(conn), account)
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(
        "SELECT pseudonym, org_id, figures, first_erased_at, last_erased_at"
        " FROM erased_accounts WHERE pseudonym = %s OR kept_account_id = %s",
        (key, account),
    ).fetchone()


#: (store, statement): what the erasure does everywhere but the figures. Parameters: a (the
#: account), p (its pseudonym), m (`mention(a)`); the replacement keeps the characters around.
_STORES: list[tuple[str, str]] = [
    (
        "rejected_events",
        "DELETE FROM rejected_events WHERE account_id = %(a)s"
        " OR meterstream_payload_subject(raw_payload) = %(a)s"
        " OR (account_id IS NULL AND raw_payload ~ %(m)s)",
    ),
    ("late_events", "DELETE FROM late_events WHERE account_id = %(a)s"),
    ("usage_aggregates_recalc", "DELETE FROM usage_aggregates_recalc WHERE account_id = %(a)s"),
    ("account_daily_counts", "DELETE FROM account_daily_counts WHERE account_id = %(a)s"),
    ("upload_rejections", "DELETE FROM upload_rejections WHERE excerpt ~ %(m)s OR detail ~ %(m)s"),
    (
        "uploads",
        "UPDATE uploads SET error = regexp_replace(error, %(m)s, '\\1' || %(p)s, 'g'),"
        " filename = regexp_replace(filename, %(m)s, '\\1' || %(p)s, 'g')"
        " WHERE error ~ %(m)s OR filename ~ %(m)s",
    ),
    (
        "api_tokens",
        "UPDATE api_tokens"
        " SET description = regexp_replace(description, %(m)s, '\\1' || %(p)s, 'g')"
        " WHERE description ~ %(m)s",
    ),
    (
        "alert_rules",
        "DELETE FROM alert_rules WHERE account_id = %(a)s OR spec::text ~ %(m)s OR name ~ %(m)s",
    ),
    ("alert_firings", "DELETE FROM alert_firings WHERE account_id = %(a)s"),
    ("alert_health_state", "DELETE FROM alert_health_state WHERE subject = %(a)s"),
    (
        "alert_notifications",
        "DELETE FROM alert_notifications WHERE subject = %(a)s OR body ~ %(m)s",
    ),
    (
        "correction_outbox",
        "DELETE FROM correction_outbox WHERE correction_id IN"
        " (SELECT correction_id FROM corrections WHERE account_id = %(a)s)",
    ),
    (
        "corrections",
        "UPDATE corrections SET account_id = %(p)s, dedup_key = NULL, event_id = NULL,"
        " dimensions = NULL, new_payload = NULL, new_dimensions = NULL, new_unique_value = NULL,"
        " reason = regexp_replace(reason, %(m)s, '\\1' || %(p)s, 'g'),"
        " erased_at = coalesce(erased_at, now())"
        " WHERE account_id = %(a)s",
    ),
    (
        "corrections_mentions",
        "UPDATE corrections"
        " SET reason = regexp_replace(reason, %(m)s, '\\1' || %(p)s, 'g')"
        " WHERE reason ~ %(m)s",
    ),
    (
        "audit_trail",
        "UPDATE audit_trail SET account_id = CASE WHEN account_id = %(a)s THEN %(p)s"
        " ELSE account_id END,"
        " what = regexp_replace(what, %(m)s, '\\1' || %(p)s, 'g'),"
        " reason = regexp_replace(reason, %(m)s, '\\1' || %(p)s, 'g'),"
        " details = regexp_replace(details::text, %(m)s, '\\1' || %(p)s, 'g')::jsonb"
        " WHERE account_id = %(a)s OR what ~ %(m)s OR reason ~ %(m)s OR details::text ~ %(m)s",
    ),
]

#: Rename the account's rows of a table keyed by account to the pseudonym; a row whose key the
#: pseudonym already has (from an earlier erasure) is deleted instead.
_RENAME = """
WITH renamed AS (
  UPDATE {table} AS t SET account_id = %(p)s WHERE t.account_id = %(a)s
    AND NOT EXISTS (SELECT 1 FROM {table} AS o WHERE o.account_id = %(p)s{same})
  RETURNING 1
), dropped AS (
  DELETE FROM {table} AS t WHERE t.account_id = %(a)s
    AND EXISTS (SELECT 1 FROM {table} AS o WHERE o.account_id = %(p)s{same})
  RETURNING 1
)
SELECT (SELECT count(*) FROM renamed) + (SELECT count(*) FROM dropped)
"""
_KEYED = {
    "usage_aggregates": " AND (o.meter, o.period_start, o.dimensions)"
    " = (t.meter, t.period_start, t.dimensions)",
    "account_time_zones": "",
    "accounts": "",
}

#: The figures and what recalculation recorded about them, by policy.
_FIGURES: dict[str, list[tuple[str, str]]] = {
    "pseudonymise": [
        (
            "usage_aggregates",
            _RENAME.format(table="usage_aggregates", same=_KEYED["usage_aggregates"]),
        ),
        (
            "aggregate_changes",
            "UPDATE aggregate_changes SET account_id = %(p)s WHERE account_id = %(a)s",
        ),
        (
            "recalculation_runs",
            "UPDATE recalculation_runs SET account_id = %(p)s WHERE account_id = %(a)s",
        ),
        ("account_time_zones", _RENAME.format(table="account_time_zones", same="")),
        ("accounts", _RENAME.format(table="accounts", same="")),
    ],
    "delete": [
        ("usage_aggregates", "DELETE FROM usage_aggregates WHERE account_id = %(a)s"),
        ("aggregate_changes", "DELETE FROM aggregate_changes WHERE account_id = %(a)s"),
        (
            "recalculation_runs",
            "DELETE FROM recalculation_runs r WHERE account_id = %(a)s AND NOT EXISTS"
            " (SELECT 1 FROM aggregate_changes c WHERE c.run_id = r.run_id)",
        ),
        ("account_time_zones", "DELETE FROM account_time_zones WHERE account_id = %(a)s"),
        ("accounts", "DELETE FROM accounts WHERE account_id = %(a)s"),
    ],
    "keep": [],
}
_REASONS = [
    (
        table,
        f"UPDATE {table} SET reason = regexp_replace(reason, %(m)s, '\\1' || %(p)s, 'g')"
        " WHERE reason ~ %(m)s",
    )
    for table in ("aggregate_changes", "recalculation_runs")
]


def _count(cur: psycopg.Cursor[Any]) -> int:
    if cur.description is not None and cur.statusmessage and cur.statusmessage.startswith("SELECT"):
        row = cur.fetchone()
        return int(next(iter(row.values())) if isinstance(row, dict) else row[0]) if row else 0
    return max(cur.rowcount, 0)


def erase_account(
    settings: Settings,
    account: str,
    *,
    reason: str,
    actor_who: str = "operator",
    actor_org: str | None = None,
    figures: str | None = None,
) -> ErasureResult:
    """Erase the account's personal data everywhere (see the module docstring).

    Idempotent: run again, it erases what arrived since (events still on their way when it
    ran) and changes nothing else. `actor_org`: only an account of this organisation.

    Raises:
        CorrectionError: a bad account id or policy, no reason, not the organisation's
            account, or a recalculation (or another erasure) running.
    """
    from meterstream.recalc import LOCK_KEY  # noqa: PLC0415 - one lock for both

    policy = figures or settings.erasure.figures
    if policy not in ERASURE_FIGURES:
        msg = f"figures must be one of {', '.join(ERASURE_FIGURES)}, not {policy!r}"
        raise CorrectionError(Refusal.BAD_REQUEST, msg)
    if not ACCOUNT_ID.fullmatch(account) or PSEUDONYM.fullmatch(account):
        raise CorrectionError(Refusal.BAD_REQUEST, f"{account!r} is not an account id")
    if not reason.strip():
        raise CorrectionError(Refusal.BAD_REQUEST, "give a reason (it is kept in the audit trail)")
    with psycopg.connect(settings.postgres.conninfo, autocommit=True) as lock:
        row = lock.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        if not row or not row[0]:
            msg = "a recalculation or another erasure is running; try again when it is done"
            raise CorrectionError(Refusal.BUSY, msg)
        try:
            result = _erase_in_postgres(
                settings,
                account,
                reason=reason,
                actor_who=actor_who,
                actor_org=actor_org,
                policy=policy,
            )
            result.archive = erase_rows(
                archive_root(settings),
                account,
                erasure=str(result.erasure_id),
                wait_s=settings.erasure.wait_seconds,
            )
            _audit_archive(settings, result, reason, actor_who, account)
            result.remaining = still_naming(settings, account)
        finally:
            lock.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return result


def _erase_in_postgres(
    settings: Settings,
    account: str,
    *,
    reason: str,
    actor_who: str,
    actor_org: str | None,
    policy: str,
) -> ErasureResult:
    erasure_id = uuid.uuid4()
    with (
        psycopg.connect(settings.postgres.conninfo, row_factory=dict_row) as conn,
        conn.transaction(),
    ):
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"corrections:{account}",)
        )
        # The append-only tables let this transaction pseudonymise their rows (migration 0010).
        conn.execute("SELECT set_config('meterstream.erasure', %s, true)", (str(erasure_id),))
        p = pseudonym(secret(conn), account)
        owner = _owner(conn, account, p)
        if actor_org is not None and owner != actor_org:
            raise CorrectionError(Refusal.NOT_FOUND, f"no account {account!r} in your organisation")
        params = {"a": account, "p": p, "m": mention(account)}
        result = ErasureResult(erasure_id, p, policy)
        statements = _STORES + _FIGURES[policy] + (_REASONS if policy != "keep" else [])
        for store, statement in statements:
            cur = conn.execute(statement, params)  # type: ignore[arg-type] - module constants
            result.counts[store] = result.counts.get(store, 0) + _count(cur)
        conn.execute(
            "INSERT INTO erased_accounts (pseudonym, org_id, figures, kept_account_id)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (pseudonym) DO UPDATE SET"
            " last_erased_at = now(), erasures = erased_accounts.erasures + 1,"
            " figures = EXCLUDED.figures, kept_account_id = EXCLUDED.kept_account_id",
            (p, owner, policy, account if policy == "keep" else None),
        )
        conn.execute(
            "INSERT INTO audit_trail (org_id, actor, action, account_id, what, reason, details)"
            " VALUES (%s, %s, 'erase', %s, %s, %s, %s)",
            (
                owner,
                actor_who,
                p,
                f"erasure of the account's personal data in PostgreSQL (figures: {policy})",
                _pseudonymised(reason, account, p),
                Jsonb({"erasure_id": str(erasure_id), "figures": policy, **result.counts}),
            ),
        )
    return result


def _owner(conn: psycopg.Connection[Any], account: str, p: str) -> str | None:
    """The account's organisation (or, erased before, the pseudonym's)."""
    for query, key in (
        ("SELECT org_id FROM accounts WHERE account_id = %s", account),
        ("SELECT org_id FROM erased_accounts WHERE pseudonym = %s", p),
    ):
        row = conn.execute(query, (key,)).fetchone()  # type: ignore[arg-type]
        if row is not None:
            return row["org_id"]  # type: ignore[no-any-return]
    return None


def _pseudonymised(text: str, account: str, p: str) -> str:
    """`text` with the account id replaced by its pseudonym (as the SQL does)."""
    return re.sub(mention(account), rf"\g<1>{p}", text)


def _audit_archive(
    settings: Settings, result: ErasureResult, reason: str, actor_who: str, account: str
) -> None:
    """The audit row of the archive's part (after the files are rewritten)."""
    done = result.archive
    with psycopg.connect(settings.postgres.conninfo) as conn:
        owner = conn.execute(
            "SELECT org_id FROM erased_accounts WHERE pseudonym = %s", (result.pseudonym,)
        ).fetchone()
        conn.execute(
            "INSERT INTO audit_trail (org_id, actor, action, account_id, what, reason, details)"
            " VALUES (%s, %s, 'erase', %s, %s, %s, %s)",
            (
                owner[0] if owner else None,
                actor_who,
                result.pseudonym,
                f"erasure of the account's rows in the audit archive ({done.files_rewritten} "
                f"files rewritten, {done.rows_removed} rows removed)",
                _pseudonymised(reason, account, result.pseudonym),
                Jsonb(
                    {
                        "erasure_id": str(result.erasure_id),
                        "files_checked": done.files_checked,
                        "files_rewritten": done.files_rewritten,
                        "rows_removed": done.rows_removed,
                        "files_still_in_progress": len(done.still_in_progress),
                    }
                ),
            ),
        )


def still_naming(settings: Settings, account: str) -> dict[str, int]:
    """Rows of every table that still contain the account id as a word, by table.

    A full scan of every table: what an auditor would run. Empty after a complete erasure
    (with the `pseudonymise` or `delete` policy).
    """
    with psycopg.connect(settings.postgres.conninfo) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
            )
        ]
        found = {}
        for table in tables:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {} AS t WHERE t::text ~ %s").format(
                    sql.Identifier(table)
                ),
                (mention(account),),
            ).fetchone()
            if row and row[0]:
                found[table] = int(row[0])
    return found
