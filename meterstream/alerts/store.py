"""The API's PostgreSQL access for alerts (async): rules, endpoints, notifications, deliveries.

Every query takes the organisation id and filters by it in SQL: a token never reads or changes
another organisation's rules, endpoints, notifications or delivery log, even by guessing ids.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from meterstream.alerts.model import UsageTarget
from meterstream.alerts.notifications import NotificationType
from meterstream.alerts.outbox import CHANNEL

#: At most this many rules and endpoints per organisation.
MAX_RULES = 1_000
MAX_ENDPOINTS = 50

RULE_COLUMNS = (
    "rule_id, kind, name, enabled, spec, account_id, meter, from_period, only_period,"
    " created_at, updated_at, evaluated_at"
)
NOTIFICATION_SELECT = (
    "SELECT notification_id, type, subject, rule_id, body, created_at,"
    " (SELECT coalesce(jsonb_agg(jsonb_build_object('endpoint_id', d.endpoint_id,"
    " 'state', d.state, 'attempts', d.attempts, 'next_attempt_at', d.next_attempt_at,"
    " 'last_response_code', d.last_response_code, 'last_error', d.last_error,"
    " 'delivered_at', d.delivered_at) ORDER BY d.endpoint_id), '[]')"
    "  FROM alert_deliveries d WHERE d.notification_id = n.notification_id) AS deliveries"
    " FROM alert_notifications n WHERE "
)
ENDPOINT_COLUMNS = (
    "endpoint_id, url, description, event_types, enabled, disabled_at, disabled_reason,"
    " failing_since, consecutive_failures, previous_secret_expires_at, created_at, updated_at"
)


def _target_params(target: UsageTarget | None) -> dict[str, Any]:
    if target is None:
        return dict.fromkeys(
            (
                "account_id",
                "meter",
                "segment",
                "combine",
                "thresholds",
                "recurring_every",
                "from_period",
                "only_period",
            )
        )
    return {
        "account_id": target.account_id,
        "meter": target.meter,
        "segment": target.segment,
        "combine": target.combine,
        "thresholds": list(target.thresholds),
        "recurring_every": target.recurring_every,
        "from_period": target.from_period,
        "only_period": target.only_period,
    }


class AlertStore:
    """Alert queries on the API's connection pool (autocommit, dict rows)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    # --- rules -------------------------------------------------------------------------------

    async def create_rule(
        self, org_id: str, spec: dict[str, Any], target: UsageTarget | None
    ) -> dict[str, Any] | None:
        """Insert a rule; None if the organisation already has `MAX_RULES`."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO alert_rules (org_id, name, kind, spec, enabled, account_id, meter,"
                " segment, combine, thresholds, recurring_every, from_period, only_period)"
                " SELECT %(org)s, %(name)s, %(kind)s, %(spec)s, %(enabled)s, %(account_id)s,"
                " %(meter)s, %(segment)s, %(combine)s, %(thresholds)s, %(recurring_every)s,"
                " %(from_period)s, %(only_period)s"
                " WHERE (SELECT count(*) FROM alert_rules WHERE org_id = %(org)s) < %(max)s"
                f" RETURNING {RULE_COLUMNS}",
                {
                    "org": org_id,
                    "name": spec["name"],
                    "kind": spec["kind"],
                    "spec": Jsonb(spec),
                    "enabled": spec.get("enabled", True),
                    "max": MAX_RULES,
                    **_target_params(target),
                },
            )
            return await cur.fetchone()

    async def rules(self, org_id: str) -> list[dict[str, Any]]:
        """The organisation's rules, oldest first."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE org_id = %s"
                " ORDER BY created_at, rule_id",
                (org_id,),
            )
            return await cur.fetchall()

    async def rule(self, org_id: str, rule_id: uuid.UUID) -> dict[str, Any] | None:
        """One rule of the organisation, or None."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE org_id = %s AND rule_id = %s",
                (org_id, rule_id),
            )
            return await cur.fetchone()

    async def replace_rule(
        self,
        org_id: str,
        rule_id: uuid.UUID,
        spec: dict[str, Any],
        target: UsageTarget | None,
    ) -> dict[str, Any] | None:
        """Replace a rule's definition (it is evaluated again from scratch); None if absent.

        Thresholds that already fired for a (rule, account, period) do not fire again.
        """
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE alert_rules SET name = %(name)s, kind = %(kind)s, spec = %(spec)s,"
                " enabled = %(enabled)s, account_id = %(account_id)s, meter = %(meter)s,"
                " segment = %(segment)s, combine = %(combine)s, thresholds = %(thresholds)s,"
                " recurring_every = %(recurring_every)s, from_period = %(from_period)s,"
                " only_period = %(only_period)s, evaluated_at = NULL, updated_at = now()"
                " WHERE org_id = %(org)s AND rule_id = %(rule_id)s"
                f" RETURNING {RULE_COLUMNS}",
                {
                    "org": org_id,
                    "rule_id": rule_id,
                    "name": spec["name"],
                    "kind": spec["kind"],
                    "spec": Jsonb(spec),
                    "enabled": spec.get("enabled", True),
                    **_target_params(target),
                },
            )
            row = await cur.fetchone()
            if row is not None:
                # A health condition of the old definition is not the new one's.
                await conn.execute("DELETE FROM alert_health_state WHERE rule_id = %s", (rule_id,))
            return row

    async def patch_rule(
        self, org_id: str, rule_id: uuid.UUID, name: str | None, enabled: bool | None
    ) -> dict[str, Any] | None:
        """Rename, enable or disable a rule; None if absent."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE alert_rules SET name = coalesce(%(name)s, name),"
                " enabled = coalesce(%(enabled)s, enabled),"
                # Enabled again: evaluate it afresh over the figures, as a new rule.
                " evaluated_at = CASE WHEN %(enabled)s AND NOT enabled THEN NULL"
                "   ELSE evaluated_at END,"
                " spec = spec || jsonb_strip_nulls(jsonb_build_object("
                "'name', %(name)s::text, 'enabled', %(enabled)s::boolean)),"
                " updated_at = now() WHERE org_id = %(org)s AND rule_id = %(rule_id)s"
                f" RETURNING {RULE_COLUMNS}",
                {"org": org_id, "rule_id": rule_id, "name": name, "enabled": enabled},
            )
            return await cur.fetchone()

    async def delete_rule(self, org_id: str, rule_id: uuid.UUID) -> bool:
        """Delete a rule with its firings and health state; its notifications stay."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM alert_rules WHERE org_id = %s AND rule_id = %s", (org_id, rule_id)
            )
            return cur.rowcount == 1

    async def firings(
        self, org_id: str, rule_id: uuid.UUID, limit: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A rule's newest threshold firings, and the health conditions that hold now."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT f.account_id, f.period_start, f.threshold, f.quantity, f.notification_id,"
                " f.fired_at, f.lowered_at, f.lowered_quantity, f.lowered_run_id"
                " FROM alert_firings f JOIN alert_rules r USING (rule_id)"
                " WHERE r.org_id = %s AND f.rule_id = %s"
                " ORDER BY f.fired_at DESC, f.account_id, f.threshold LIMIT %s",
                (org_id, rule_id, limit),
            )
            fired = await cur.fetchall()
            cur = await conn.execute(
                "SELECT h.subject, h.state, h.since, h.value, h.notification_id"
                " FROM alert_health_state h JOIN alert_rules r USING (rule_id)"
                " WHERE r.org_id = %s AND h.rule_id = %s ORDER BY h.subject",
                (org_id, rule_id),
            )
            return fired, await cur.fetchall()

    # --- endpoints ---------------------------------------------------------------------------

    async def create_endpoint(
        self,
        org_id: str,
        *,
        url: str,
        description: str,
        event_types: list[str],
        enabled: bool,
        secret: str,
    ) -> dict[str, Any] | None:
        """Insert an endpoint; None if the organisation already has `MAX_ENDPOINTS`."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO alert_endpoints (org_id, url, description, event_types, enabled,"
                " secret) SELECT %(org)s, %(url)s, %(description)s, %(types)s, %(enabled)s,"
                " %(secret)s WHERE (SELECT count(*) FROM alert_endpoints WHERE org_id = %(org)s)"
                f" < %(max)s RETURNING {ENDPOINT_COLUMNS}",
                {
                    "org": org_id,
                    "url": url,
                    "description": description,
                    "types": event_types,
                    "enabled": enabled,
                    "secret": secret,
                    "max": MAX_ENDPOINTS,
                },
            )
            return await cur.fetchone()

    async def endpoints(self, org_id: str) -> list[dict[str, Any]]:
        """The organisation's endpoints, oldest first (never their secrets)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {ENDPOINT_COLUMNS} FROM alert_endpoints WHERE org_id = %s"
                " ORDER BY created_at, endpoint_id",
                (org_id,),
            )
            return await cur.fetchall()

    async def endpoint(self, org_id: str, endpoint_id: uuid.UUID) -> dict[str, Any] | None:
        """One endpoint of the organisation, or None."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {ENDPOINT_COLUMNS} FROM alert_endpoints"
                " WHERE org_id = %s AND endpoint_id = %s",
                (org_id, endpoint_id),
            )
            return await cur.fetchone()

    async def patch_endpoint(
        self, org_id: str, endpoint_id: uuid.UUID, changes: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Change an endpoint. Enabling it again clears its failure record; None if absent."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE alert_endpoints SET url = coalesce(%(url)s, url),"
                " description = coalesce(%(description)s, description),"
                " event_types = coalesce(%(event_types)s, event_types),"
                " enabled = coalesce(%(enabled)s, enabled),"
                " disabled_at = CASE WHEN %(enabled)s THEN NULL"
                "   WHEN %(enabled)s = false AND enabled THEN now() ELSE disabled_at END,"
                " disabled_reason = CASE WHEN %(enabled)s THEN ''"
                "   WHEN %(enabled)s = false AND enabled THEN 'disabled through the API'"
                "   ELSE disabled_reason END,"
                " failing_since = CASE WHEN %(enabled)s THEN NULL ELSE failing_since END,"
                " consecutive_failures = CASE WHEN %(enabled)s THEN 0"
                "   ELSE consecutive_failures END,"
                " updated_at = now() WHERE org_id = %(org)s AND endpoint_id = %(endpoint_id)s"
                f" RETURNING {ENDPOINT_COLUMNS}",
                {
                    "org": org_id,
                    "endpoint_id": endpoint_id,
                    "url": changes.get("url"),
                    "description": changes.get("description"),
                    "event_types": changes.get("event_types"),
                    "enabled": changes.get("enabled"),
                },
            )
            row = await cur.fetchone()
            if row is not None and changes.get("enabled"):
                await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            return row

    async def delete_endpoint(self, org_id: str, endpoint_id: uuid.UUID) -> bool:
        """Delete an endpoint with its pending deliveries and delivery log."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM alert_endpoints WHERE org_id = %s AND endpoint_id = %s",
                (org_id, endpoint_id),
            )
            return cur.rowcount == 1

    async def rotate_secret(
        self, org_id: str, endpoint_id: uuid.UUID, secret: str, overlap: timedelta
    ) -> datetime | None:
        """Make `secret` the signing secret; the old one also signs for `overlap`.

        Returns when the old secret stops signing, or None if there is no such endpoint.
        """
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE alert_endpoints SET previous_secret = secret, secret = %s,"
                " previous_secret_expires_at = now() + %s, updated_at = now()"
                " WHERE org_id = %s AND endpoint_id = %s RETURNING previous_secret_expires_at",
                (secret, overlap, org_id, endpoint_id),
            )
            row = await cur.fetchone()
            return row["previous_secret_expires_at"] if row else None

    # --- notifications and the delivery log ---------------------------------------------------

    async def notifications(
        self,
        org_id: str,
        type_: str | None,
        since: datetime | None,
        after: list[Any] | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """One page of the organisation's notifications, oldest first."""
        where = ["org_id = %s"]
        params: list[Any] = [org_id]
        if type_ is not None:
            where.append("type = %s")
            params.append(type_)
        if since is not None:
            where.append("created_at >= %s")
            params.append(since)
        if after is not None:
            where.append("(created_at, notification_id) > (%s::timestamptz, %s::uuid)")
            params += after
        query = (
            NOTIFICATION_SELECT
            + " AND ".join(where)
            + " ORDER BY created_at, notification_id LIMIT %s"
        )
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, [*params, limit])  # type: ignore[arg-type]
            return await cur.fetchall()

    async def notification(self, org_id: str, notification_id: uuid.UUID) -> dict[str, Any] | None:
        """One notification of the organisation with its deliveries, or None."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                NOTIFICATION_SELECT + "org_id = %s AND notification_id = %s",  # type: ignore[arg-type]
                (org_id, notification_id),
            )
            return await cur.fetchone()

    async def test_notification(
        self, org_id: str, endpoint_id: uuid.UUID, notification_id: uuid.UUID, body: str
    ) -> None:
        """Queue a test notification for one endpoint."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO alert_notifications (notification_id, org_id, type, subject, body)"
                " VALUES (%s, %s, %s, %s, %s)",
                (
                    notification_id,
                    org_id,
                    NotificationType.ENDPOINT_TEST.value,
                    str(endpoint_id),
                    body,
                ),
            )
            await conn.execute(
                "INSERT INTO alert_deliveries (notification_id, endpoint_id, org_id)"
                " VALUES (%s, %s, %s)",
                (notification_id, endpoint_id, org_id),
            )
            await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))

    async def resend(
        self, org_id: str, notification_id: uuid.UUID, endpoint_id: uuid.UUID | None
    ) -> int | None:
        """Queue a notification again, with the same id, for one endpoint or all it went to.

        An endpoint it never went to gets it too when named. Returns how many deliveries were
        queued, or None if the organisation has no such notification (or endpoint).
        """
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT 1 FROM alert_notifications WHERE org_id = %s AND notification_id = %s",
                (org_id, notification_id),
            )
            if await cur.fetchone() is None:
                return None
            if endpoint_id is not None:
                cur = await conn.execute(
                    "INSERT INTO alert_deliveries (notification_id, endpoint_id, org_id)"
                    " SELECT %s, endpoint_id, org_id FROM alert_endpoints"
                    " WHERE org_id = %s AND endpoint_id = %s"
                    " ON CONFLICT (notification_id, endpoint_id) DO UPDATE SET state = 'pending',"
                    " attempts = 0, next_attempt_at = now(), updated_at = now()",
                    (notification_id, org_id, endpoint_id),
                )
                if cur.rowcount == 0:
                    return None
            else:
                cur = await conn.execute(
                    "UPDATE alert_deliveries SET state = 'pending', attempts = 0,"
                    " next_attempt_at = now(), updated_at = now()"
                    " WHERE org_id = %s AND notification_id = %s",
                    (org_id, notification_id),
                )
            await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            return cur.rowcount

    async def attempts(
        self, org_id: str, filters: dict[str, Any], after: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """One page of the delivery log (every attempt), oldest first."""
        where = ["org_id = %s"]
        params: list[Any] = [org_id]
        for column in ("endpoint_id", "notification_id", "outcome"):
            if filters.get(column) is not None:
                where.append(f"{column} = %s")
                params.append(filters[column])
        if after is not None:
            where.append("attempt_id > %s")
            params.append(after)
        query = (
            "SELECT attempt_id, notification_id, endpoint_id, attempt, started_at, duration_ms,"
            " outcome, response_code, error FROM alert_delivery_attempts WHERE "
            + " AND ".join(where)
            + " ORDER BY attempt_id LIMIT %s"
        )
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, [*params, limit])  # type: ignore[arg-type]
            return await cur.fetchall()
