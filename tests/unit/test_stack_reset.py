"""`meterstream reset` and the stack id that ties an audit archive to its stack.

The reset runs on a stack directory of its own in which nothing runs (no services needed).
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from meterstream.archive import ArchiveError, archive_owner, check_owner, claim
from meterstream.config import Settings
from meterstream.stack import local

WRITTEN = ("kafka/data", "postgres/data", *local.STACK_WRITES, "archive/events/dt=2026-11-30")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stack_dir(tmp_path: Path) -> Path:
    for name in (*WRITTEN, "jars/flink"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "file").write_text("x")
    return tmp_path


def stopped(stack_dir: Path) -> Settings:
    base = Settings()
    return replace(
        base, stack_dir=stack_dir, flink=replace(base.flink, rest_port=free_port(), archive_dir="")
    )


def test_reset_deletes_everything_the_stack_wrote_but_the_downloaded_jars(stack_dir: Path) -> None:
    lines: list[str] = []
    local.reset(stopped(stack_dir), say=lines.append)
    assert sorted(p.name for p in stack_dir.iterdir()) == ["jars"]
    assert (stack_dir / "jars" / "flink" / "file").exists()
    assert str(stack_dir / "archive") in lines[-1]


def test_reset_keeps_the_archive_only_when_asked(stack_dir: Path) -> None:
    lines: list[str] = []
    local.reset(stopped(stack_dir), keep_archive=True, say=lines.append)
    assert sorted(p.name for p in stack_dir.iterdir()) == ["archive", "jars"]
    assert "kept the audit archive" in lines[0]


def test_an_archive_is_claimed_once_and_refused_to_another_stack(tmp_path: Path) -> None:
    root, mine, theirs = tmp_path / "archive", str(uuid.uuid4()), str(uuid.uuid4())
    assert archive_owner(root) is None
    check_owner(root, mine)  # an unmarked (or missing) archive passes
    claim(root, mine)
    claim(root, mine)
    assert archive_owner(root) == mine
    with pytest.raises(ArchiveError, match=f"belongs to stack {mine}, not to this stack"):
        check_owner(root, theirs)
    with pytest.raises(ArchiveError):
        claim(root, theirs)
    assert archive_owner(root) == mine
