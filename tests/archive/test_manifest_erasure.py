"""Erasure in the archive: files rewritten without one account's rows, sealed again.

Files are written here with pyarrow (the job's own are covered by tests/corrections). A file
an erasure rewrote verifies, with a replacement line that names the erasure and the bytes it
replaced; a file replaced any other way does not, nor does a forged replacement line.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meterstream.archive import (
    MANIFEST,
    committed_files,
    erase_rows,
    read_manifest,
    seal,
    sha256_file,
    verify,
)


def part(archive: Path, day: str, name: str, accounts: list[str]) -> Path:
    path = archive / "events" / f"dt={day}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "event_id": [f"{a}-e{i}" for i, a in enumerate(accounts)],
            "account_id": accounts,
            "payload": [json.dumps({"subject": a, "secret": f"s-{a}"}) for a in accounts],
        }
    )
    pq.write_table(table, path)
    return path


def rows(archive: Path) -> list[tuple[str, str]]:
    out = []
    for path in committed_files(archive):
        table = pq.ParquetFile(path).read()
        out += list(zip(table["account_id"].to_pylist(), table["payload"].to_pylist(), strict=True))
    return sorted(out)


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    part(root, "2026-10-31", "part-a-0-0", ["acct-1", "acct-2", "acct-1"])
    part(root, "2026-11-01", "part-a-0-1", ["acct-2", "acct-3"])
    part(root, "2026-11-01", "part-a-0-2", ["acct-1"])
    return root


def test_erase_rows_rewrites_only_the_files_holding_the_account_and_verify_passes(
    archive: Path,
) -> None:
    seal(archive)
    untouched = sha256_file(archive / "events" / "dt=2026-11-01" / "part-a-0-1")

    result = erase_rows(archive, "acct-1", erasure="e-1", wait_s=0)

    assert (result.files_checked, result.files_rewritten, result.rows_removed) == (3, 2, 3)
    assert [a for a, _ in rows(archive)] == ["acct-2", "acct-2", "acct-3"]
    assert not any("acct-1" in payload for _, payload in rows(archive))
    assert sha256_file(archive / "events" / "dt=2026-11-01" / "part-a-0-1") == untouched
    replaced = [e for e in read_manifest(archive) if e.erasure]
    assert [(e.path, e.rows, e.removed_rows, e.erasure) for e in replaced] == [
        ("events/dt=2026-10-31/part-a-0-0", 1, 2, "e-1"),
        ("events/dt=2026-11-01/part-a-0-2", 0, 1, "e-1"),
    ]
    result = verify(archive)
    assert result.ok, result
    assert (result.checked, result.replaced) == (3, 2)
    # Nothing of the account's in the manifest either; a second erasure changes nothing.
    assert "acct-1" not in (archive / MANIFEST).read_text()
    again = erase_rows(archive, "acct-1", erasure="e-2", wait_s=0)
    assert (again.files_rewritten, again.rows_removed) == (0, 0)


def test_a_file_replaced_outside_an_erasure_fails_verify(archive: Path) -> None:
    seal(archive)
    path = archive / "events" / "dt=2026-10-31" / "part-a-0-0"
    table = pq.ParquetFile(path).read()
    pq.write_table(table.slice(1), path)  # an account's rows removed by hand

    result = verify(archive)

    assert not result.ok
    assert list(result.changed) == ["events/dt=2026-10-31/part-a-0-0"]


def test_a_forged_replacement_line_fails_verify(archive: Path) -> None:
    seal(archive)
    path = archive / "events" / "dt=2026-10-31" / "part-a-0-0"
    erase_rows(archive, "acct-2", erasure="e-1", wait_s=0)
    assert verify(archive).ok
    # Replace the file again and claim an erasure did it, with a line chained correctly.
    pq.write_table(pq.ParquetFile(path).read().slice(1), path)
    entries = read_manifest(archive)
    last = entries[-1]
    forged = type(last)(
        last.path,
        path.stat().st_size,
        1,
        sha256_file(path),
        last.sealed_at,
        replaces="0" * 64,
        erasure="e-9",
        removed_rows=1,
    ).chained(last.chain)
    with (archive / MANIFEST).open("a") as manifest:
        manifest.write(forged.line())

    result = verify(archive)

    assert not result.ok
    assert any("replaces other bytes" in problem for problem in result.manifest)


def test_lines_of_files_never_erased_keep_their_format(archive: Path) -> None:
    seal(archive)
    for line in (archive / MANIFEST).read_text().splitlines():
        assert list(json.loads(line)) == ["path", "size", "rows", "sha256", "sealed_at", "chain"]


def test_erase_rows_waits_for_files_being_written_and_erases_them_once_committed(
    archive: Path,
) -> None:
    hidden = archive / "events" / "dt=2026-11-01" / ".part-b-0-0.inprogress.77"
    never = archive / "events" / "dt=2026-11-01" / ".part-c-0-0.inprogress.78"
    part(archive, "2026-11-01", hidden.name, ["acct-1", "acct-3"])
    part(archive, "2026-11-01", never.name, ["acct-1"])

    def commit() -> None:  # as Flink does at a checkpoint: a rename
        time.sleep(1.0)
        hidden.rename(hidden.with_name("part-b-0-0"))

    committer = threading.Thread(target=commit)
    committer.start()
    result = erase_rows(archive, "acct-1", erasure="e-1", wait_s=3, poll_s=0.1)
    committer.join()

    assert result.files_rewritten == 3
    assert [a for a, _ in rows(archive)] == ["acct-2", "acct-2", "acct-3", "acct-3"]
    assert result.still_in_progress == ["events/dt=2026-11-01/.part-c-0-0.inprogress.78"]
    assert verify(archive).ok
