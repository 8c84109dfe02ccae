"""The audit archive on disk: which Parquet files are committed, and their SHA-256 manifest.

The Flink job writes the files (meterstream/flink/archive.py). `seal` appends a line per newly
committed file to `<archive>/MANIFEST.jsonl` (path, size, rows, SHA-256, when it was sealed) and
chains every line to the one before it, so that editing, dropping or reordering a line breaks
the chain. `verify` recomputes everything. The one change ever made to a committed file is an
erasure's (`erase_rows`): the file is rewritten without one account's rows and sealed again by
a replacement line naming the erasure, the bytes it replaces and the rows it removed; any other
change to a file shows as a file that no longer matches its line.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from meterstream.config import Settings
from meterstream.errors import MeterstreamError

MANIFEST = "MANIFEST.jsonl"
#: The Flink table's directory below the archive root (`events/dt=YYYY-MM-DD/part-…`). The
#: manifest stays outside it: Flink's reader takes every visible entry of a table's directory
#: for a partition.
EVENTS = "events"
#: The `chain` of the line before the first one.
GENESIS = "0" * 64
_CHUNK = 1 << 20


class ArchiveError(MeterstreamError):
    """The archive or its manifest cannot be read as expected."""


def archive_root(settings: Settings) -> Path:
    """The archive's directory: `flink.archive_dir`, or `<stack_dir>/archive` when unset."""
    configured = settings.flink.archive_dir
    return Path(configured).resolve() if configured else settings.stack_dir / "archive"


#: The file at the archive's root naming the stack (`stack_identity`) whose job writes it.
STACK_ID_FILE = "STACK_ID"


def stack_id(settings: Settings) -> str:
    """This stack's id, from PostgreSQL (migration 0007)."""
    import psycopg  # noqa: PLC0415 - keep `meterstream --help` fast

    with psycopg.connect(settings.postgres.conninfo) as conn:
        row = conn.execute("SELECT stack_id FROM stack_identity").fetchone()
    if row is None:
        msg = "stack_identity is empty: run `meterstream migrate`"
        raise ArchiveError(msg)
    return str(row[0])


def archive_owner(root: Path) -> str | None:
    """The stack id an archive is marked with; None for an unmarked (older) archive."""
    marker = root / STACK_ID_FILE
    return marker.read_text().strip() if marker.is_file() else None


def check_owner(root: Path, stack: str) -> None:
    """Refuse an archive marked with another stack's id (unmarked archives pass).

    Raises:
        ArchiveError: the archive belongs to another stack.
    """
    owner = archive_owner(root)
    if owner is not None and owner != stack:
        msg = (
            f"the archive at {root} belongs to stack {owner}, not to this stack ({stack}): "
            "it was written before a `meterstream reset` or by another deployment; "
            "pass this stack's archive (--dir / --archive-dir) or move that one away"
        )
        raise ArchiveError(msg)


def claim(root: Path, stack: str) -> None:
    """Mark the archive as this stack's (creating it), or refuse one of another stack."""
    check_owner(root, stack)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / STACK_ID_FILE
    if not marker.exists():
        marker.write_text(stack + "\n")


