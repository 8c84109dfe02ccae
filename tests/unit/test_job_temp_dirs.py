"""A local job's JVM keeps its temporary files in a directory of its own, cleaned up after it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meterstream.flink.launch import remove_abandoned_temp_dirs, use_own_temp_dir


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def sleeper() -> Iterator[Callable[[Path], int]]:
    """Start live processes whose command line names a path (as a job's JVM names its dir)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(named: Path) -> int:
        code = "import time; time.sleep(60)"
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(named)]))
        # Popen can return a moment before /proc/<pid>/cmdline shows the new command line
        # (a CI run once saw the directory removed): wait until it names the path.
        cmdline = Path(f"/proc/{procs[-1].pid}/cmdline")
        deadline = time.monotonic() + 10
        while str(named).encode() not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        return procs[-1].pid

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_only_the_directories_of_dead_jobs_are_removed(
    tmp_path: Path, sleeper: Callable[[Path], int]
) -> None:
    dead = tmp_path / f"job-{_dead_pid()}"
    alive = tmp_path / f"job-{sleeper(Path('/nothing'))}"
    for directory in (dead, alive):
        (directory / "rocksdb").mkdir(parents=True)
    assert remove_abandoned_temp_dirs(tmp_path) == [dead]
    assert not dead.exists()
    assert alive.exists()


def test_a_directory_named_by_a_live_command_line_stays(
    tmp_path: Path, sleeper: Callable[[Path], int]
) -> None:
    # A job's JVM can outlive its killed Python parent for a moment: its command line
    # (-Djava.io.tmpdir=...) names the directory.
    in_use = tmp_path / f"job-{_dead_pid()}"
    in_use.mkdir()
    sleeper(in_use)
    assert remove_abandoned_temp_dirs(tmp_path) == []
    assert in_use.exists()


def test_a_job_gets_its_own_directory_unless_one_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("JVM_ARGS", "-Xmx1g -Djava.io.tmpdir=/elsewhere")
    assert use_own_temp_dir(tmp_path / "root") is None

    monkeypatch.setenv("JVM_ARGS", "-Xmx1g")
    abandoned = tmp_path / "root" / f"job-{_dead_pid()}"
    abandoned.mkdir(parents=True)
    own = use_own_temp_dir(tmp_path / "root")
    assert own == tmp_path / "root" / f"job-{os.getpid()}"
    assert own.is_dir()
    assert os.environ["JVM_ARGS"] == f"-Xmx1g -Djava.io.tmpdir={own}"
    assert tempfile.gettempdir() == str(own)
    assert not abandoned.exists()
