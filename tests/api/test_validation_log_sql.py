"""The SQL behind the API's validation-log reads, on the real PostgreSQL."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from meterstream.config import Settings

pytestmark = pytest.mark.integration


def test_payload_subject_works_in_a_parallel_query(stack: Settings) -> None:
    table = f"test_parallel_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(stack.postgres.conninfo, autocommit=True) as conn:
        version = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
        force = "debug_parallel_query" if version >= 160000 else "force_parallel_mode"  # noqa: PLR2004
        conn.execute(f"CREATE TABLE {table} (payload text)")
        try:
            conn.execute(
                f"INSERT INTO {table} VALUES (%s), (%s)",  # noqa: S608 - the test's own name
                ('{"subject": "acct-1"}', "not JSON"),
            )
            conn.execute(f"SET {force} = on")  # plan every query to run in a parallel worker
            rows = conn.execute(
                f"SELECT meterstream_payload_subject(payload) FROM {table} ORDER BY 1"  # noqa: S608
            ).fetchall()
        finally:
            conn.execute(f"RESET {force}")
            conn.execute(f"DROP TABLE {table}")

    assert rows == [("acct-1",), (None,)]
