"""A standalone Flink session cluster from the wheel's `pyflink/bin`, and its jobs' life cycle.

The cluster's configuration, lib/ directory, logs and pid files live in `.stack/flink/`; the
wheel is untouched. `submit`, `cancel`, `stop_with_savepoint` and `upgrade` work against any
cluster by its REST address.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import fields
from pathlib import Path
from typing import Any

from meterstream.config import PROJECT_ROOT, Settings
from meterstream.errors import StackError
from meterstream.flink.launch import with_java_tmpdir
from meterstream.stack.jars import ensure_jars, flink_jars
from meterstream.stack.processes import alive, port_open, require_free, wait_until

JOB = PROJECT_ROOT / "jobs" / "aggregate_usage.py"
#: Job states after which a job neither runs nor comes back.
TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "CANCELED"})


def flink_home() -> Path:
    """The Flink distribution inside the apache-flink wheel."""
    import pyflink  # noqa: PLC0415 - only the cluster commands need it

    return Path(pyflink.__file__).resolve().parent


def _home(settings: Settings) -> Path:
    return settings.stack_dir / "flink"


def cluster_config(settings: Settings) -> str:
    """The session cluster's config.yaml: loopback only, 2 slots, sized for a 2-core machine.

    The job sets its own checkpointing, state backend and restart strategy
    (`meterstream.flink.env`); the same values here are the defaults for any other job.
    """
    f = settings.flink
    java_opts = _wheel_java_opts()
    conf = {
        "env.java.opts.all": java_opts + " -Duser.timezone=UTC",
        "jobmanager.bind-host": "127.0.0.1",
        "jobmanager.rpc.address": "127.0.0.1",
        # Every port derives from the REST port, so two stacks can run side by side.
        "jobmanager.rpc.port": f.rest_port + 1,
        "jobmanager.memory.process.size": "1600m",
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.host": "127.0.0.1",
        "taskmanager.numberOfTaskSlots": 2,
        "taskmanager.memory.process.size": "3g",
        # Managed memory is RocksDB's block cache and write buffers.
        "taskmanager.memory.managed.fraction": 0.3,
        "parallelism.default": f.parallelism,
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": f.rest_port,
        "blob.server.port": str(f.rest_port + 2),
        "taskmanager.rpc.port": f"{f.rest_port + 3}-{f.rest_port + 13}",
        "taskmanager.data.port": 0,
        # A TaskManager that died (kill -9) is declared lost after 2 failed heartbeat RPCs, i.e.
        # within seconds; an unresponsive but living one still gets the 50 s timeout.
        "heartbeat.interval": "2 s",
        "heartbeat.rpc-failure-threshold": 2,
        # RocksDB's working files and spills: local disk of each TaskManager.
        "io.tmp.dirs": str((_home(settings) / "tmp").resolve()),
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "state.backend.type": f.state_backend,
        "execution.checkpointing.dir": (settings.stack_dir / "checkpoints").resolve().as_uri(),
        "execution.checkpointing.savepoint-dir": savepoint_dir(settings).resolve().as_uri(),
        "execution.checkpointing.incremental": "true",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": 3,
        "jobmanager.execution.failover-strategy": "region",
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": "1 s",
        "restart-strategy.exponential-delay.max-backoff": "30 s",
    }
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in conf.items())


def savepoint_dir(settings: Settings) -> Path:
    """Where `stop_with_savepoint` writes savepoints unless told otherwise."""
    return settings.stack_dir / "savepoints"


def _wheel_java_opts() -> str:
    text = (flink_home() / "conf" / "config.yaml").read_text()
    marker = "all:"
    for line in text.splitlines():
        if line.strip().startswith(marker) and "--add-opens" in line:
            return line.strip()[len(marker) :].strip()
    return ""


def settings_env(settings: Settings) -> dict[str, str]:
    """`settings` as `METERSTREAM_*` variables, so a child process loads the same settings.

    >>> env = settings_env(Settings())
    >>> env["METERSTREAM_KAFKA_PORT"], env["METERSTREAM_FLINK_SHIP_JARS"]
    ('19092', 'true')
    """

    def walk(obj: Any, prefix: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            name = f"{prefix}_{f.name.upper()}"
            if hasattr(value, "__dataclass_fields__"):
                out.update(walk(value, name))
            elif isinstance(value, bool):
                out[name] = "true" if value else "false"
            else:
                out[name] = str(value)
        return out

    return walk(settings, "METERSTREAM")


def _env(settings: Settings) -> dict[str, str]:
    """The environment of the cluster's daemons and of the `flink` client."""
    home = _home(settings)
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "FLINK_HOME": str(flink_home()),
        "FLINK_CONF_DIR": str(home / "conf"),
        "FLINK_LOG_DIR": str(settings.stack_dir / "logs" / "flink"),
        "FLINK_PID_DIR": str(settings.stack_dir / "run" / "flink"),
        "FLINK_LIB_DIR": str(home / "lib"),
        # Workers must find the project's Python (and pyflink) first on PATH.
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "TZ": "UTC",
    }