@dataclass(frozen=True, slots=True)
class SealedFile:
    """One manifest line.

    Attributes:
        path: relative to the archive root, `/`-separated (`events/dt=2026-10-31/part-…`).
        size: bytes.
        rows: rows in the Parquet file (from its footer).
        sha256: hex digest of the file's bytes.
        sealed_at: when the sealing run listed the archive (UTC, RFC 3339); every file that
            was committed by then is in the manifest.
        chain: SHA-256 of the previous line's `chain` and this line's other fields.
        replaces: for a file rewritten by an erasure, the SHA-256 of the bytes it replaced
            (the path's line before); empty on every other line.
        erasure: the erasure that rewrote it (its id); empty on every other line.
        removed_rows: how many rows the erasure removed.
    """

    path: str
    size: int
    rows: int
    sha256: str
    sealed_at: str
    chain: str = ""
    replaces: str = ""
    erasure: str = ""
    removed_rows: int = 0

    def _fields(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.erasure:  # the lines `seal` writes keep the format they always had
            for name in ("replaces", "erasure", "removed_rows"):
                del data[name]
        return data

    def body(self) -> str:
        """The canonical JSON of every field but `chain` (what the chain hashes)."""
        data = self._fields()
        del data["chain"]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def chained(self, previous: str) -> SealedFile:
        """This entry with its `chain` computed from the previous line's."""
        digest = hashlib.sha256(f"{previous}\n{self.body()}".encode()).hexdigest()
        return replace(self, chain=digest)

    def line(self) -> str:
        """The manifest line (JSON, fields in a fixed order, newline-terminated)."""
        return json.dumps(self._fields(), separators=(",", ":")) + "\n"


def _hidden(part: str) -> bool:
    # Flink's in-progress files start with '.', its success files with '_'.
    return part.startswith((".", "_"))


def committed_files(root: Path) -> list[Path]:
    """Every committed part file: below a partition directory, no hidden path component.

    In-progress files (`.part-…inprogress…`) and `_SUCCESS` markers are not data; the
    manifest itself lives at the root, outside every partition.

    >>> committed_files(Path("/nonexistent"))
    []
    """
    if not root.is_dir():
        return []
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not _hidden(d))
        here = Path(directory)
        if here == root:
            continue
        found += [here / name for name in sorted(files) if not _hidden(name)]
    return found


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def parquet_rows(path: Path) -> int:
    """Rows in a Parquet file, from its footer; ArchiveError if it is not Parquet."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - keep `meterstream --help` fast

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        msg = f"{path} is not a readable Parquet file: {exc}"
        raise ArchiveError(msg) from exc


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def read_manifest(root: Path) -> list[SealedFile]:
    """The manifest's entries in order; ArchiveError on a line that is not an entry."""
    path = root / MANIFEST
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        msg = f"{path} ends in an incomplete line (an interrupted seal?); it needs a look"
        raise ArchiveError(msg)
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            data: dict[str, Any] = json.loads(line)
            entries.append(
                SealedFile(
                    str(data["path"]),
                    int(data["size"]),
                    int(data["rows"]),
                    str(data["sha256"]),
                    str(data["sealed_at"]),
                    str(data["chain"]),
                    str(data.get("replaces", "")),
                    str(data.get("erasure", "")),
                    int(data.get("removed_rows", 0)),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            msg = f"{path}:{number} is not a manifest entry: {line[:200]!r}"
            raise ArchiveError(msg) from exc
    return entries


def chain_head(entries: list[SealedFile]) -> str:
    """The last line's chain hash: record it elsewhere to detect a rewritten manifest."""
    return entries[-1].chain if entries else GENESIS


@dataclass(frozen=True, slots=True)
class SealResult:
    """What one `seal` did.

    Attributes:
        sealed: the entries appended.
        skipped: committed files that are not Parquet (not sealed; `verify` reports them).
        head: the manifest's chain head after sealing.
    """

    sealed: list[SealedFile]
    skipped: list[str]
    head: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def seal(root: Path) -> SealResult:
    """Append a manifest line for every committed file that is not in the manifest yet.

    Safe to run while the job writes (files appear whole, by rename) and concurrently with
    another `seal` (an exclusive lock on the manifest). Never rewrites a line.
    """
    root.mkdir(parents=True, exist_ok=True)
    with (root / MANIFEST).open("a", encoding="utf-8") as manifest:
        fcntl.flock(manifest, fcntl.LOCK_EX)
        return _seal_locked(root, manifest)


def _seal_locked(root: Path, manifest: IO[str]) -> SealResult:
    """`seal`, with the manifest open for appending and locked."""
    entries = read_manifest(root)
    known = {e.path for e in entries}
    # Taken before listing: every file committed at this instant is in the listing.
    sealed_at = _now()
    previous = chain_head(entries)
    sealed: list[SealedFile] = []
    skipped: list[str] = []
    for path in committed_files(root):
        rel = _rel(root, path)
        if rel in known:
            continue
        try:
            rows = parquet_rows(path)
        except ArchiveError:
            skipped.append(rel)
            continue
        entry = SealedFile(rel, path.stat().st_size, rows, sha256_file(path), sealed_at)
        entry = entry.chained(previous)
        previous = entry.chain
        manifest.write(entry.line())
        sealed.append(entry)
    manifest.flush()
    os.fsync(manifest.fileno())
    return SealResult(sealed, skipped, previous)


@dataclass(slots=True)
class VerifyResult:
    """What `verify` found; `ok` when nothing is wrong.

    Attributes:
        checked: sealed files whose size and SHA-256 still match.
        changed: sealed files whose bytes changed (path: what differs).
        missing: sealed files that are gone.
        unsealed: committed files not in the manifest that were already there when the last
            seal listed the archive (their inode changed before `sealed_at`): added behind
            the manifest's back, or files `seal` could not read as Parquet.
        pending: committed files newer than the last seal (the job keeps writing); a problem
            only with `strict`.
        manifest: problems of the manifest itself (broken chain, repeated paths, wrong head).
    """

    checked: int = 0
    changed: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unsealed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    manifest: list[str] = field(default_factory=list)
    head: str = GENESIS
    strict: bool = False
    #: Sealed files an erasure rewrote (their replacement lines match them).
    replaced: int = 0

    @property
    def ok(self) -> bool:
        """True when the archive matches its manifest."""
        return not (
            self.changed
            or self.missing
            or self.unsealed
            or self.manifest
            or (self.strict and self.pending)
        )


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _check_chain(entries: list[SealedFile], result: VerifyResult) -> dict[str, SealedFile]:
    """Check the chain; return each path's last line.

    A path may come back only as an erasure's replacement of the bytes sealed before.
    """
    previous = GENESIS
    last: dict[str, SealedFile] = {}
    for number, entry in enumerate(entries, start=1):
        expected = entry.chained(previous).chain
        if entry.chain != expected:
            result.manifest.append(f"line {number} ({entry.path}): chain hash does not match")
        before = last.get(entry.path)
        if before is not None and not entry.erasure:
            result.manifest.append(f"line {number}: {entry.path} is sealed twice")
        elif before is None and entry.erasure:
            result.manifest.append(f"line {number}: {entry.path} replaces a file never sealed")
        elif before is not None and entry.replaces != before.sha256:
            result.manifest.append(
                f"line {number}: {entry.path} replaces other bytes than the ones sealed before"
            )
        if entry.erasure and before is not None:
            result.replaced += 1
        last[entry.path] = entry
        previous = entry.chain
    return last


def verify(root: Path, *, strict: bool = False, expected_head: str | None = None) -> VerifyResult:
    """Recompute every sealed file's size and SHA-256, and look for unsealed files.

    Args:
        root: the archive.
        strict: count files committed after the last seal as problems too.
        expected_head: a chain head recorded earlier; the manifest must contain it (so it
            was only appended to since).
    """
    entries = read_manifest(root)
    result = VerifyResult(head=chain_head(entries), strict=strict)
    latest = _check_chain(entries, result)
    if expected_head and expected_head not in {e.chain for e in entries} | {GENESIS}:
        result.manifest.append(f"the manifest does not contain the chain head {expected_head}")
    for entry in latest.values():
        path = root / entry.path
        if not path.is_file():
            result.missing.append(entry.path)
            continue
        size = path.stat().st_size
        if size != entry.size:
            result.changed[entry.path] = f"size {size} != sealed {entry.size}"
        elif sha256_file(path) != entry.sha256:
            result.changed[entry.path] = "SHA-256 differs from the sealed one"
        else:
            result.checked += 1
    sealed = set(latest)
    last_seal = max((_parse_time(e.sealed_at) for e in entries), default=None)
    for path in committed_files(root):
        rel = _rel(root, path)
        if rel in sealed:
            continue
        # A rename (Flink's commit) sets ctime, and nothing can set it back: a file whose inode
        # last changed before the last seal listed the archive was visible to that seal.
        if last_seal is not None and path.stat().st_ctime <= last_seal:
            result.unsealed.append(rel)
        else:
            result.pending.append(rel)
    return result


# --- erasure -------------------------------------------------------------------------------


def in_progress_files(root: Path) -> list[Path]:
    """The part files the job is writing (hidden until their checkpoint commits them)."""
    if not root.is_dir():
        return []
    return sorted(p for p in (root / EVENTS).glob("*/.part-*") if p.is_file())


@dataclass(slots=True)
class ArchiveErasure:
    """What `erase_rows` did to the archive."""

    files_checked: int = 0
    files_rewritten: int = 0
    rows_removed: int = 0
    #: Files the job was writing when the erasure began (waited for, then checked).
    in_progress_at_start: int = 0
    #: Files the job was writing when the erasure began, not committed within its wait
    #: (a stopped job's pending files, or leftovers of a crashed attempt): not checked.
    still_in_progress: list[str] = field(default_factory=list)


def _account_rows(path: Path, account: str) -> int:
    import pyarrow.compute as pc  # noqa: PLC0415 - keep `meterstream --help` fast
    import pyarrow.parquet as pq  # noqa: PLC0415

    column = pq.ParquetFile(path).read(columns=["account_id"]).column("account_id")
    return int(pc.sum(pc.equal(column, account)).as_py() or 0)


def _without(path: Path, account: str, out: Path) -> int:
    """Write `path`'s rows but `account`'s to `out` (same schema, the job's format options)."""
    import pyarrow.compute as pc  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    table = pq.ParquetFile(path).read()
    keep = pc.invert(pc.fill_null(pc.equal(table["account_id"], account), False))
    kept = table.filter(keep)
    # As the job writes them (meterstream/flink/archive.py): ZSTD, no dictionaries, v1 pages,
    # millisecond timestamps not adjusted to UTC (the wall clock of UTC).
    pq.write_table(kept, out, compression="zstd", use_dictionary=False, data_page_version="1.0")
    with out.open("rb") as f:
        os.fsync(f.fileno())
    return table.num_rows - kept.num_rows


def _replace_sealed(
    manifest: IO[str],
    last: dict[str, SealedFile],
    head: str,
    path: Path,
    new: Path,
    *,
    rel: str,
    erasure: str,
    removed: int,
) -> SealedFile:
    """Put `new` in `path`'s place and seal it as the erasure's replacement.

    The line names the bytes sealed before (`last[rel]`) and is chained to `head`; the
    manifest is open and locked.
    """
    old = last.get(rel)
    if old is None or sha256_file(path) != old.sha256:
        new.unlink(missing_ok=True)
        msg = f"{rel} changed since it was sealed: run `meterstream archive verify`"
        raise ArchiveError(msg)
    os.replace(new, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    entry = SealedFile(
        rel,
        path.stat().st_size,
        parquet_rows(path),
        sha256_file(path),
        _now(),
        replaces=old.sha256,
        erasure=erasure,
        removed_rows=removed,
    ).chained(head)
    manifest.write(entry.line())
    manifest.flush()
    os.fsync(manifest.fileno())
    return entry


def erase_rows(
    root: Path, account: str, *, erasure: str, wait_s: float, poll_s: float = 1.0
) -> ArchiveErasure:
    """Rewrite every committed file that holds `account`'s rows without them, sealed again.

    The job keeps writing meanwhile: files it commits during the erasure are checked too, and
    the erasure waits up to `wait_s` for the files it was writing when the erasure began to be
    committed (a checkpoint or two), so that rows already on their way are erased as well. The
    manifest stays locked throughout (a concurrent `seal` waits).
    """
    result = ArchiveErasure()
    if not root.is_dir():
        return result
    waiting = set(in_progress_files(root))
    result.in_progress_at_start = len(waiting)
    checked: set[str] = set()
    deadline = time.monotonic() + wait_s
    with (root / MANIFEST).open("a", encoding="utf-8") as manifest:
        fcntl.flock(manifest, fcntl.LOCK_EX)
        while True:
            # Every committed file is sealed before it is read, so its replacement names the
            # bytes that were sealed.
            head = _seal_locked(root, manifest).head
            last = {e.path: e for e in read_manifest(root)}
            for path in committed_files(root):
                rel = _rel(root, path)
                if rel in checked:
                    continue
                checked.add(rel)
                if _account_rows(path, account) == 0:
                    continue
                new = path.with_name(f".erasing-{path.name}")
                removed = _without(path, account, new)
                entry = _replace_sealed(
                    manifest, last, head, path, new, rel=rel, erasure=erasure, removed=removed
                )
                last[rel], head = entry, entry.chain
                result.files_rewritten += 1
                result.rows_removed += removed
            waiting = {p for p in waiting if p.exists()}
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
    result.files_checked = len(checked)
    result.still_in_progress = sorted(_rel(root, p) for p in waiting)
    return result
