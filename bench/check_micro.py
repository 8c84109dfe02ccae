r"""The JVM fast path's CPU time per record, alone (a script, not a test).

    .venv/bin/python bench/check_micro.py --records 200000 --rounds 8

Generates the benchmark workload (`meterstream.bench.generator`, seed 42), compiles
bench/CheckBench.java against the job's jars and runs `FastCheckEvent` over the records, round
after round in one JVM: the first rounds warm the JIT up, the last ones are the figure. Thread
CPU time, so a busy machine changes it little; compare two versions of the check in one sitting.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from meterstream.bench.generator import Workload, generate
from meterstream.config import load_settings
from meterstream.flink.udfs import fast_path_spec
from meterstream.meters.registry import load_registry
from meterstream.stack.flink import flink_home
from meterstream.stack.jars import ensure_jars, flink_jars

HERE = Path(__file__).resolve().parent


def main() -> None:
    """Generate, compile, run; print the CPU time per record of each round."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    settings = load_settings()
    ensure_jars(settings)
    registry = load_registry(settings.schemas_dir)
    workload = Workload(args.records, seed=42, account_prefix="micro")
    generated = generate(workload, registry)
    classpath = ":".join(
        [str(p) for p in sorted((flink_home() / "lib").glob("*.jar"))]
        + [str(p) for p in flink_jars(settings)]
    )
    with tempfile.TemporaryDirectory(prefix="check-micro-") as tmp:
        data = Path(tmp) / "records.json"
        data.write_bytes(
            orjson.dumps(
                {
                    "spec": fast_path_spec(registry),
                    "arrived_ms": int(time.time() * 1000),
                    "payloads": [r.value.decode("utf-8", "replace") for r in generated.records],
                }
            )
        )
        subprocess.run(
            ["javac", "-nowarn", "-cp", classpath, "-d", tmp, str(HERE / "CheckBench.java")],
            check=True,
        )
        subprocess.run(
            ["java", "-cp", f"{tmp}:{classpath}", "CheckBench", str(data), str(args.rounds)],
            check=True,
            stdout=sys.stdout,
        )


if __name__ == "__main__":
    main()
