"""Run a job script unchanged, with the bench's observation-only Flink options added.

`python -m meterstream.bench.jobwrap jobs/aggregate_usage.py --topic ...` runs the real job's
`__main__` with `meterstream.flink.env.flink_configuration` extended by `observe()`: the mini
cluster's REST endpoint listens on 127.0.0.1 at the port the bench chose
(`METERSTREAM_BENCH_REST_PORT`) and refreshes metrics every 200 ms instead of every 10 s.
Nothing that affects processing (workflow, checkpoints, state, mini-batches, sinks) is changed,
unless a what-if experiment asks for it with `METERSTREAM_BENCH_WHAT_IF="key=value;..."`
(`meterstream bench --what-if key=value`); the report then names those options.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

REST_PORT_ENV = "METERSTREAM_BENCH_REST_PORT"
WHAT_IF_ENV = "METERSTREAM_BENCH_WHAT_IF"


def what_if(raw: str) -> dict[str, str]:
    """Parse `key=value;key=value` Flink options of a what-if experiment.

    >>> what_if("state.backend.type=hashmap; a.b = 1")
    {'state.backend.type': 'hashmap', 'a.b': '1'}
    """
    pairs = (item.split("=", 1) for item in raw.split(";") if "=" in item)
    return {key.strip(): value.strip() for key, value in pairs}


def observe() -> dict[str, str]:
    """Options that change only what the bench can observe, never what the job does."""
    options = {
        "metrics.fetcher.update-interval": "200 ms",
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
    }
    if os.environ.get(REST_PORT_ENV):
        options["rest.port"] = os.environ[REST_PORT_ENV]
    return {**options, **what_if(os.environ.get(WHAT_IF_ENV, ""))}


def main() -> None:
    """Patch the configuration function, then run the job script given as first argument."""
    from meterstream.flink import env  # noqa: PLC0415 - pyflink only in the job's process

    original = env.flink_configuration

    def observed(*args: Any, **kwargs: Any) -> dict[str, str]:
        return {**original(*args, **kwargs), **observe()}

    env.flink_configuration = observed  # type: ignore[assignment]
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
