"""Ctrl-C in a terminal stops a local job: one line on how to resume, and no files left behind."""

from __future__ import annotations

import os
import pty
import select
import signal
import time
from pathlib import Path

import pytest

from meterstream.config import Settings
from meterstream.flink.launch import latest_checkpoint
from meterstream.kafka_io import produce
from meterstream.testing import generate
from tests.pipeline_helpers import job_options

pytestmark = [pytest.mark.e2e, pytest.mark.flink]


def _read(fd: int, until: float) -> bytes:
    """What the terminal shows until `until` or until it closes."""
    out = b""
    while time.monotonic() < until:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the job exited: the terminal is closed
                break
            if not chunk:
                break
            out += chunk
    return out


def test_ctrl_c_stops_the_job_says_how_to_resume_and_removes_its_temp_files(
    stack: Settings, topics: tuple[str, str], job_dir: Path, unique: str
) -> None:
    produce(stack, topics[0], generate(300, seed=5, accounts=5, account_prefix=f"int-{unique}"))
    options = job_options(topics, job_dir, f"int-{unique}", archive_dir=job_dir / "archive")
    # As a user's shell would run it: without the test session's JVM_ARGS, so the job picks
    # its own temp directory under the stack.
    env = {k: v for k, v in os.environ.items() if k != "JVM_ARGS"}
    env["METERSTREAM_FLINK_CHECKPOINT_INTERVAL_MS"] = "1000"
    argv = options.argv()
    pid, fd = pty.fork()
    if pid == 0:  # the job, on a terminal of its own
        # As a terminal's shell starts it: a test run started in the background (`cmd &` in a
        # script) ignores SIGINT, and an ignored signal stays ignored across exec.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execve(argv[0], argv, env)  # noqa: S606 - the job's own interpreter and script
    try:
        temp_dir = stack.stack_dir / "job-tmp" / f"job-{pid}"
        deadline = time.monotonic() + 180
        shown = b""
        while latest_checkpoint(job_dir) is None and time.monotonic() < deadline:
            shown += _read(fd, time.monotonic() + 1)
        checkpoint = latest_checkpoint(job_dir)
        assert checkpoint is not None, shown.decode(errors="replace")[-3000:]
        assert temp_dir.is_dir()

        os.write(fd, b"\x03")  # Ctrl-C
        shown = _read(fd, time.monotonic() + 60).decode(errors="replace")
        _, status = os.waitpid(pid, 0)
        pid = 0
    finally:
        if pid:  # the test failed before the job exited
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)

    assert os.waitstatus_to_exitcode(status) == 130  # noqa: PLR2004 - the shell's code for Ctrl-C
    assert "stopped (Ctrl-C); resume from its newest checkpoint: `meterstream run" in shown
    assert f"--restore-from {job_dir}" in shown
    assert "Traceback" not in shown, shown[-3000:]
    assert not temp_dir.exists()