def _client_env(settings: Settings) -> dict[str, str]:
    """The `flink` client's environment; it runs the job's Python driver with `settings`."""
    env = _env(settings)
    # The client plans the job, so it needs the connectors on its classpath (lib/) too.
    _link_lib(settings, fresh=False)
    if not _home(settings).joinpath("conf").exists():
        # No local cluster configured here: the wheel's configuration; `-m` names the cluster.
        for name in ("FLINK_CONF_DIR", "FLINK_LOG_DIR", "FLINK_PID_DIR"):
            env.pop(name)
    return {
        **env,
        **settings_env(settings),
        # The job's driver runs in this interpreter (pyflink and meterstream installed).
        "PYFLINK_CLIENT_EXECUTABLE": sys.executable,
        # The cluster has the connector jars in lib/; a job that ships them again gets its own
        # class loader per TaskManager, and the second Python job there fails (FLINK-37727).
        "METERSTREAM_FLINK_SHIP_JARS": "false",
    }


def _script(name: str) -> str:
    path = flink_home() / "bin" / name
    if not path.exists():
        msg = f"{path} is missing: is apache-flink installed in this virtualenv?"
        raise StackError(msg)
    return str(path)


def lib_jars(settings: Settings) -> list[Path]:
    """The jars of the cluster's lib/: the wheel's lib/, flink-python and the connectors.

    Everything a job needs is on the cluster's classpath, loaded once per JVM, so jobs ship
    no jars. PyFlink's embedded interpreter (pemja) cannot be loaded by a second class loader
    in the same JVM on Java 17 (FLINK-37727): with jars shipped per job, the second Python
    job on a TaskManager (after a cancel, a resubmit or a restore) fails.
    """
    return [
        *sorted((flink_home() / "lib").glob("*.jar")),
        *sorted((flink_home() / "opt").glob("flink-python*.jar")),
        *flink_jars(settings),
    ]


def _link_lib(settings: Settings, *, fresh: bool) -> None:
    """Link `lib_jars` into `.stack/flink/lib` (the cluster's and the client's classpath).

    `fresh` rebuilds it (a cluster about to start); otherwise missing links are only added,
    so a cluster that runs from it is left alone.
    """
    ensure_jars(settings)
    lib_dir = _home(settings) / "lib"
    if fresh:
        shutil.rmtree(lib_dir, ignore_errors=True)
    lib_dir.mkdir(parents=True, exist_ok=True)
    for jar in lib_jars(settings):
        link = lib_dir / jar.name
        if not link.exists():
            link.unlink(missing_ok=True)  # a dangling link from an older wheel or jar set
            link.symlink_to(jar.resolve())


def _write_conf(settings: Settings) -> None:
    conf_dir = _home(settings) / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    for name in ("log4j.properties", "log4j-cli.properties", "log4j-console.properties"):
        shutil.copy(flink_home() / "conf" / name, conf_dir / name)
    (conf_dir / "config.yaml").write_text(cluster_config(settings))
    (conf_dir / "masters").write_text(f"127.0.0.1:{settings.flink.rest_port}\n")
    (conf_dir / "workers").write_text("127.0.0.1\n")
    _link_lib(settings, fresh=True)
    for d in ("logs/flink", "run/flink", "checkpoints", "savepoints", "flink/tmp"):
        (settings.stack_dir / d).mkdir(parents=True, exist_ok=True)


def _address(settings: Settings, address: str | None) -> str:
    return address or f"127.0.0.1:{settings.flink.rest_port}"


def rest_url(settings: Settings, address: str | None = None) -> str:
    """The cluster's REST endpoint (the local one unless `address` names another)."""
    return f"http://{_address(settings, address)}"


def _get(settings: Settings, path: str, address: str | None = None) -> Any:
    """GET a REST resource as JSON, or None when the cluster does not answer."""
    try:
        with urllib.request.urlopen(rest_url(settings, address) + path, timeout=5) as response:  # noqa: S310 - a URL we built
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def overview(settings: Settings, address: str | None = None) -> dict[str, int] | None:
    """The cluster's `/overview` (task managers, slots, jobs), or None when it does not answer."""
    return _get(settings, "/overview", address)


