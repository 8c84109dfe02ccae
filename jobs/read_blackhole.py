"""Read the raw topic into a blackhole: the benchmark's baselines for the aggregation job.

Input:  the same Kafka source as `jobs/aggregate_usage.py` (same DDL, same Flink configuration:
        checkpoints, state backend), reading every column the job reads.
Output: nothing (`'connector' = 'blackhole'`).
Guarantees: none; it measures what reading the topic alone costs on this machine, and with
`--parse` what reading it and parsing each record's JSON once costs (`parse_json`, jvm/udf).

Run by `meterstream bench`; by hand: `python jobs/read_blackhole.py --topic T --bounded`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from meterstream.config import load_settings
from meterstream.flink import tables
from meterstream.flink.env import create_table_env

BLACKHOLE = """
CREATE TEMPORARY TABLE blackhole (
    payload STRING,
    kafka_topic STRING,
    kafka_partition INT,
    kafka_offset BIGINT,
    arrived_at TIMESTAMP_LTZ(3)
) WITH ('connector' = 'blackhole')
"""

READ = """
INSERT INTO blackhole
SELECT payload, kafka_topic, kafka_partition, kafka_offset, arrived_at FROM raw_events
"""

PARSED = """
CREATE TEMPORARY TABLE parsed (
    fields INT,
    kafka_partition INT,
    kafka_offset BIGINT,
    arrived_at TIMESTAMP_LTZ(3)
) WITH ('connector' = 'blackhole')
"""

READ_AND_PARSE = """
INSERT INTO parsed
SELECT parse_json(payload), kafka_partition, kafka_offset, arrived_at FROM raw_events
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", help="raw events topic (default: settings)")
    parser.add_argument("--group-id", default="meterstream-read-blackhole")
    parser.add_argument("--checkpoint-dir", type=Path, help="default: .stack/checkpoints/<job>")
    parser.add_argument(
        "--bounded", action="store_true", help="stop at the offsets that are current at start-up"
    )
    parser.add_argument("--job-name", default="meterstream-read-blackhole")
    parser.add_argument("--parse", action="store_true", help="also parse each record's JSON once")
    args = parser.parse_args(argv)

    settings = load_settings()
    checkpoint_dir = args.checkpoint_dir or settings.stack_dir / "checkpoints" / args.job_name
    t_env = create_table_env(settings, job_name=args.job_name, checkpoint_dir=checkpoint_dir)
    t_env.execute_sql(
        tables.kafka_raw_events_ddl(
            settings, topic=args.topic, group_id=args.group_id, bounded=args.bounded
        )
    )
    if args.parse:
        t_env.create_java_temporary_system_function("parse_json", "io.meterstream.flink.ParseJson")
        t_env.execute_sql(PARSED)
        result = t_env.execute_sql(READ_AND_PARSE)
    else:
        t_env.execute_sql(BLACKHOLE)
        result = t_env.execute_sql(READ)
    client = result.get_job_client()
    if client is not None:
        print(f"job id: {client.get_job_id()}", flush=True)  # noqa: T201 - the bench reads this
    result.wait()


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    main()
