"""`meterstream demo` as a newcomer sees it: no warnings of ours, segments, and a true story.

The demo runs as a command, on a raw topic of its own, after a restart of Kafka (the first
producer of a fresh broker is when librdkafka used to warn). Every number of its story is held
to the oracle's outcome of the records the topic holds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from meterstream.config import Settings
from meterstream.rules.reasons import ReasonCode
from meterstream.rules.validate import Validator
from meterstream.stack import kafka
from meterstream.store.migrate import migrate
from tests.pipeline_helpers import consume_arrivals, oracle_of_arrivals

pytestmark = [pytest.mark.e2e, pytest.mark.flink]

ROOT = Path(__file__).parents[2]
LATENESS_HOURS = 72  # the default, so that the sample's late events are late

#: What `make demo` printed before issue 21, and the shapes of any library's log line.
NOT_OURS = [
    r"GETPID|Coordinator load in progress",
    r"Using Any for unsupported type",
    r"bigquery_storage_v1",
    r"CodecPool|Got brand-new compressor",
    r"BuildBackendWarning|deprecated",
    r"^%\d+\|",  # librdkafka's log lines
    r"\b(DEBUG|INFO|WARN|WARNING|ERROR|SEVERE)\b",  # log4j's, logging's, Java's
    r"Traceback|Exception",
]


def story_counts(out: str) -> dict[str, str]:
    """Each fate's line of the story (continuation lines joined), by its first word."""
    story = out.split("What happened to the", 1)[1].split("Where to look next", 1)[0]
    fates: dict[str, str] = {}
    last = ""
    for line in story.splitlines()[1:]:
        match = re.match(r"^\s+([\d,]+)\s+(\w+)(.*)$", line)
        if match:
            last = match.group(2)
            fates[last] = match.group(1).replace(",", "") + " " + match.group(3)
        elif line.strip():
            fates[last] += " " + line.strip()
    return fates


def test_demo_is_quiet_shows_segments_and_its_story_matches_the_oracle(
    stack: Settings, unique: str, validator: Validator
) -> None:
    raw = f"test-{unique}-demo-raw"
    env = {
        **os.environ,
        "METERSTREAM_KAFKA_TOPICS_RAW": raw,
        "METERSTREAM_KAFKA_TOPICS_REJECTED": f"test-{unique}-demo-rejected",
        "METERSTREAM_FLINK_ALLOWED_LATENESS_HOURS": str(LATENESS_HOURS),
        "COLUMNS": "80",
    }
    kafka.stop(stack)  # the demo starts it again: a fresh broker, as on a first `make demo`
    try:
        result = subprocess.run(
            [sys.executable, "-m", "meterstream", "demo"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        kafka.start(stack)
        migrate(stack)  # the session's allowed lateness back into billing_config
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Kafka: started" in out

    noise = [line for line in out.splitlines() if any(re.search(p, line) for p in NOT_OURS)]
    assert noise == []
    assert max(len(line) for line in out.splitlines()) <= 80

    # The figures: their segments, one line per row.
    prefix = re.search(r"for accounts (demo-[0-9a-f]{4})-0000 to", out)
    assert prefix, out
    account = f"{prefix.group(1)}-0000"
    for segment in ("model=large", "model=small", "region=eu", "region=us"):
        assert segment in out
    table = out.split(f"The figures of {account}", 1)[1].split("What happened", 1)[0]
    rows = [line for line in table.splitlines() if re.match(r"^[a-z_]+\s+\d{4}-\d{2}\s", line)]
    with psycopg.connect(stack.postgres.conninfo) as conn:
        figures = conn.execute(
            "SELECT count(*) FROM usage_aggregates WHERE account_id = %s", (account,)
        ).fetchone()
    assert figures and len(rows) == figures[0] > 0

    # The story, against the oracle's outcome of what the topic holds.
    arrivals = consume_arrivals(stack, raw)
    expected = oracle_of_arrivals(
        stack, validator, arrivals, allowed_lateness=timedelta(hours=LATENESS_HOURS)
    )
    conflict = ReasonCode.DUPLICATE_ID_CONFLICT.value
    codes = Counter(code for _, code in expected.rejections if code != conflict)
    conflicts = sum(1 for _, code in expected.rejections if code == conflict)
    counted = sum(n for _, n in expected.totals.values())
    fates = story_counts(out)
    assert f"What happened to the {len(arrivals):,} sample records" in out
    assert fates["counted"].split()[0] == str(counted)
    assert f"in {len(expected.totals):,} figures" in fates["counted"]
    assert fates["conflicts"].split()[0] == str(conflicts) != "0"
    assert fates["late"].split()[0] == str(len(expected.late))
    rejected = dict(re.findall(r"([A-Z_]+) ([\d,]+)", fates["rejected"]))
    assert {code: int(n.replace(",", "")) for code, n in rejected.items()} == codes
    ignored = len(arrivals) - counted - conflicts - sum(codes.values()) - len(expected.late)
    assert fates["ignored"].split()[0] == str(ignored) != "0"
    assert "Where to look next" in out
    assert f"meterstream aggregates --account {prefix.group(1)}" in out
