"""Managing tenants from the command line: organisations, their accounts, API tokens.

Synchronous (psycopg); `meterstream orgs|accounts|tokens` and the tests call these.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from meterstream.api.auth import NewToken, Scope, new_token
from meterstream.config import Settings
from meterstream.errors import MeterstreamError


class AdminError(MeterstreamError):
    """A tenant-management command could not be carried out."""


def _connect(settings: Settings) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(settings.postgres.conninfo, row_factory=dict_row, autocommit=True)


def create_org(settings: Settings, org_id: str, name: str = "", *, operator: bool = False) -> None:
    """Create an organisation (idempotent: an existing one keeps its settings)."""
    try:
        with _connect(settings) as conn:
            conn.execute(
                "INSERT INTO organisations (org_id, name, operator) VALUES (%s, %s, %s)"
                " ON CONFLICT (org_id) DO NOTHING",
                (org_id, name or org_id, operator),
            )
    except psycopg.errors.CheckViolation as exc:
        msg = f"organisation id {org_id!r} must match [a-z0-9][a-z0-9_-]{{0,63}}"
        raise AdminError(msg) from exc


def add_accounts(
    settings: Settings, org_id: str, account_ids: Iterable[str], quota: int | None = None
) -> int:
    """Give accounts to an organisation; return how many were added.

    Raises `AdminError` if one already belongs to another organisation.
    """
    from meterstream.events import ACCOUNT_ID  # noqa: PLC0415

    ids = list(account_ids)
    bad = [a for a in ids if not ACCOUNT_ID.fullmatch(a)]
    if bad:
        msg = f"not valid account ids: {bad[:5]}"
        raise AdminError(msg)
    with _connect(settings) as conn, conn.transaction():
        taken = conn.execute(
            "SELECT account_id, org_id FROM accounts WHERE account_id = ANY(%s) AND org_id <> %s",
            (ids, org_id),
        ).fetchall()
        if taken:
            msg = f"accounts owned by another organisation: {[r['account_id'] for r in taken][:5]}"
            raise AdminError(msg)
        try:
            cur = conn.execute(
                "INSERT INTO accounts (account_id, org_id, daily_event_quota)"
                " SELECT a, %s, %s FROM unnest(%s::text[]) AS a"
                " ON CONFLICT (account_id)"
                " DO UPDATE SET daily_event_quota = excluded.daily_event_quota",
                (org_id, quota, ids),
            )
        except psycopg.errors.ForeignKeyViolation as exc:
            msg = f"no organisation {org_id!r} (create it with `meterstream orgs create`)"
            raise AdminError(msg) from exc
        return cur.rowcount


def create_token(
    settings: Settings, org_id: str, scopes: Iterable[Scope | str], description: str = ""
) -> NewToken:
    """Make a token for an organisation; its secret is in the result and nowhere else."""
    try:
        wanted = sorted({Scope(s).value for s in scopes})
    except ValueError as exc:
        msg = f"scopes are {', '.join(s.value for s in Scope)}: {exc}"
        raise AdminError(msg) from exc
    if not wanted:
        msg = "a token needs at least one scope"
        raise AdminError(msg)
    token = new_token()
    try:
        with _connect(settings) as conn:
            conn.execute(
                "INSERT INTO api_tokens (token_id, org_id, secret_hash, scopes, description)"
                " VALUES (%s, %s, %s, %s, %s)",
                (token.token_id, org_id, token.secret_hash, wanted, description),
            )
    except psycopg.errors.ForeignKeyViolation as exc:
        msg = f"no organisation {org_id!r} (create it with `meterstream orgs create`)"
        raise AdminError(msg) from exc
    return token


def revoke_token(settings: Settings, token_id: str) -> bool:
    """Revoke a token by its id (the part after `ms_`); False if no such valid token."""
    with _connect(settings) as conn:
        cur = conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE token_id = %s AND revoked_at IS NULL",
            (token_id,),
        )
        return cur.rowcount == 1


def list_tokens(settings: Settings, org_id: str | None = None) -> list[dict[str, Any]]:
    """Tokens (never their secrets), optionally of one organisation."""
    with _connect(settings) as conn:
        return conn.execute(
            "SELECT token_id, org_id, scopes, description, created_at, revoked_at FROM api_tokens"
            " WHERE %s::text IS NULL OR org_id = %s ORDER BY org_id, created_at",
            (org_id, org_id),
        ).fetchall()
