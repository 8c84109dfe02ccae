"""The one place that configures Flink: checkpoints, state, TTLs, mini-batches, jars, Python."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pyflink.common import Configuration
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.table import EnvironmentSettings, StreamTableEnvironment

from meterstream.config import Settings
from meterstream.flink.launch import use_own_temp_dir
from meterstream.stack.jars import flink_jars


def flink_configuration(
    settings: Settings,
    *,
    job_name: str,
    checkpoint_dir: Path,
    restore_from: str | None = None,
) -> dict[str, str]:
    """Every Flink option the aggregation job sets, as plain strings (printed by `config flink`)."""
    f = settings.flink
    conf = {
        "pipeline.name": job_name,
        "parallelism.default": str(f.parallelism),
        # The Python rules run in this Python, embedded in the TaskManager (check_event).
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        # Exactly-once: Kafka offsets are part of each checkpoint; sinks flush on checkpoint.
        "execution.checkpointing.interval": f"{f.checkpoint_interval_ms} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": checkpoint_dir.resolve().as_uri(),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        "state.backend.type": f.state_backend,
        "execution.checkpointing.incremental": "true",
        # Backs off to 30 s between attempts, so a minute-long PostgreSQL or Kafka outage is
        # ridden out (the fault suite takes PostgreSQL down for 60 s) instead of failing the job.
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": "1 s",
        "restart-strategy.exponential-delay.max-backoff": "30 s",
        # Dedup keys live 35 days (the billing contract); group totals get a longer hint in SQL.
        "table.exec.state.ttl": f"{f.dedup_ttl_days} d",
        # The SQL path's aggregations buffer in mini-batches; the keyed operator flushes its
        # figures on its own clock (the same latency and size), so it needs no batch markers.
        "table.exec.mini-batch.enabled": str(f.keyed_path == "sql").lower(),
        "table.exec.mini-batch.allow-latency": f"{f.mini_batch_latency_ms} ms",
        "table.exec.mini-batch.size": str(f.mini_batch_size),
        "table.local-time-zone": "UTC",
        # Stable operator ids for the Table API's stateful operators (the Kafka source and sink,
        # the archive's writer and committer): derived from the plan, not from the job graph's
        # chaining, which changes with the parallelism (the archive's committer always runs at
        # 1), so that a savepoint restores at another parallelism.
        "table.exec.uid.generation": "ALWAYS",
        # ...and the archive's committer (max parallelism 1) in a task of its own at every
        # parallelism: chained to the writer at parallelism 1, its state would be saved with
        # the writer's max parallelism (128) and not restore at parallelism 2.
        "pipeline.operator-chaining.chain-operators-with-different-max-parallelism": "false",
        # The job's own REST endpoint (mini cluster) listens on loopback only. Only the bind
        # address: rest.address/rest.port would override `flink run -m` when submitting.
        "rest.bind-address": "127.0.0.1",
        # ~95% of dedup lookups are for new keys: a bloom filter answers those without I/O.
        "state.backend.rocksdb.use-bloom-filter": "true",
        # ...but only if the filter is in the block cache. Whole-file filters grow with the
        # state and are evicted from the cache's small high-priority pool, so each lookup read
        # and checksummed megabytes of filter from disk: throughput halved after ~1 M ids.
        # Partitioned filters load only the 4 KB partition a key needs (docs/benchmarks.md).
        "state.backend.rocksdb.memory.partitioned-index-filters": "true",
        # The SQL operators copy a row between chained operators unless objects may be reused;
        # the table runtime and the sinks copy where they keep rows (~10% of the CPU, measured).
        "pipeline.object-reuse": "true",
    }
    if f.ship_jars:
        # Not on a session cluster that has the connectors in lib/ (`cluster-up`): a second
        # user-code class loader per TaskManager breaks Python UDFs (FLINK-37727).
        conf["pipeline.jars"] = ";".join(p.resolve().as_uri() for p in flink_jars(settings))
    if restore_from:
        conf["execution.state-recovery.path"] = restore_from
    return conf


#: The log4j configuration of a local job's JVM (Hadoop's INFO lines kept off the console).
JOB_LOG4J = Path(__file__).with_name("log4j-job.properties")


def quiet_job_output() -> None:
    """Keep library chatter out of a local job's console; the JVM's log file keeps it all.

    Must run before the JVM starts. Apache Beam (imported by PyFlink's Python functions) logs
    at INFO on import ("Using Any for unsupported type", "No module named
    google.cloud.bigquery_storage_v1"), which the jobs' INFO logging printed; the JVM gets
    `JOB_LOG4J` unless `LOG4J_PROPERTIES` names another file.
    """
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    os.environ.setdefault("LOG4J_PROPERTIES", str(JOB_LOG4J))


def create_table_env(
    settings: Settings,
    *,
    job_name: str,
    checkpoint_dir: Path,
    restore_from: str | None = None,
) -> StreamTableEnvironment:
    """A streaming table environment configured for the aggregation job.

    A `StreamTableEnvironment`, so that the keyed operator (`KeyedPath`, jvm/udf) can join the
    job's Table API program through the DataStream API.
    """
    # The JDBC sink writes UTC wall-clock timestamps; the JVM started below must agree.
    os.environ["TZ"] = "UTC"
    use_own_temp_dir(settings.stack_dir / "job-tmp")
    quiet_job_output()
    # check_event embeds this interpreter in the JVM (pemja); the job's Python finds pyflink
    # and pemja through the virtualenv only when it is first on PATH (even if never activated).
    venv_bin = str(Path(sys.executable).parent)
    if not os.environ.get("PATH", "").startswith(venv_bin + os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    if sys.prefix != sys.base_prefix:
        os.environ["VIRTUAL_ENV"] = sys.prefix
    conf = Configuration()
    for key, value in flink_configuration(
        settings, job_name=job_name, checkpoint_dir=checkpoint_dir, restore_from=restore_from
    ).items():
        conf.set_string(key, value)
    env_settings = (
        EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build()
    )
    stream_env = StreamExecutionEnvironment.get_execution_environment(conf)
    return StreamTableEnvironment.create(stream_env, environment_settings=env_settings)
