"""The API's PostgreSQL access (async): tokens, account ownership, quotas, uploads and reads.

Every query that returns tenant data takes the organisation id and filters by it in SQL, so a
token can only ever see its own organisation's accounts.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any, NamedTuple

from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from meterstream.config import Settings

#: At most this many rejected events are kept per upload (the counts cover them all).
MAX_STORED_UPLOAD_REJECTIONS = 1_000


class QuotaUses(NamedTuple):
    """Accounts' daily event quotas and the events counted against them so far, in columns.

    Columns, not an object per account: a request names hundreds of accounts, and this is
    read on every one (the API keeps it to count quotas while PostgreSQL is down).
    """

    accounts: list[str]
    quotas: list[int]
    used: list[int]

    def __or__(self, other: object) -> QuotaUses:
        """Both sets of columns, one after the other."""
        assert isinstance(other, QuotaUses)  # noqa: S101 - only QuotaUses are joined
        return QuotaUses(
            self.accounts + other.accounts, self.quotas + other.quotas, self.used + other.used
        )


NO_USES = QuotaUses([], [], [])


#: Read filters: (column, operator, query parameter) of `usage_page` and `rejections_page`.
Filters = tuple[tuple[str, str, str], ...]
USAGE_FILTERS: Filters = (
    ("account_id", "=", "account"),
    ("meter", "=", "meter"),
    ("period_start", ">=", "period_from"),
    ("period_start", "<=", "period_to"),
)
REJECTION_FILTERS: Filters = (
    ("reason_code", "=", "reason"),
    ("arrived_at", ">=", "since"),
    ("arrived_at", "<", "until"),
)


def _add_column_filters(
    where: list[sql.Composable],
    params: list[Any],
    alias: str,
    specs: Filters,
    filters: dict[str, Any],
) -> None:
    """Append `alias.column op %s` for each filter that is set, and its value."""
    for column, op, key in specs:
        if filters.get(key) is not None:
            where.append(sql.SQL(alias + ".{} " + op + " %s").format(sql.Identifier(column)))
            params.append(filters[key])


class Store:
    """A pool of async connections and the queries the API makes."""

    def __init__(self, settings: Settings, *, max_size: int = 10) -> None:
        self.pool = AsyncConnectionPool(
            settings.postgres.conninfo,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=5,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 3},
        )

    async def open(self) -> None:
        """Start the pool without waiting: the service starts even if PostgreSQL does not answer."""
        await self.pool.open(wait=False)

    async def close(self) -> None:
        """Close every connection."""
        await self.pool.close()

    async def ping(self) -> None:
        """Raise unless PostgreSQL answers."""
        async with self.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")

    # --- tokens and accounts -----------------------------------------------------------------

    async def token(self, token_id: str) -> dict[str, Any] | None:
        """A token's row joined with its organisation, or None."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT t.token_id, t.org_id, t.secret_hash, t.scopes, t.revoked_at, o.operator"
                " FROM api_tokens t JOIN organisations o USING (org_id) WHERE t.token_id = %s",
                (token_id,),
            )
            return await cur.fetchone()

    async def owned_accounts(self, org_id: str, account_ids: Sequence[str]) -> set[str]:
        """Which of `account_ids` belong to `org_id`."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT account_id FROM accounts WHERE org_id = %s AND account_id = ANY(%s)",
                (org_id, list(account_ids)),
            )
            return {row["account_id"] for row in await cur.fetchall()}

    async def organisation_accounts(self, org_id: str, limit: int) -> frozenset[str] | None:
        """Every account of `org_id`, or None if it has more than `limit`."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT account_id FROM accounts WHERE org_id = %s LIMIT %s", (org_id, limit + 1)
            )
            rows = await cur.fetchall()
        if len(rows) > limit:
            return None
        return frozenset(row["account_id"] for row in rows)

    # --- quotas ------------------------------------------------------------------------------

    async def reserve_quota(
        self, wanted: dict[str, int], day: date, default_quota: int
    ) -> dict[str, int]:
        """Take up to `wanted[account]` events from each account's daily quota; return grants.

        Rows are locked in account order, so concurrent requests never deadlock, and the
        grant never exceeds the quota however many API processes run.
        """
        grants, _ = await self.reserve_quota_counted(wanted, day, default_quota)
        return grants

    async def reserve_quota_counted(
        self, wanted: dict[str, int], day: date, default_quota: int
    ) -> tuple[dict[str, int], QuotaUses]:
        """`reserve_quota`, and each account's quota and use after the grant."""
        wanted = {a: n for a, n in wanted.items() if n > 0}
        if not wanted:
            return {}, NO_USES
        uses = await self._reserve_in_full(wanted, day, default_quota)
        if len(uses.accounts) == len(wanted):
            return wanted, uses  # the usual case: every account within its quota
        full = set(uses.accounts)
        grants = {a: n for a, n in wanted.items() if a in full}
        rest = {a: n for a, n in wanted.items() if a not in full}
        # Accounts at or near their quota: grant what is left, exactly.
        granted, rest_uses = await self._reserve_rest(rest, day, default_quota)
        return grants | granted, uses | rest_uses

    async def _reserve_in_full(
        self, wanted: dict[str, int], day: date, default_quota: int
    ) -> QuotaUses:
        """Reserve all of `wanted[account]` for each account where it fits; return those.

        One statement (autocommit: one round trip, row locks held only while it runs). Each
        account returned comes with its quota and its use after this reservation.
        """
        accounts = sorted(wanted)
        # Account ids cannot contain a comma (`events.ACCOUNT_ID`): the arrays go as two
        # strings, which psycopg sends as they are instead of dumping each element in Python.
        joined = ",".join(accounts)
        if not accounts or joined.count(",") != len(accounts) - 1:
            return NO_USES
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "WITH up AS ("
                " INSERT INTO account_daily_counts AS c (account_id, day, events)"
                " SELECT w.account_id, %(day)s, w.n"
                " FROM unnest(string_to_array(%(accounts)s, ','),"
                " string_to_array(%(counts)s, ',')::bigint[]) AS w(account_id, n)"
                " LEFT JOIN accounts a USING (account_id)"
                " WHERE w.n <= COALESCE(a.daily_event_quota, %(quota)s)"
                " ORDER BY w.account_id"
                " ON CONFLICT (account_id, day) DO UPDATE SET events = c.events + excluded.events"
                " WHERE c.events + excluded.events <= COALESCE("
                "(SELECT daily_event_quota FROM accounts WHERE account_id = c.account_id),"
                " %(quota)s)"
                " RETURNING c.account_id, c.events)"
                " SELECT array_agg(up.account_id) AS accounts,"
                " array_agg(COALESCE(a.daily_event_quota, %(quota)s)) AS quotas,"
                " array_agg(up.events) AS used"
                " FROM up LEFT JOIN accounts a USING (account_id)",
                {
                    "day": day,
                    "accounts": joined,
                    "counts": ",".join(str(wanted[a]) for a in accounts),
                    "quota": default_quota,
                },
            )
            row = await cur.fetchone()
        if row is None or row["accounts"] is None:
            return NO_USES
        return QuotaUses(row["accounts"], row["quotas"], row["used"])

    async def _reserve_rest(
        self, wanted: dict[str, int], day: date, default_quota: int
    ) -> tuple[dict[str, int], QuotaUses]:
        accounts = sorted(wanted)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO account_daily_counts (account_id, day, events)"
                " SELECT a, %s, 0 FROM unnest(%s::text[]) AS a ORDER BY a"
                " ON CONFLICT DO NOTHING",
                (day, accounts),
            )
            cur = await conn.execute(
                "SELECT c.account_id, c.events, COALESCE(a.daily_event_quota, %s) AS quota"
                " FROM account_daily_counts c LEFT JOIN accounts a USING (account_id)"
                " WHERE c.day = %s AND c.account_id = ANY(%s)"
                " ORDER BY c.account_id FOR UPDATE OF c",
                (default_quota, day, accounts),
            )
            rows = await cur.fetchall()
            grants = {
                row["account_id"]: max(
                    0, min(wanted[row["account_id"]], row["quota"] - row["events"])
                )
                for row in rows
            }
            await self._add_counts(conn, grants, day)
        uses = QuotaUses(
            [row["account_id"] for row in rows],
            [row["quota"] for row in rows],
            [row["events"] + grants[row["account_id"]] for row in rows],
        )
        return grants, uses

    async def reconcile_quota(
        self, batch_id: uuid.UUID, counts: dict[tuple[str, date], int]
    ) -> bool:
        """Add quota use counted while PostgreSQL was unavailable; False if the batch was in.

        One transaction: the batch's row in `api_quota_reconciliations` and its counts
        (negative ones are events given back), so a batch sent twice is added once.
        """
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO api_quota_reconciliations (batch_id, events, accounts)"
                " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (batch_id, sum(counts.values()), len({a for a, _ in counts})),
            )
            if cur.rowcount != 1:
                return False
            keys = sorted(counts)  # rows locked in one order, as in reserve_quota
            columns = ([a for a, _ in keys], [d for _, d in keys], [counts[k] for k in keys])
            await conn.execute(
                "INSERT INTO account_daily_counts (account_id, day, events)"
                " SELECT a, d, 0 FROM unnest(%s::text[], %s::date[]) AS x(a, d) ORDER BY a, d"
                " ON CONFLICT DO NOTHING",
                columns[:2],
            )
            await conn.execute(
                "UPDATE account_daily_counts c SET events = GREATEST(0, c.events + x.n)"
                " FROM unnest(%s::text[], %s::date[], %s::bigint[]) AS x(a, d, n)"
                " WHERE c.account_id = x.a AND c.day = x.d",
                columns,
            )
        return True

    async def release_quota(self, unused: dict[str, int], day: date) -> None:
        """Give back quota reserved for events that were not sent after all."""
        await self._add_counts(None, {a: -n for a, n in unused.items() if n > 0}, day)

    async def _add_counts(self, conn: Any, deltas: dict[str, int], day: date) -> None:
        if not deltas:
            return
        query = (
            "UPDATE account_daily_counts c SET events = GREATEST(0, c.events + d.n)"
            " FROM unnest(%s::text[], %s::bigint[]) AS d(account_id, n)"
            " WHERE c.account_id = d.account_id AND c.day = %s"
        )
        params = (list(deltas), list(deltas.values()), day)
        if conn is not None:
            await conn.execute(query, params)
            return
        async with self.pool.connection() as own:
            await own.execute(query, params)

    # --- uploads -----------------------------------------------------------------------------

    async def create_upload(
        self, upload_id: uuid.UUID, org_id: str, token_id: str, fmt: str, filename: str
    ) -> bool:
        """Create an upload; False if the id is taken."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO uploads (upload_id, org_id, token_id, format, filename)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (upload_id, org_id, token_id, fmt, filename),
            )
            return cur.rowcount == 1

    async def upload(self, upload_id: uuid.UUID, org_id: str) -> dict[str, Any] | None:
        """An upload of `org_id`, or None."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT upload_id, format, filename, state, committed_offset, accepted, rejected,"
                " error, created_at, updated_at FROM uploads WHERE upload_id = %s AND org_id = %s",
                (upload_id, org_id),
            )
            return await cur.fetchone()

    async def upload_rejections(self, upload_id: uuid.UUID, limit: int) -> list[dict[str, Any]]:
        """The first stored rejections of an upload, in file order."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT byte_offset, reason_code, detail, excerpt FROM upload_rejections"
                " WHERE upload_id = %s ORDER BY byte_offset LIMIT %s",
                (upload_id, limit),
            )
            return await cur.fetchall()

    async def commit_upload(
        self,
        upload_id: uuid.UUID,
        *,
        old_offset: int,
        new_offset: int,
        accepted: int,
        rejected: int,
        state: str,
        error: str,
        rejections: list[tuple[int, str, str, str]],
    ) -> bool:
        """Record progress atomically; False if another request moved the upload meanwhile."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE uploads SET committed_offset = %s, accepted = accepted + %s,"
                " rejected = rejected + %s, state = %s, error = %s, updated_at = now()"
                " WHERE upload_id = %s AND committed_offset = %s",
                (new_offset, accepted, rejected, state, error, upload_id, old_offset),
            )
            if cur.rowcount != 1:
                return False
            if rejections:
                cur = await conn.execute(
                    "SELECT count(*) AS n FROM upload_rejections WHERE upload_id = %s",
                    (upload_id,),
                )
                row = await cur.fetchone()
                room = MAX_STORED_UPLOAD_REJECTIONS - (row["n"] if row else 0)
                if room > 0:
                    async with conn.cursor() as c:
                        await c.executemany(
                            "INSERT INTO upload_rejections"
                            " (upload_id, byte_offset, reason_code, detail, excerpt)"
                            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                            [(upload_id, *r) for r in rejections[:room]],
                        )
        return True

    # --- reads -------------------------------------------------------------------------------

    async def usage_page(
        self, org_id: str, filters: dict[str, Any], after: list[Any] | None, limit: int
    ) -> list[dict[str, Any]]:
        """One page of `usage_aggregates` rows of `org_id`'s accounts, in key order."""
        where = [sql.SQL("u.account_id IN (SELECT account_id FROM accounts WHERE org_id = %s)")]
        params: list[Any] = [org_id]
        _add_column_filters(where, params, "u", USAGE_FILTERS, filters)
        if after is not None:
            where.append(
                sql.SQL(
                    "(u.account_id, u.meter, u.period_start, u.dimensions) > (%s, %s, %s::date, %s)"
                )
            )
            params += after
        query = sql.SQL(
            "SELECT account_id, meter, period_start, dimensions, quantity, event_count,"
            " first_event_at, last_event_at, last_arrived_at, updated_at FROM usage_aggregates u"
            " WHERE {} ORDER BY account_id, meter, period_start, dimensions LIMIT %s"
        ).format(sql.SQL(" AND ").join(where))
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, [*params, limit])
            return await cur.fetchall()

    async def rejections_page(
        self, org_id: str, filters: dict[str, Any], after: list[Any] | None, limit: int
    ) -> list[dict[str, Any]]:
        """One page of the validation log for `org_id`'s accounts, oldest arrival first."""
        subject = sql.SQL("meterstream_payload_subject(r.raw_payload)")
        where = [
            sql.SQL("{} IN (SELECT account_id FROM accounts WHERE org_id = %s)").format(subject)
        ]
        params: list[Any] = [org_id]
        if filters.get("account") is not None:
            where.append(sql.SQL("{} = %s").format(subject))
            params.append(filters["account"])
        _add_column_filters(where, params, "r", REJECTION_FILTERS, filters)
        if after is not None:
            where.append(
                sql.SQL(
                    "(r.arrived_at, r.source_topic, r.source_partition, r.source_offset)"
                    " > (%s::timestamptz, %s, %s, %s)"
                )
            )
            params += after
        query = sql.SQL(
            "SELECT {} AS account_id, source_topic, source_partition, source_offset, reason_code,"
            " detail, raw_payload, arrived_at, rejected_at FROM rejected_events r WHERE {}"
            " ORDER BY arrived_at, source_topic, source_partition, source_offset LIMIT %s"
        ).format(subject, sql.SQL(" AND ").join(where))
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, [*params, limit])
            return await cur.fetchall()