def running(settings: Settings) -> bool:
    """Whether the cluster answers on its REST port."""
    return overview(settings) is not None


def start(settings: Settings) -> bool:
    """Start the session cluster with `start-cluster.sh`; True if it was started."""
    if running(settings):
        return False
    require_free(settings.flink.rest_port, "the Flink REST endpoint")
    if shutil.which("java") is None:
        msg = "java is not installed; Flink needs a JDK 17"
        raise StackError(msg)
    _write_conf(settings)
    result = subprocess.run(
        [_script("start-cluster.sh")],
        env=_env(settings),
        capture_output=True,
        text=True,
        check=False,
        start_new_session=True,
    )
    if result.returncode != 0:
        msg = f"start-cluster.sh failed:\n{result.stdout}{result.stderr}"
        raise StackError(msg)
    wait_until(
        lambda: (overview(settings) or {}).get("taskmanagers", 0) > 0,
        120,
        "the Flink cluster (JobManager + a TaskManager)",
        _newest_log(settings),
    )
    return True


def _newest_log(settings: Settings) -> Path | None:
    logs = list((settings.stack_dir / "logs" / "flink").glob("*.log"))
    return max(logs, key=lambda p: p.stat().st_mtime) if logs else None


def _pid_file(settings: Settings, daemon: str) -> Path:
    user = os.environ.get("USER", "")
    return settings.stack_dir / "run" / "flink" / f"flink-{user}-{daemon}.pid"


def _daemon_pids(settings: Settings, daemon: str) -> list[int]:
    try:
        lines = _pid_file(settings, daemon).read_text().split()
    except FileNotFoundError:
        return []
    return [int(line) for line in lines if line.isdigit()]


def taskmanager_pids(settings: Settings) -> list[int]:
    """The pids of this cluster's TaskManagers that are alive (from the daemon's pid file)."""
    return [pid for pid in _daemon_pids(settings, "taskexecutor") if alive(pid)]


def start_taskmanager(settings: Settings, timeout_s: float = 120) -> int:
    """Start one more TaskManager (`taskmanager.sh start`); return its pid once registered."""
    before = set(taskmanager_pids(settings))
    registered = taskmanager_ids(settings)
    result = subprocess.run(
        [_script("taskmanager.sh"), "start"],
        env=_env(settings),
        capture_output=True,
        text=True,
        check=False,
        start_new_session=True,
    )
    new = set(taskmanager_pids(settings)) - before
    if result.returncode != 0 or not new:
        msg = f"taskmanager.sh start failed:\n{result.stdout}{result.stderr}"
        raise StackError(msg)
    wait_until(
        lambda: bool(taskmanager_ids(settings) - registered),
        timeout_s,
        "the new TaskManager to register",
        _newest_log(settings),
    )
    return new.pop()


def taskmanager_ids(settings: Settings, address: str | None = None) -> set[str]:
    """The ids of the TaskManagers registered with the cluster."""
    found = _get(settings, "/taskmanagers", address) or {}
    return {tm["id"] for tm in found.get("taskmanagers", [])}


def kill_taskmanager(settings: Settings, pid: int) -> None:
    """SIGKILL one of this cluster's TaskManagers (fault injection) and forget its pid."""
    if pid not in _daemon_pids(settings, "taskexecutor"):
        msg = f"pid {pid} is not a TaskManager of the cluster in {settings.stack_dir}"
        raise StackError(msg)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    _forget_pid(settings, "taskexecutor", pid)


def _forget_pid(settings: Settings, daemon: str, pid: int) -> None:
    # The daemon scripts SIGTERM every pid in the file on stop-all: a dead one must not stay
    # there, or a recycled pid could be hit.
    path = _pid_file(settings, daemon)
    keep = [str(p) for p in _daemon_pids(settings, daemon) if p != pid]
    if keep:
        path.write_text("\n".join(keep) + "\n")
    else:
        path.unlink(missing_ok=True)


def stop(settings: Settings) -> bool:
    """Stop the session cluster: every TaskManager, then the JobManager; True if it was running.

    `stop-cluster.sh` stops one TaskManager per `workers` line; this stops all of them,
    including the ones `start_taskmanager` added.
    """
    daemons = ("taskexecutor", "standalonesession")
    if not running(settings) and not any(_daemon_pids(settings, d) for d in daemons):
        return False
    for script in ("taskmanager.sh", "jobmanager.sh"):
        subprocess.run(
            [_script(script), "stop-all"],
            env=_env(settings),
            capture_output=True,
            text=True,
            check=False,
        )
    for daemon in daemons:
        for pid in _daemon_pids(settings, daemon):
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _pid_file(settings, daemon).unlink(missing_ok=True)
    wait_until(lambda: not port_open(settings.flink.rest_port), 60, "the Flink cluster to stop")
    # A TaskManager that was killed (-9) left its RocksDB instances and caches in io.tmp.dirs,
    # ~100 MB each; a stopped cluster has nothing there that anyone needs.
    shutil.rmtree(_home(settings) / "tmp", ignore_errors=True)
    return True


