"""scripts/ensure-system-packages.sh: installs what is missing as root with apt, else says how.

The script runs for real, with a PATH of its own: a directory of stand-ins for the commands
it looks for (`java`, `mvn`, ...), an `id` that answers root or not, and an `apt-get` that
records how it was called instead of installing anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "ensure-system-packages.sh"
BASH = shutil.which("bash") or "/bin/bash"


def machine(tmp_path: Path, *, have: set[str], root: bool, apt: bool) -> dict[str, str]:
    """The environment of a machine with only the commands in `have` (and Python)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    calls = tmp_path / "apt-calls"
    stand_ins = {name: "exit 0" for name in have}
    stand_ins["id"] = f"echo {0 if root else 1000}"
    if apt:
        stand_ins["apt-get"] = f'echo "$*" >> {calls}'
    for name, body in stand_ins.items():
        path = bin_dir / name
        path.write_text(f"#!{BASH}\n{body}\n")
        path.chmod(0o755)
    empty_pg = tmp_path / "no-postgresql"
    empty_pg.mkdir()
    return {
        "PATH": str(bin_dir),
        "PG_ROOT": str(empty_pg),
        "GO_ROOT": str(empty_pg),
        "HOME": str(tmp_path),
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASH, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


EVERYTHING = {"java", "javac", "mvn", "initdb", "psql", "runuser"}


@pytest.mark.parametrize("root", [True, False])
def test_nothing_missing_is_silent(tmp_path: Path, root: bool) -> None:
    result = run(machine(tmp_path, have=EVERYTHING, root=root, apt=True))

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not (tmp_path / "apt-calls").exists()


def test_root_with_apt_installs_what_is_missing(tmp_path: Path) -> None:
    result = run(machine(tmp_path, have={"runuser", "javac", "psql"}, root=True, apt=True))

    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "apt-calls").read_text().splitlines()
    assert calls == [
        "update -q",
        "install -y -q --no-install-recommends openjdk-17-jdk-headless maven postgresql",
    ]


def test_without_root_it_stops_with_the_exact_command(tmp_path: Path) -> None:
    result = run(machine(tmp_path, have={"java", "javac", "initdb", "psql"}, root=False, apt=True))

    assert result.returncode == 1
    assert not (tmp_path / "apt-calls").exists()
    assert (
        "run: sudo apt-get update && sudo apt-get install -y --no-install-recommends maven"
        in result.stderr
    )


def test_without_apt_it_names_what_is_missing(tmp_path: Path) -> None:
    result = run(machine(tmp_path, have={"mvn", "initdb", "psql", "runuser"}, root=True, apt=False))

    assert result.returncode == 1
    assert "missing openjdk-17-jdk-headless" in result.stderr
    assert "package manager" in result.stderr


def test_an_old_python_stops_at_once(tmp_path: Path) -> None:
    env = machine(tmp_path, have=EVERYTHING, root=True, apt=True)
    old = Path(env["PATH"]) / "python3"
    old.unlink()
    old.write_text(f"#!{BASH}\nexit 1\n")  # what `sys.exit(version < (3, 11))` says on 3.10
    old.chmod(0o755)

    result = run({**env, "PYTHON": str(old)})

    assert result.returncode == 1
    assert "needs 3.11 or newer" in result.stderr
    assert not (tmp_path / "apt-calls").exists()


def test_the_makefile_and_ci_share_the_script() -> None:
    root = SCRIPT.parents[1]
    makefile = (root / "Makefile").read_text()
    ci = (root / ".ci" / "run").read_text()

    assert "scripts/ensure-system-packages.sh" in makefile
    assert "scripts/ensure-system-packages.sh" in ci
    assert "apt-get" not in ci  # no second copy of the check
    assert os.access(SCRIPT, os.X_OK)


def test_what_only_the_tests_need_is_checked_only_when_asked(tmp_path: Path) -> None:
    env = machine(tmp_path, have=EVERYTHING | {"npm"}, root=True, apt=True)

    assert run(env).returncode == 0
    assert not (tmp_path / "apt-calls").exists()
    result = run(env, "--tests")
    assert result.returncode == 0
    assert "installing: prometheus nodejs golang-go" in result.stdout
