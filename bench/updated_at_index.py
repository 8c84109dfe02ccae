r"""What the evaluator's index on `usage_aggregates.updated_at` costs each write (a script).

    .venv/bin/python bench/updated_at_index.py --rows 10000 --rounds 6

Two scratch copies of `usage_aggregates` (same columns, key and `updated_at` trigger), one with
the index of migration 0008 and one without, get the same upserts as the job's sink sends them:
every key rewritten with a new figure, in batches of 1,000 (`executemany` of
`INSERT ... ON CONFLICT DO UPDATE`). The rounds alternate between the two tables (A B B A ...),
and the script prints the time per 1,000 upserts of each and their ratio. It measures
PostgreSQL's share only; the job's own CPU is unchanged by the index. Needs the local stack.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from meterstream.config import load_settings

UPSERT = (
    "INSERT INTO {t} (account_id, meter, period_start, dimensions, aggregation, quantity,"
    " event_count, first_event_at, last_event_at, last_arrived_at)"
    " VALUES (%s, 'api_calls', '2026-11-01', '', 'COUNT', %s, %s, %s, %s, %s)"
    " ON CONFLICT (account_id, meter, period_start, dimensions) DO UPDATE SET"
    " quantity = excluded.quantity, event_count = excluded.event_count,"
    " last_event_at = excluded.last_event_at, last_arrived_at = excluded.last_arrived_at"
)


def main() -> None:
    """Create the scratch tables, time interleaved rounds, drop the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=10_000, help="keys rewritten per round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per table")
    args = parser.parse_args()
    settings = load_settings()
    suffix = uuid.uuid4().hex[:6]
    tables = {"with": f"ua_idx_{suffix}", "without": f"ua_noidx_{suffix}"}
    times: dict[str, list[float]] = {"with": [], "without": []}
    with psycopg.connect(settings.postgres.conninfo, autocommit=True) as conn:
        for variant, table in tables.items():
            conn.execute(f"CREATE TABLE {table} (LIKE usage_aggregates INCLUDING ALL)")
            conn.execute(
                f"CREATE TRIGGER touch BEFORE INSERT OR UPDATE ON {table}"
                " FOR EACH ROW EXECUTE FUNCTION meterstream_touch_updated_at()"
            )
            if variant == "without":
                index = conn.execute(
                    "SELECT indexname FROM pg_indexes WHERE tablename = %s"
                    " AND indexdef LIKE '%%(updated_at)%%'",
                    (table,),
                ).fetchone()
                if index:
                    conn.execute(f"DROP INDEX {index[0]}")
        try:
            now = datetime.now(UTC)
            for step in range(args.rounds + 1):  # step 0 inserts: not timed
                order = ("with", "without") if step % 4 in (0, 3) else ("without", "with")
                for variant in order:
                    rows = [
                        (f"acct-{k:06d}", Decimal(step * 7 + k % 5), step + 1, now, now, now)
                        for k in range(args.rows)
                    ]
                    started = time.perf_counter()
                    with conn.transaction(), conn.cursor() as cur:
                        for i in range(0, len(rows), 1_000):
                            cur.executemany(UPSERT.format(t=tables[variant]), rows[i : i + 1_000])
                    if step:
                        times[variant].append(time.perf_counter() - started)
        finally:
            for table in tables.values():
                conn.execute(f"DROP TABLE IF EXISTS {table}")
    per = {v: 1_000 * statistics.median(t) / args.rows * 1_000 for v, t in times.items()}
    print(
        f"ms per 1,000 upserts: with the index {per['with']:.1f}, without {per['without']:.1f}"
        f" ({per['with'] / per['without']:.2f}x); rounds: "
        + "; ".join(f"{v} " + ", ".join(f"{x:.2f}" for x in t) for v, t in times.items())
    )


if __name__ == "__main__":
    main()
