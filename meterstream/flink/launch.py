"""Start the aggregation job as its own process (a local mini cluster in a child JVM).

The CLI and the end-to-end tests use this; a separate process can be killed like a crashed job.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from meterstream.config import PROJECT_ROOT
from meterstream.stack.processes import alive

JOB = PROJECT_ROOT / "jobs" / "aggregate_usage.py"


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Arguments of `jobs/aggregate_usage.py`; None means the job's default."""

    topic: str | None = None
    rejected_topic: str | None = None
    group_id: str | None = None
    checkpoint_dir: Path | None = None
    restore_from: str | None = None
    bounded: bool = False
    job_name: str | None = None
    archive_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        """The command line that runs the job with the current interpreter."""
        return [sys.executable, str(JOB), *self.job_args()]

    def job_args(self) -> list[str]:
        """The job's own arguments (as `flink run --python` passes them on)."""
        args: list[str] = []
        for flag, value in (
            ("--topic", self.topic),
            ("--rejected-topic", self.rejected_topic),
            ("--group-id", self.group_id),
            ("--checkpoint-dir", self.checkpoint_dir),
            ("--restore-from", self.restore_from),
            ("--job-name", self.job_name),
            ("--archive-dir", self.archive_dir),
        ):
            if value is not None:
                args += [flag, str(value)]
        if self.bounded:
            args.append("--bounded")
        return args


def with_java_tmpdir(jvm_args: str, tmp_dir: Path) -> str:
    """`JVM_ARGS` plus `-Djava.io.tmpdir=tmp_dir`, read by PyFlink's gateway and Flink's scripts.

    Unchanged if the path has a space: both split `JVM_ARGS` on spaces.

    >>> with_java_tmpdir("-Xmx1g", Path("/t/job"))
    '-Xmx1g -Djava.io.tmpdir=/t/job'
    """
    if " " in str(tmp_dir):
        return jvm_args
    return f"{jvm_args} -Djava.io.tmpdir={tmp_dir}".strip()


def start_job(options: JobOptions, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the job in a new process group (so `os.killpg` stops it and its JVM together)."""
    out = log.open("ab") if log else None
    try:
        return subprocess.Popen(
            options.argv(),
            env={**os.environ, **options.env},
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
    finally:
        if out:
            out.close()


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest completed checkpoint (a `chk-N` with `_metadata`) under `checkpoint_dir`."""
    completed = [p.parent for p in checkpoint_dir.glob("*/chk-*/_metadata")]
    if not completed:
        return None
    return max(completed, key=lambda p: (p.stat().st_mtime, int(p.name.split("-")[1])))


def use_own_temp_dir(root: Path) -> Path | None:
    """Give this process's Flink JVM a temp directory of its own, removed when it exits.

    A local job's JVM keeps its mini cluster's RocksDB instances and the planner and RPC
    jars it unpacks (~170 MB) in `java.io.tmpdir`; a job killed with SIGKILL cannot delete
    them, and in /tmp they add up unseen. Here they go to `root/job-<pid>` (TMPDIR too, for
    PyFlink's own files), deleted at a normal exit; the directories of jobs that were killed
    are deleted by the next job that starts. Must run before the JVM starts; does nothing
    (None) when `JVM_ARGS` already names a temp directory, as the bench and the tests do.
    """
    if "-Djava.io.tmpdir=" in os.environ.get("JVM_ARGS", ""):
        return None
    root.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temp_dirs(root)
    own = root / f"job-{os.getpid()}"
    own.mkdir(exist_ok=True)
    os.environ["JVM_ARGS"] = with_java_tmpdir(os.environ.get("JVM_ARGS", ""), own)
    os.environ["TMPDIR"] = str(own)
    tempfile.tempdir = None  # re-read TMPDIR
    atexit.register(shutil.rmtree, own, ignore_errors=True)
    return own


def remove_abandoned_temp_dirs(root: Path) -> list[Path]:
    """Delete the `job-<pid>` directories under `root` whose process is gone; return them.

    A directory stays while its process is alive, or while any process's command line names
    it (the job's JVM can outlive a killed Python parent for a moment).
    """
    removed: list[Path] = []
    pids = {d: d.name.removeprefix("job-") for d in root.glob("job-*") if d.is_dir()}
    candidates = [d for d, pid in pids.items() if not (pid.isdigit() and alive(int(pid)))]
    if not candidates:
        return removed
    command_lines = _command_lines()
    for directory in candidates:
        if not any(str(directory) in line for line in command_lines):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed


def _command_lines() -> list[str]:
    lines = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            lines.append(entry.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return lines


#: The line a job prints (to stderr) when it fails; callers find the cause after it.
FAILURE_MARKER = "JOB FAILED:"


def root_cause(trace: str) -> str:
    """The innermost cause of a Java stack trace, in one line, without its package.

    The first line of the last `Caused by:`, or the trace's first line if it has none.

    >>> trace = '''x.JobException: Recovery suppressed
    ...     at a.B(B.java:1)
    ... Caused by: org.postgresql.util.PSQLException: ERROR: violates "never"
    ...   Detail: Failing row contains (a).'''
    >>> root_cause(trace)
    'PSQLException: ERROR: violates "never"'
    >>> root_cause("")
    'unknown error'
    """
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    causes = [
        line.removeprefix("Caused by:").strip() for line in lines if line.startswith("Caused by:")
    ]
    cause = causes[-1] if causes else (lines[0] if lines else "unknown error")
    name, sep, message = cause.partition(": ")
    if " " not in name:
        name = name.rsplit(".", 1)[-1]
    return f"{name}{sep}{message}"
