"""What a correction's archive lookup and an erasure's rewrite cost, per archive file.

A correction must know whether its event was counted, which the audit archive tells
(`meterstream.corrections.archived`); an erasure rewrites every file holding the account's
rows (`meterstream.archive.erase_rows`). Both read Parquet files, so their cost grows with the
files they read. This builds a synthetic archive in the job's format (ZSTD, no dictionaries;
`--files` files of `--rows` rows over `--days` arrival days, `--accounts` accounts) and times,
in the same run:

- baseline: reading the `account_id` column of every file (the least any scan reads);
- a void by event id without a period (every day is read) and with one (its arrival days);
- an erasure of one account (reading every file, rewriting the ones that hold its rows).

Run: `.venv/bin/python bench/correction_lookup.py [--files 2000 --rows 500 --days 20]`.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from meterstream.archive import committed_files, erase_rows
from meterstream.corrections import archived

SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("account_id", pa.string()),
        ("meter", pa.string()),
        ("aggregation", pa.string()),
        ("event_time", pa.timestamp("ms")),
        ("event_time_ms", pa.int64()),
        ("period_start", pa.date32()),
        ("dimensions", pa.string()),
        ("quantity", pa.decimal128(38, 9)),
        ("unique_value", pa.string()),
        ("dedup_key", pa.string()),
        ("fingerprint", pa.int64()),
        ("source_topic", pa.string()),
        ("source_partition", pa.int32()),
        ("source_offset", pa.int64()),
        ("arrived_at", pa.timestamp("ms")),
        ("payload", pa.string()),
    ]
)


def build(root: Path, files: int, rows: int, days: int, accounts: int) -> None:
    """`files` Parquet files over `days` arrival days, as the job writes them."""
    rng = random.Random(19)  # noqa: S311 - synthetic data
    start = datetime(2026, 10, 1, tzinfo=UTC)
    offset = 0
    for n in range(files):
        day = start + timedelta(days=n * days // files)
        columns: dict[str, list[object]] = {name: [] for name in SCHEMA.names}
        for _ in range(rows):
            account = f"acct-{rng.randrange(accounts):05d}"
            moment = day + timedelta(seconds=rng.uniform(0, 86_000))
            event_id = f"evt-{offset}"
            doc = {"id": event_id, "subject": account, "type": "llm_tokens", "data": {"t": 5}}
            for name, value in (
                ("event_id", event_id),
                ("account_id", account),
                ("meter", "llm_tokens"),
                ("aggregation", "SUM"),
                ("event_time", moment.replace(tzinfo=None)),
                ("event_time_ms", int(moment.timestamp() * 1000)),
                ("period_start", date(moment.year, moment.month, 1)),
                ("dimensions", '{"model":"small"}'),
                ("quantity", Decimal(rng.randint(1, 4000))),
                ("unique_value", None),
                ("dedup_key", f"id:{event_id}"),
                ("fingerprint", rng.getrandbits(63)),
                ("source_topic", "meterstream.events.raw"),
                ("source_partition", offset % 4),
                ("source_offset", offset),
                ("arrived_at", moment.replace(tzinfo=None)),
                ("payload", json.dumps(doc)),
            ):
                columns[name].append(value)
            offset += 1
        path = root / "events" / f"dt={day:%Y-%m-%d}" / f"part-bench-0-{n}"
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table(columns, schema=SCHEMA)
        pq.write_table(table, path, compression="zstd", use_dictionary=False)


def timed(what: str, call: object, baseline: float | None = None) -> float:
    """Run `call` once; print and return its wall time (and its ratio to `baseline`)."""
    started = time.perf_counter()
    call()  # type: ignore[operator]
    seconds = time.perf_counter() - started
    ratio = f" ({seconds / baseline:.1f}x the baseline)" if baseline else ""
    print(f"{what:58} {seconds:8.3f} s{ratio}", flush=True)  # noqa: T201
    return seconds


def main() -> None:
    """Build the archive, time each operation on it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--accounts", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meterstream-bench-") as tmp:
        root = Path(tmp) / "archive"
        build(root, args.files, args.rows, args.days, args.accounts)
        files = committed_files(root)
        print(f"{len(files)} files, {args.rows} rows each, {args.days} days")  # noqa: T201
        base = timed(
            "baseline: the account_id column of every file",
            lambda: [pq.ParquetFile(f).read(columns=["account_id"]) for f in files],
        )
        target = pq.ParquetFile(files[len(files) // 2]).read().slice(0, 1).to_pylist()[0]
        account, event_id = target["account_id"], target["event_id"]
        timed(
            "void by event id, no period (every day read)",
            lambda: archived.arrivals_of_event(root, account, event_id),
            base,
        )
        period = target["period_start"]
        timed(
            "void by event id with --period (its arrival days)",
            lambda: archived.arrivals_of_event(
                root, account, event_id, archived.period_days(period)
            ),
            base,
        )
        done = []
        timed(
            "erasure of one account (read all, rewrite its files)",
            lambda: done.append(erase_rows(root, account, erasure="bench", wait_s=0)),
            base,
        )
        print(  # noqa: T201
            f"  it rewrote {done[0].files_rewritten} of {done[0].files_checked} files,"
            f" removing {done[0].rows_removed} rows"
        )


if __name__ == "__main__":
    main()
