"""A project-local PostgreSQL cluster (initdb into `.stack/postgres`), listening on loopback only.

PostgreSQL refuses to run as root; when we are root (CI, containers) the server runs as the
`postgres` system user that Debian's package creates, and owns its data directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from meterstream.config import Settings
from meterstream.errors import StackError
from meterstream.stack.processes import port_open, require_free, wait_until

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _tool(name: str) -> str:
    for directory in PG_BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        msg = f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)"
        raise StackError(msg)
    return found


def _home(settings: Settings) -> Path:
    return settings.stack_dir / "postgres"


def _run_as() -> list[str]:
    """The prefix that runs a server command as a non-root user when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        msg = "running as root needs the `postgres` system user (apt-get install postgresql)"
        raise StackError(msg) from exc
    return ["runuser", "-u", "postgres", "--"]


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for p in [path, *path.rglob("*")]:
            os.chown(p, user.pw_uid, user.pw_gid)


def _run(argv: list[str], what: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        msg = f"{what} failed:\n{result.stdout}{result.stderr}"
        raise StackError(msg)
    return result.stdout


def running(settings: Settings) -> bool:
    """Whether our cluster's postmaster is alive."""
    data = _home(settings) / "data"
    if not (data / "postmaster.pid").exists():
        return False
    result = subprocess.run(
        [*_run_as(), _tool("pg_ctl"), "status", "-D", str(data)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0


def start(settings: Settings) -> bool:
    """Create the cluster on first use, start it, and create the database; True if started."""
    if running(settings):
        return False
    pg = settings.postgres
    require_free(pg.port, "PostgreSQL")
    home = _home(settings)
    data, sockets, logs = home / "data", home / "run", settings.stack_dir / "logs"
    for d in (home, sockets):
        d.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    if not (data / "PG_VERSION").exists():
        pwfile = home / "pwfile"
        pwfile.write_text(pg.password + "\n")
        _chown(home)
        _run(
            [
                *_run_as(),
                _tool("initdb"),
                "-D",
                str(data),
                "-U",
                pg.user,
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
            ],
            "initdb",
        )
        pwfile.unlink()
    _chown(home)
    log = logs / "postgres.log"
    log.touch()
    _chown(log)
    options = (
        f"-p {pg.port} -c listen_addresses={pg.host} -k {sockets} "
        "-c fsync=on -c max_connections=200 -c shared_buffers=256MB"
    )
    _run(
        [
            *_run_as(),
            _tool("pg_ctl"),
            "start",
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
        ],
        "starting PostgreSQL",
    )
    wait_until(lambda: port_open(pg.port, pg.host), 30, "PostgreSQL", log)
    _ensure_database(settings, sockets)
    return True


def _ensure_database(settings: Settings, sockets: Path) -> None:
    pg = settings.postgres
    psql = [
        *_run_as(),
        _tool("psql"),
        "-h",
        str(sockets),
        "-p",
        str(pg.port),
        "-U",
        pg.user,
        "-d",
        "postgres",
        "-tAc",
    ]
    exists = _run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{pg.database}'"], "psql")
    if exists.strip() != "1":
        _run([*psql, f'CREATE DATABASE "{pg.database}"'], "creating the database")


def stop(settings: Settings) -> bool:
    """Stop the cluster (fast shutdown); True if it was running."""
    if not running(settings):
        return False
    _run(
        [
            *_run_as(),
            _tool("pg_ctl"),
            "stop",
            "-D",
            str(_home(settings) / "data"),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
        ],
        "stopping PostgreSQL",
    )
    return True


def reset(settings: Settings) -> None:
    """Delete the cluster's data (it must be stopped)."""
    if running(settings):
        msg = "stop PostgreSQL before deleting its data"
        raise StackError(msg)
    shutil.rmtree(_home(settings), ignore_errors=True)
