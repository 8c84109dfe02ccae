"""README.md and docs/: the blocks marked runnable still work, every relative link resolves.

A fenced block right after a `<!-- runnable -->` line is run against the session's stack:
`sh`/`bash` blocks with `bash -euo pipefail` from the repository root, `sql` blocks in
PostgreSQL in a transaction that is rolled back. The default ports they name are replaced with
the stack's. docs/development.md ("Docs") tells doc writers the rules.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from meterstream.config import Settings

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = "<!-- runnable -->"
README_LIMIT = 12 * 1024
BLOCK_TIMEOUT_S = 300


@dataclass(frozen=True, slots=True)
class Block:
    """A fenced block marked runnable: where it is, its language and its text."""

    page: Path
    line: int
    language: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def runnable_blocks(page: Path) -> list[Block]:
    """The blocks of `page` that follow a `<!-- runnable -->` line."""
    lines = page.read_text().splitlines()
    blocks = []
    for i, line in enumerate(lines[:-1]):
        if line.strip() != MARKER:
            continue
        fence = lines[i + 1]
        assert fence.startswith("```"), f"{page}:{i + 1}: {MARKER} must come right before a fence"
        end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
        language = fence.strip("`").strip()
        blocks.append(Block(page, i + 2, language, "\n".join(lines[i + 2 : end]) + "\n"))
    return blocks


BLOCKS = [block for page in PAGES for block in runnable_blocks(page)]


def with_stack_ports(code: str, settings: Settings) -> str:
    """The block with the default ports it names replaced by the stack's."""
    ports = {
        19092: settings.kafka.port,
        19093: settings.kafka.controller_port,
        15432: settings.postgres.port,
        18080: settings.api.port,
        18081: settings.flink.rest_port,
    }
    for default, port in ports.items():
        code = re.sub(rf"\b{default}\b", str(port), code)
    return code


@pytest.mark.integration
@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_runnable_block_works(block: Block, stack: Settings) -> None:
    code = with_stack_ports(block.code, stack)
    if block.language in ("sh", "bash"):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=ROOT,
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
            check=False,
        )
        assert result.returncode == 0, f"{block.name}:\n{code}\n{result.stdout}{result.stderr}"
    elif block.language == "sql":
        with psycopg.connect(stack.postgres.conninfo) as conn:
            try:
                conn.execute(code.encode())
            finally:
                conn.rollback()
    else:
        pytest.fail(f"{block.name}: no way to run a {block.language!r} block")


def test_runnable_blocks_are_found_in_readme_and_in_every_reader_page() -> None:
    pages = {b.page.name for b in BLOCKS}
    assert {"README.md", "operators.md", "meters.md", "sql.md", "api.md"} <= pages
    assert {b.language for b in BLOCKS} == {"sh", "sql"}


def slug(heading: str) -> str:
    """GitHub's anchor of a heading.

    >>> slug("`late_events`: events after their period closed")
    'late_events-events-after-their-period-closed'
    >>> slug("The cluster holds the jars; jobs ship none")
    'the-cluster-holds-the-jars-jobs-ship-none'
    """
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (outside code blocks)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"^#{1,6} (.+)$", line)):
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link outside code blocks."""
    out = []
    in_code = False
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code:
            out += [(number, target) for target in re.findall(r"\]\(([^)\s]+)\)", line)]
    return out


def test_every_relative_link_resolves() -> None:
    broken = []
    for page in PAGES:
        for number, target in links(page):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.name}:{number}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.name}:{number}: {target} (no such heading)")
    assert broken == []


def test_readme_is_short_and_links_every_page_of_docs() -> None:
    readme = (ROOT / "README.md").read_text()

    assert len(readme.encode()) < README_LIMIT
    linked = {target.partition("#")[0] for _, target in links(ROOT / "README.md")}
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in linked, f"README.md does not link docs/{page.name}"
