"""A Flink job under measurement: its process, its mini cluster's REST API, sampled over time.

Each job runs in its own process group on a local mini cluster whose REST endpoint listens on
a free loopback port, so the bench never collides with another job on the default port.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meterstream.bench.jobwrap import REST_PORT_ENV
from meterstream.bench.profile import (
    ThreadCpu,
    java_stacks,
    java_thread_names,
    jvm_pid,
    machine_cpu,
    pids_cpu,
    python_profile,
    service_pids,
    thread_cpu,
)
from meterstream.config import PROJECT_ROOT
from meterstream.flink.launch import JobOptions, with_java_tmpdir

BLACKHOLE_JOB = PROJECT_ROOT / "jobs" / "read_blackhole.py"
SAMPLE_INTERVAL_S = 0.2
#: CPU snapshots (/proc of every JVM thread and stack process) are rarer: they cost more.
CPU_INTERVAL_S = 1.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of the job's source: records read so far and records still in Kafka."""

    at: float
    read: int
    pending: int | None


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds used so far: by each JVM thread, by the machine, by each stack service."""

    at: float
    threads: ThreadCpu
    machine_busy: float
    services: dict[str, dict[int, float]]


@dataclass(slots=True)
class JobRun:
    """A running job and what was observed of it (filled in by a sampler thread)."""

    name: str
    proc: subprocess.Popen[bytes]
    rest_port: int
    log: Path
    started_at: float
    samples: list[Sample] = field(default_factory=list)
    job_id: str | None = None
    state: str | None = None
    timestamps: dict[str, int] = field(default_factory=dict)
    vertices: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: dict[str, Any] | None = None
    checkpoint_details: dict[str, Any] | None = None
    stack_dir: Path | None = None
    #: The job's temporary directory (its JVM's `java.io.tmpdir`), removed when it has exited.
    tmp_dir: Path | None = None
    cpu_first: CpuSnapshot | None = None
    cpu_last: CpuSnapshot | None = None
    thread_names: dict[int, str] = field(default_factory=dict)
    exited_at: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    #: Profile the job once the source has read this many records or read for this long.
    profile_at: int | None = None
    profile_after_s: float | None = None
    first_read_at: float | None = None
    time_boxed: bool = False
    profile_python: bool = False
    java_stacks: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    python_profile: list[tuple[str, float]] | None = None
    #: Failovers during the run (the job restarts from its last checkpoint) and their causes.
    restarts: int = 0
    failures: list[str] = field(default_factory=list)
    _restart_seen: int | None = None
    _last_count: float = 0.0
    _restarts_counted: int = 0
    _count_offset: float = 0.0
    _source_metrics: tuple[str, str] | None = None
    _jvm: int | None = None

    # --- REST -------------------------------------------------------------------------------
    def rest(self, path: str) -> Any:
        """GET a path of the mini cluster's REST API (None when it does not answer)."""
        url = f"http://127.0.0.1:{self.rest_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def _discover(self) -> None:
        overview = self.rest("/jobs/overview")
        jobs = (overview or {}).get("jobs") or []
        if jobs:
            self.job_id = jobs[0]["jid"]

    def _source_vertex(self) -> dict[str, Any] | None:
        return next((v for v in self.vertices if v["name"].startswith("Source: ")), None)

    def _find_source_metrics(self, vertex_id: str) -> tuple[str, str] | None:
        listing = self.rest(f"/jobs/{self.job_id}/vertices/{vertex_id}/metrics") or []
        ids = [m["id"].split(".", 1)[1] for m in listing if m["id"].startswith("0.Source__")]
        out = next((i for i in ids if i.endswith(".numRecordsOut")), None)
        pending = next((i for i in ids if i.endswith(".pendingRecords")), None)
        if out is None:
            return None
        # pendingRecords appears once the Kafka reader has its splits; look again until then.
        return (out, pending or "")

    def _sample_once(self) -> None:
        if self.job_id is None:
            self._discover()
            if self.job_id is None:
                return
        job = self.rest(f"/jobs/{self.job_id}")
        if not job:
            return
        self.state = job.get("state")
        self.timestamps = {k: v for k, v in job.get("timestamps", {}).items() if v}
        self._note_restart()
        self.vertices = job.get("vertices", [])
        source = self._source_vertex()
        if source is None:
            return
        if self._source_metrics is None or not self._source_metrics[1]:
            self._source_metrics = self._find_source_metrics(source["id"])
            if self._source_metrics is None:
                return
        names = ",".join(urllib.parse.quote(n) for n in self._source_metrics if n)
        values = self.rest(
            f"/jobs/{self.job_id}/vertices/{source['id']}/subtasks/metrics?get={names}"
        )
        if not values:
            return
        by_id = {v["id"]: v.get("sum") for v in values}
        read = self._monotone(by_id.get(self._source_metrics[0]))
        if read is None:
            return
        pending = by_id.get(self._source_metrics[1])
        now = time.time()
        self.samples.append(Sample(now, int(read), None if pending is None else int(pending)))
        if read > 0 and self.first_read_at is None:
            self.first_read_at = now
        if read > 0 and now - (self.cpu_last.at if self.cpu_last else 0.0) >= CPU_INTERVAL_S:
            self._snapshot_cpu(now)
        due = self.profile_at is not None and (
            read >= self.profile_at
            or (
                self.profile_after_s is not None
                and self.first_read_at is not None
                and now - self.first_read_at >= self.profile_after_s
            )
        )
        if due and self._jvm is not None:
            self.profile_at = None
            threading.Thread(target=self._profile, args=(self._jvm,), daemon=True).start()

    def _profile(self, pid: int) -> None:
        with contextlib.suppress(Exception):
            if self.profile_python:
                self.python_profile = python_profile(pid, seconds=8)
            self.java_stacks = java_stacks(pid)
            if not self.thread_names:
                self.thread_names = java_thread_names(pid)

    def _snapshot_cpu(self, now: float) -> None:
        pid = self._jvm if self._jvm is not None else jvm_pid(self.proc.pid)
        self._jvm = pid
        if pid is not None:
            snapshot = CpuSnapshot(
                now,
                thread_cpu(pid),
                machine_cpu()[0],
                {
                    # The job's whole JVM too: threads that ended are in its process time.
                    "job JVM": {pid: pids_cpu([pid])},
                    **{
                        name: {p: pids_cpu([p]) for p in pids}
                        for name, pids in (
                            service_pids(self.stack_dir) if self.stack_dir else {}
                        ).items()
                    },
                },
            )
            if self.cpu_first is None:
                self.cpu_first = snapshot
                threading.Thread(target=self._name_threads, args=(pid,), daemon=True).start()
            self.cpu_last = snapshot

    def _name_threads(self, pid: int) -> None:
        with contextlib.suppress(Exception):
            self.thread_names = java_thread_names(pid)

    def _monotone(self, counted: float | None) -> float | None:
        """The source counter, kept monotone across failovers; None for a sample to skip."""
        if counted is None:
            return None
        # A failover restarts the counters from zero. A drop without a failover is a partial
        # sum (a subtask's metric missing from this fetch): skip that sample.
        if counted < self._last_count:
            if self.restarts == self._restarts_counted:
                return None
            self._count_offset += self._last_count
        self._restarts_counted = self.restarts
        self._last_count = counted
        return counted + self._count_offset

    def _note_restart(self) -> None:
        restarted = self.timestamps.get("RESTARTING")
        if not restarted or restarted == self._restart_seen:
            return
        self._restart_seen = restarted
        self.restarts += 1
        exceptions = self.rest(f"/jobs/{self.job_id}/exceptions?maxExceptions=1") or {}
        history = (exceptions.get("exceptionHistory") or {}).get("entries") or [{}]
        cause = str(history[0].get("stacktrace") or exceptions.get("root-exception") or "")
        self.failures.append(cause.strip().splitlines()[0][:300] if cause.strip() else "?")

    def _sample_checkpoints(self) -> None:
        if self.job_id is None:
            return
        stats = self.rest(f"/jobs/{self.job_id}/checkpoints")
        if not stats:
            return
        self.checkpoints = stats
        latest = (stats.get("latest") or {}).get("completed")
        if latest and (
            self.checkpoint_details is None or self.checkpoint_details.get("id") != latest["id"]
        ):
            details = self.rest(f"/jobs/{self.job_id}/checkpoints/details/{latest['id']}")
            if details:
                self.checkpoint_details = details

    def _loop(self) -> None:
        tick = 0
        while not self._stop.is_set():
            if self.proc.poll() is not None:
                self.exited_at = time.time()
                return
            with contextlib.suppress(Exception):  # a sampler must never kill the bench
                self._sample_once()
                if tick % 8 == 0:
                    self._sample_checkpoints()
            tick += 1
            self._stop.wait(SAMPLE_INTERVAL_S)

    # --- lifecycle ----------------------------------------------------------------------------
    def start_sampling(self) -> None:
        """Start the sampler thread."""
        self._thread = threading.Thread(target=self._loop, name=f"sample-{self.name}", daemon=True)
        self._thread.start()

    def wait(self, timeout_s: float) -> int:
        """Wait for the job process to exit; kill it (and raise) after `timeout_s`."""
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            msg = f"{self.name} did not finish within {timeout_s:.0f}s; see {self.log}"
            raise TimeoutError(msg) from exc
        self.exited_at = self.exited_at or time.time()
        self.stop_sampling()
        self.remove_working_files()
        return code

    def wait_for(self, check: Any, timeout_s: float, what: str) -> None:
        """Poll `check()` until true; raise with the log's tail if the job dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return
            if self.proc.poll() is not None:
                msg = f"{self.name} exited ({self.proc.returncode}) before {what}:\n{self.tail()}"
                raise RuntimeError(msg)
            time.sleep(0.1)
        msg = f"{self.name}: timed out after {timeout_s:.0f}s waiting for {what}:\n{self.tail()}"
        raise TimeoutError(msg)

    def stop_sampling(self) -> None:
        """Stop the sampler thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def kill(self) -> float:
        """SIGKILL the job's process group (the client and its JVM); return when it happened."""
        at = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        self.stop_sampling()
        self.remove_working_files()
        return at

    def remove_working_files(self) -> None:
        """Delete the job's temporary directory (`tmp_dir`) once the job has exited."""
        if self.tmp_dir is not None and self.proc.poll() is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def tail(self, lines: int = 30) -> str:
        """The last lines of the job's log."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    @property
    def read(self) -> int:
        """Records the source has read so far."""
        return self.samples[-1].read if self.samples else 0


def launch(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str],
    log: Path,
    stack_dir: Path | None = None,
) -> JobRun:
    """Start a job process in its own session with a private REST port, and start sampling it."""
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    # The job's temporary files (the mini cluster's RocksDB instances, the planner jar PyFlink
    # unpacks, shipped jars) go to a directory of its own, removed once the job has exited: a
    # job the bench kills cannot clean up, and in /tmp that came to gigabytes per bench run.
    tmp_dir = log.with_name(f"{log.stem}.tmp").resolve()
    tmp_dir.mkdir(exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env={
                **os.environ,
                **env,
                REST_PORT_ENV: str(port),
                "TMPDIR": str(tmp_dir),
                "JVM_ARGS": with_java_tmpdir(os.environ.get("JVM_ARGS", ""), tmp_dir),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    run = JobRun(
        name=name,
        proc=proc,
        rest_port=port,
        log=log,
        started_at=time.time(),
        stack_dir=stack_dir,
        tmp_dir=tmp_dir,
    )
    run.start_sampling()
    return run


def observed(argv: list[str]) -> list[str]:
    """Run a job's command line through `meterstream.bench.jobwrap` (fresh metrics only)."""
    return [argv[0], "-m", "meterstream.bench.jobwrap", *argv[1:]]


def aggregate_argv(options: JobOptions) -> list[str]:
    """The real aggregation job's command line (`jobs/aggregate_usage.py`)."""
    return observed(options.argv())


def blackhole_argv(
    *,
    topic: str,
    group_id: str,
    checkpoint_dir: Path,
    job_name: str,
    bounded: bool = True,
    parse: bool = False,
) -> list[str]:
    """A baseline job's command line (`jobs/read_blackhole.py`, with `--parse` if asked)."""
    argv = [
        sys.executable,
        str(BLACKHOLE_JOB),
        "--topic",
        topic,
        "--group-id",
        group_id,
        "--checkpoint-dir",
        str(checkpoint_dir),
        "--job-name",
        job_name,
    ]
    if bounded:
        argv.append("--bounded")
    if parse:
        argv.append("--parse")
    return observed(argv)
