"""A standalone Flink session cluster (JobManager + TaskManager) from the wheel's `pyflink/bin`.

The cluster's configuration, logs and pid files live in `.stack/flink/`; the wheel is untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from meterstream.config import Settings
from meterstream.errors import StackError
from meterstream.stack.processes import port_open, require_free, wait_until


def flink_home() -> Path:
    """The Flink distribution inside the apache-flink wheel."""
    import pyflink  # noqa: PLC0415 - only the cluster commands need it

    return Path(pyflink.__file__).resolve().parent


def _home(settings: Settings) -> Path:
    return settings.stack_dir / "flink"


def cluster_config(settings: Settings) -> str:
    """The session cluster's config.yaml: loopback only, 2 slots, sized for a 2-core machine."""
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
        "taskmanager.memory.managed.fraction": 0.3,
        "parallelism.default": f.parallelism,
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": f.rest_port,
        "blob.server.port": str(f.rest_port + 2),
        "taskmanager.rpc.port": f"{f.rest_port + 3}-{f.rest_port + 13}",
        "taskmanager.data.port": 0,
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "state.backend.type": f.state_backend,
        "execution.checkpointing.dir": (settings.stack_dir / "checkpoints").resolve().as_uri(),
        "execution.checkpointing.savepoint-dir": (settings.stack_dir / "savepoints")
        .resolve()
        .as_uri(),
        "execution.checkpointing.incremental": "true",
        "jobmanager.execution.failover-strategy": "region",
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": 100,
        "restart-strategy.fixed-delay.delay": "2 s",
    }
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in conf.items())


def _wheel_java_opts() -> str:
    text = (flink_home() / "conf" / "config.yaml").read_text()
    marker = "all:"
    for line in text.splitlines():
        if line.strip().startswith(marker) and "--add-opens" in line:
            return line.strip()[len(marker) :].strip()
    return ""


def _env(settings: Settings) -> dict[str, str]:
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


def _script(name: str) -> str:
    path = flink_home() / "bin" / name
    if not path.exists():
        msg = f"{path} is missing: is apache-flink installed in this virtualenv?"
        raise StackError(msg)
    return str(path)


def _write_conf(settings: Settings) -> None:
    conf_dir = _home(settings) / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    for name in ("log4j.properties", "log4j-cli.properties", "log4j-console.properties"):
        shutil.copy(flink_home() / "conf" / name, conf_dir / name)
    (conf_dir / "config.yaml").write_text(cluster_config(settings))
    (conf_dir / "masters").write_text(f"127.0.0.1:{settings.flink.rest_port}\n")
    (conf_dir / "workers").write_text("127.0.0.1\n")
    # The wheel keeps flink-python in opt/; a cluster running Python jobs needs it in lib/.
    # Connector jars are not added here: each job ships them (pipeline.jars).
    lib_dir = _home(settings) / "lib"
    shutil.rmtree(lib_dir, ignore_errors=True)
    lib_dir.mkdir(parents=True)
    for jar in [
        *(flink_home() / "lib").glob("*.jar"),
        *(flink_home() / "opt").glob("flink-python*.jar"),
    ]:
        (lib_dir / jar.name).symlink_to(jar)
    for d in ("logs/flink", "run/flink", "checkpoints", "savepoints"):
        (settings.stack_dir / d).mkdir(parents=True, exist_ok=True)


def rest_url(settings: Settings) -> str:
    """The cluster's REST endpoint."""
    return f"http://127.0.0.1:{settings.flink.rest_port}"


def overview(settings: Settings) -> dict[str, int] | None:
    """The cluster's `/overview` (task managers, slots, jobs), or None when it does not answer."""
    try:
        with urllib.request.urlopen(rest_url(settings) + "/overview", timeout=2) as response:  # noqa: S310 - our loopback URL
            return json.loads(response.read())
    except OSError:
        return None


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
    )
    if result.returncode != 0:
        msg = f"start-cluster.sh failed:\n{result.stdout}{result.stderr}"
        raise StackError(msg)
    log_dir = settings.stack_dir / "logs" / "flink"
    wait_until(
        lambda: (overview(settings) or {}).get("taskmanagers", 0) > 0,
        120,
        "the Flink cluster (JobManager + a TaskManager)",
        next(log_dir.glob("*.log"), None),
    )
    return True


def stop(settings: Settings) -> bool:
    """Stop the session cluster with `stop-cluster.sh`; True if it was running."""
    pid_dir = settings.stack_dir / "run" / "flink"
    if not running(settings) and not any(pid_dir.glob("*.pid")):
        return False
    subprocess.run(
        [_script("stop-cluster.sh")],
        env=_env(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    wait_until(lambda: not port_open(settings.flink.rest_port), 60, "the Flink cluster to stop")
    return True


def submit(settings: Settings, job_args: list[str], address: str | None = None) -> str:
    """Submit `jobs/aggregate_usage.py` detached with `flink run --python`; return the job id."""
    from meterstream.config import PROJECT_ROOT  # noqa: PLC0415

    target = address or f"127.0.0.1:{settings.flink.rest_port}"
    argv = [
        _script("flink"),
        "run",
        "-d",
        "-m",
        target,
        "--python",
        str(PROJECT_ROOT / "jobs" / "aggregate_usage.py"),
        "--pyFiles",
        str(PROJECT_ROOT / "meterstream"),
        *job_args,
    ]
    env = (
        _env(settings)
        if _home(settings).joinpath("conf").exists()
        else {**os.environ, "FLINK_HOME": str(flink_home())}
    )
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    job_id = next(
        (
            line.rsplit(" ", 1)[-1]
            for line in output.splitlines()
            if line.startswith("job id:") or "JobID" in line
        ),
        None,
    )
    if result.returncode != 0 or job_id is None:
        msg = f"flink run failed (exit {result.returncode}):\n{output[-4000:]}"
        raise StackError(msg)
    return job_id.strip()


def cancel(settings: Settings, job_id: str, address: str | None = None) -> None:
    """Cancel a job on the cluster."""
    target = address or f"127.0.0.1:{settings.flink.rest_port}"
    subprocess.run(
        [_script("flink"), "cancel", "-m", target, job_id],
        env=_env(settings),
        capture_output=True,
        text=True,
        check=False,
    )


def job_state(settings: Settings, job_id: str) -> str | None:
    """A job's state on the cluster (RUNNING, FINISHED, FAILED, ...), or None if unknown."""
    try:
        with urllib.request.urlopen(f"{rest_url(settings)}/jobs/{job_id}", timeout=2) as response:  # noqa: S310
            return json.loads(response.read()).get("state")
    except OSError:
        return None
