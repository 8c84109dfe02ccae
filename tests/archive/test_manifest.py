"""The manifest on its own: sealing and verifying Parquet files written here with pyarrow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meterstream.archive import (
    GENESIS,
    MANIFEST,
    ArchiveError,
    committed_files,
    read_manifest,
    seal,
    sha256_file,
    verify,
)


def part(archive: Path, day: str, name: str, rows: int = 3) -> Path:
    path = archive / "events" / f"dt={day}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"event_id": [f"e{i}" for i in range(rows)]}), path)
    return path


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    part(root, "2026-10-31", "part-a-0-0")
    part(root, "2026-11-01", "part-a-0-1", rows=5)
    # What Flink leaves that is not data: an in-progress file and a success marker.
    (root / "events" / "dt=2026-11-01" / ".part-a-0-2.inprogress.1234").write_bytes(b"PAR1")
    (root / "events" / "dt=2026-10-31" / "_SUCCESS").write_bytes(b"")
    return root


def test_committed_files_skip_in_progress_files_and_success_markers(archive: Path) -> None:
    assert [p.relative_to(archive).as_posix() for p in committed_files(archive)] == [
        "events/dt=2026-10-31/part-a-0-0",
        "events/dt=2026-11-01/part-a-0-1",
    ]


def test_seal_appends_each_committed_file_once_in_a_hash_chain(archive: Path) -> None:
    first = seal(archive)
    assert [(e.path, e.rows) for e in first.sealed] == [
        ("events/dt=2026-10-31/part-a-0-0", 3),
        ("events/dt=2026-11-01/part-a-0-1", 5),
    ]
    assert seal(archive).sealed == []
    part(archive, "2026-11-01", "part-b-0-0")
    third = seal(archive)
    assert [e.path for e in third.sealed] == ["events/dt=2026-11-01/part-b-0-0"]
    entries = read_manifest(archive)
    assert len(entries) == 3
    assert entries[0].chain == entries[0].chained(GENESIS).chain
    assert entries[2].chain == entries[2].chained(entries[1].chain).chain == third.head
    assert verify(archive).ok


def test_verify_reports_a_changed_and_a_missing_file(archive: Path) -> None:
    seal(archive)
    changed, missing = committed_files(archive)
    data = bytearray(changed.read_bytes())
    data[10] ^= 0xFF
    changed.write_bytes(bytes(data))
    missing.unlink()
    result = verify(archive)
    assert not result.ok
    assert list(result.changed) == ["events/dt=2026-10-31/part-a-0-0"]
    assert result.missing == ["events/dt=2026-11-01/part-a-0-1"]


def test_verify_fails_on_an_edited_manifest_line_even_with_the_files_rehashed(
    archive: Path,
) -> None:
    seal(archive)
    target = committed_files(archive)[0]
    target.write_bytes(target.read_bytes() + b"x")
    # Someone updates the manifest to match the new bytes: the chain no longer holds.
    lines = (archive / MANIFEST).read_text().splitlines()
    entry = json.loads(lines[0])
    entry["size"], entry["sha256"] = target.stat().st_size, sha256_file(target)
    lines[0] = json.dumps(entry, separators=(",", ":"))
    (archive / MANIFEST).write_text("\n".join(lines) + "\n")
    result = verify(archive)
    assert not result.changed
    assert result.manifest == [
        "line 1 (events/dt=2026-10-31/part-a-0-0): chain hash does not match"
    ]
    assert not result.ok


def test_verify_passes_files_committed_after_the_last_seal_unless_strict(archive: Path) -> None:
    head = seal(archive).head
    part(archive, "2026-11-02", "part-c-0-0")
    result = verify(archive)
    assert result.ok
    assert result.pending == ["events/dt=2026-11-02/part-c-0-0"]
    assert not verify(archive, strict=True).ok
    assert verify(archive, expected_head=head).ok
    assert not verify(archive, expected_head="f" * 64).ok


def test_a_file_that_is_not_parquet_is_not_sealed_and_fails_verify(archive: Path) -> None:
    stray = archive / "events" / "dt=2026-11-01" / "part-x"
    stray.write_bytes(b"not parquet at all")
    before = stray.stat().st_ctime
    result = seal(archive)
    assert result.skipped == ["events/dt=2026-11-01/part-x"]
    assert stray.stat().st_ctime == before
    checked = verify(archive)
    assert checked.unsealed == ["events/dt=2026-11-01/part-x"]
    assert not checked.ok


def test_an_interrupted_manifest_line_is_reported_not_repaired(archive: Path) -> None:
    seal(archive)
    with (archive / MANIFEST).open("a") as f:
        f.write('{"path":"events/dt=2026-11-0')
    with pytest.raises(ArchiveError, match="incomplete line"):
        verify(archive)
    with pytest.raises(ArchiveError, match="incomplete line"):
        seal(archive)
    assert os.path.getsize(archive / MANIFEST) > 0