def _run_client(settings: Settings, argv: list[str], what: str) -> str:
    result = subprocess.run(
        [_script("flink"), *argv],
        env=_client_env(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        msg = f"{what} failed (flink {argv[0]}, exit {result.returncode}):\n{output[-4000:]}"
        raise StackError(msg)
    return output


def submit(
    settings: Settings,
    job_args: list[str],
    address: str | None = None,
    timeout_s: float = 300,
) -> str:
    """Submit `jobs/aggregate_usage.py` detached with `flink run --python`; return the job id.

    The job's driver waits for the job to end, even detached, so the client is stopped once
    the cluster has accepted the job: the job runs on without it.

    Args:
        settings: the settings the job runs with (passed on as `METERSTREAM_*` variables).
        job_args: the job's own arguments (`--topic`, `--restore-from`, ...).
        address: the JobManager's REST `host:port` (default: the local cluster's).
        timeout_s: how long the submission may take.
    """
    argv = [
        _script("flink"),
        "run",
        "-d",
        "-m",
        _address(settings, address),
        "--python",
        str(JOB),
        "--pyFiles",
        str(PROJECT_ROOT / "meterstream"),
        *job_args,
    ]
    # The client zips `--pyFiles` into its temp dir and, stopped below, would leave the zip
    # there; the cluster has its own copy (blob server) once the job is submitted.
    with tempfile.TemporaryDirectory(prefix="meterstream-submit-") as client_tmp:
        env = _client_env(settings)
        env["JVM_ARGS"] = with_java_tmpdir(env.get("JVM_ARGS", ""), Path(client_tmp))
        client = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            job_id, output = _job_id_from(client, timeout_s)
        finally:
            _stop_client(client)
    if job_id is None:
        text = "".join(output)[-4000:]
        msg = f"flink run did not submit the job (exit {client.returncode}):\n{text}"
        raise StackError(msg)
    return job_id


#: What `flink run` (or the job's driver) prints once the cluster has accepted the job.
SUBMITTED = re.compile(r"submitted with JobID ([0-9a-f]{32})|job id: ([0-9a-f]{32})")


def _pump(client: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert client.stdout is not None  # noqa: S101 - Popen(stdout=PIPE)
    for line in client.stdout:
        lines.put(line)
    lines.put(None)


def _job_id_from(client: subprocess.Popen[str], timeout_s: float) -> tuple[str | None, list[str]]:
    """The job id the client prints once the cluster accepted the job, and its output so far."""
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(client, lines), daemon=True).start()
    output: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            break
        output.append(line)
        match = SUBMITTED.search(line)
        if match:
            return match.group(1) or match.group(2), output
    return None, output


def _stop_client(client: subprocess.Popen[str]) -> None:
    """Stop the client and the Python driver it started (one process group)."""
    if client.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(client.pid, signal.SIGTERM)
        try:
            client.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(client.pid, signal.SIGKILL)
            client.wait()


def cancel(settings: Settings, job_id: str, address: str | None = None) -> None:
    """Cancel a job; its retained checkpoints stay (`RETAIN_ON_CANCELLATION`)."""
    _run_client(settings, ["cancel", "-m", _address(settings, address), job_id], "cancelling")


def stop_with_savepoint(
    settings: Settings,
    job_id: str,
    directory: str | None = None,
    address: str | None = None,
) -> str:
    """Stop a job with a savepoint (`flink stop --savepointPath`); return the savepoint's path.

    The Kafka offsets, dedup keys and figures are in the savepoint; sinks commit before the
    job stops, so nothing after it is lost or written twice when a job resumes from it.
    """
    target = directory or savepoint_dir(settings).resolve().as_uri()
    output = _run_client(
        settings,
        ["stop", "--savepointPath", target, "-m", _address(settings, address), job_id],
        f"stopping job {job_id} with a savepoint",
    )
    match = re.search(r"Savepoint completed\. Path: (\S+)", output)
    if match is None:
        msg = f"flink stop printed no savepoint path:\n{output[-4000:]}"
        raise StackError(msg)
    return match.group(1)


def upgrade(
    settings: Settings,
    job_id: str,
    job_args: list[str],
    *,
    directory: str | None = None,
    address: str | None = None,
) -> tuple[str, str]:
    """Stop a job with a savepoint, then submit the job (its current code) from that savepoint.

    Returns:
        (savepoint path, new job id).
    """
    savepoint = stop_with_savepoint(settings, job_id, directory, address)
    args = _without_option(job_args, "--restore-from")
    return savepoint, submit(settings, [*args, "--restore-from", savepoint], address)


def _without_option(args: list[str], option: str) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def jobs(settings: Settings, address: str | None = None) -> list[dict[str, Any]]:
    """Every job the cluster knows: id, name, state and start time, oldest first."""
    found = (_get(settings, "/jobs/overview", address) or {}).get("jobs", [])
    return sorted(found, key=lambda j: j.get("start-time", 0))


def running_job(settings: Settings, name: str, address: str | None = None) -> str:
    """The id of the one job called `name` that is not finished, failed or cancelled."""
    alive = [
        j["jid"]
        for j in jobs(settings, address)
        if j.get("name") == name and j.get("state") not in TERMINAL_STATES
    ]
    if len(alive) != 1:
        msg = f"expected one live job named {name!r} on {rest_url(settings, address)}, got {alive}"
        raise StackError(msg)
    return alive[0]


def job_state(settings: Settings, job_id: str, address: str | None = None) -> str | None:
    """A job's state on the cluster (RUNNING, FINISHED, FAILED, ...), or None if unknown."""
    found = _get(settings, f"/jobs/{job_id}", address)
    return found.get("state") if found else None


def job_details(settings: Settings, job_id: str, address: str | None = None) -> dict[str, Any]:
    """The REST `/jobs/<id>` document (vertices, state, timestamps), or {} if unknown."""
    return _get(settings, f"/jobs/{job_id}", address) or {}


def completed_checkpoints(settings: Settings, job_id: str, address: str | None = None) -> int:
    """How many checkpoints of the job have completed (0 if unknown)."""
    found = _get(settings, f"/jobs/{job_id}/checkpoints", address) or {}
    return int(found.get("counts", {}).get("completed", 0))


def job_restarts(settings: Settings, job_id: str, address: str | None = None) -> int:
    """How often the cluster restarted the job after failures (its `numRestarts` metric).

    The REST endpoint serves metrics from a cache that may be ~10 s old.
    """
    found = _get(settings, f"/jobs/{job_id}/metrics?get=numRestarts", address) or []
    return int(found[0]["value"]) if found else 0


def tasks_running(
    settings: Settings, job_id: str, address: str | None = None, *, since_ms: int = 0
) -> bool:
    """Whether the job and every one of its vertices are RUNNING, each started after `since_ms`.

    `since_ms` (epoch ms) tells tasks restarted after a failure from the ones before it.
    """
    details = job_details(settings, job_id, address)
    vertices = details.get("vertices", [])
    return (
        details.get("state") == "RUNNING"
        and bool(vertices)
        and all(
            v.get("status") == "RUNNING" and v.get("start-time", 0) > since_ms for v in vertices
        )
    )


def restored_checkpoint(settings: Settings, job_id: str, address: str | None = None) -> str | None:
    """Where the job's latest restore came from (a checkpoint's path), or None if it never did."""
    found = _get(settings, f"/jobs/{job_id}/checkpoints", address) or {}
    restored = (found.get("latest") or {}).get("restored") or {}
    return restored.get("external_path")


def taskmanager_pid(settings: Settings, taskmanager_id: str) -> int | None:
    """The pid of the TaskManager with this REST id (`host:rpc_port-suffix`), if it runs here.

    The id names the TaskManager's RPC port; the TaskManager is the process that listens on it.
    """
    match = re.match(r"[^:]+:(\d+)-", taskmanager_id)
    if match is None:
        return None
    inodes = _listening_inodes(int(match.group(1)))
    for pid in taskmanager_pids(settings):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        return pid
    return None


def _listening_inodes(port: int) -> set[str]:
    out: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                listen = "0A"
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == listen:
                    out.add(cols[9])
    return out


def job_taskmanagers(settings: Settings, job_id: str, address: str | None = None) -> set[str]:
    """The ids of the TaskManagers that run tasks of the job."""
    out: set[str] = set()
    for vertex in job_details(settings, job_id, address).get("vertices", []):
        found = _get(settings, f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers", address)
        out.update(tm["taskmanager-id"] for tm in (found or {}).get("taskmanagers", []))
    return out
