"""The SDKs under clients/: their toolchains, built once per session, and how to run them."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
#: Where the Go toolchain lives on this project's machines when it is not on PATH.
EXTRA_PATH = ("/usr/local/go/bin",)


def tool_env() -> dict[str, str]:
    """The environment with every toolchain on PATH."""
    env = dict(os.environ)
    extra = [p for p in EXTRA_PATH if Path(p).is_dir()]
    env["PATH"] = os.pathsep.join([env.get("PATH", ""), *extra])
    return env


@dataclass(frozen=True, slots=True)
class Sdk:
    """How to run one SDK's test suite and its live test."""

    name: str
    directory: Path
    tool: str
    suite: tuple[str, ...]
    live: tuple[str, ...]


SDKS = {
    "node": Sdk(
        "node",
        CLIENTS / "node",
        "npm",
        ("npm", "test"),
        ("node", "--test", "dist/test/live.test.js"),
    ),
    "go": Sdk(
        "go",
        CLIENTS / "go",
        "go",
        ("go", "test", "-count=1", "./..."),
        ("go", "test", "-count=1", "-run", "^TestLive$", "-v", "./..."),
    ),
    "java": Sdk(
        "java",
        CLIENTS / "java",
        "mvn",
        ("mvn", "-B", "-q", "test"),
        ("mvn", "-B", "-q", "test", "-Dtest=LiveTest", "-Dsurefire.failIfNoSpecifiedTests=false"),
    ),
}


def run(
    command: tuple[str, ...] | list[str], cwd: Path, env: dict[str, str], timeout: float
) -> str:
    """Run a command; fail the test with its output if it fails."""
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{output[-8000:]}"
    return output


@pytest.fixture(scope="session")
def sdk_env() -> dict[str, str]:
    """Every SDK's toolchain is there (never skipped: .ci/run installs what is missing)."""
    env = tool_env()
    missing = [s.tool for s in SDKS.values() if shutil.which(s.tool, path=env["PATH"]) is None]
    assert not missing, f"missing toolchains {missing}: .ci/run installs them (see docs/clients.md)"
    return env


@dataclass(frozen=True, slots=True)
class Toolchains:
    """The environment that has every toolchain on PATH, and the SDKs, built."""

    env: dict[str, str]
    sdks: dict[str, Sdk]


@pytest.fixture(scope="session")
def toolchains(sdk_env: dict[str, str]) -> Toolchains:
    """The SDKs with their dependencies fetched and compiled (Node: npm ci, then tsc)."""
    node = SDKS["node"].directory
    if not (node / "node_modules" / ".package-lock.json").exists():
        run(("npm", "ci", "--no-audit", "--no-fund"), node, sdk_env, 600)
    run(("npm", "run", "build"), node, sdk_env, 600)
    return Toolchains(sdk_env, SDKS)
