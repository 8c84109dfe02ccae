"""Kill anything, lose nothing, count nothing twice: faults injected into a running job.

One job on the suite's own stack (`.stack/faults`, other ports) runs through every fault
while events flow; producers keep re-sending earlier events (same ids) all along. After each
fault every figure in PostgreSQL must equal the oracle's, and the validation log (table and
topic) must hold each rejected record exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest

from meterstream.stack import flink, kafka, postgres
from meterstream.testing import Record
from tests.faults.conftest import Variant
from tests.faults.pipeline import Pipeline, wait_for
from tests.faults.stack import child_env, link_jars

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.flink]


def events_with_retries(job: Pipeline, n: int, retry_fraction: float = 0.05) -> list[Record]:
    """New events with earlier ones (same ids, same bytes) re-sent among them."""
    records = job.new_events(n)
    for old in job.retries(retry_fraction):
        records.insert(job.rng.randrange(len(records) + 1), old)
    return records


@contextmanager
def while_events_flow(
    job: Pipeline, variant: Variant, first_fault_after: tuple[float, float] = (1.0, 3.0)
) -> Iterator[None]:
    """Stream events (with retries) through the running job and inject the block's fault
    mid-stream, after a random pause; then wait for the stream and send a few new events, so
    that the check also covers the job's replay."""
    job.ensure_job()
    stream = job.stream(events_with_retries(job, variant.events_per_phase))
    time.sleep(job.rng.uniform(*first_fault_after))
    yield
    job.join(stream)
    job.produce(job.new_events(20))


def test_job_submitted_by_address_runs_on_that_cluster(pipeline: Pipeline) -> None:
    # The client's own configuration points nowhere useful (no conf dir, a dead REST port):
    # only `--address` (flink run -m) leads to the fault cluster.
    job = pipeline
    address = f"127.0.0.1:{job.settings.flink.rest_port}"
    client_only = replace(job.settings, stack_dir=job.settings.stack_dir / "client-only")
    link_jars(client_only)
    elsewhere = {**child_env(client_only), "METERSTREAM_FLINK_REST_PORT": "18299"}
    job.produce(job.new_events(100))
    job.submit("--address", address, env=elsewhere)
    assert flink.job_state(job.settings, job.job_id) == "RUNNING"
    assert job.latest_checkpoint().parent.name == job.job_id
    job.stats.log.append(f"[submitted with --address {address}] job {job.job_id[:8]} runs there")


def test_taskmanager_killed_at_random_points_mid_stream(
    pipeline: Pipeline, variant: Variant
) -> None:
    job = pipeline
    with while_events_flow(job, variant, first_fault_after=(0.5, 4.0)):
        for kill in range(variant.taskmanager_kills):
            if kill:
                time.sleep(job.rng.uniform(0.5, 4.0))
            job.wait_running()
            running_on = flink.job_taskmanagers(job.settings, job.job_id)
            pids = {flink.taskmanager_pid(job.settings, tm) for tm in running_on} - {None}
            assert pids, f"no TaskManager process found for {running_on}"
            restarts = job.restarts()
            for pid in pids:
                flink.kill_taskmanager(job.settings, pid)  # type: ignore[arg-type]
                job.stats.fault("taskmanager-kill-9", f"pid {pid}, job {job.job_id}")
            # A replacement joins; the job fails over to the TaskManager that survived.
            for _ in pids:
                flink.start_taskmanager(job.settings)
            wait_for(
                lambda before=restarts: job.restarts() > before,
                120,
                "the cluster to restart the job",
            )
            job.wait_running()
    job.check(f"TaskManager killed x{variant.taskmanager_kills}")


def test_job_cancelled_and_resubmitted_from_its_latest_checkpoint(
    pipeline: Pipeline, variant: Variant
) -> None:
    job = pipeline
    with while_events_flow(job, variant, first_fault_after=(1.0, 4.0)):
        flink.cancel(job.settings, job.job_id)
        job.stats.fault("cancel-without-savepoint", f"job {job.job_id}")
        wait_for(lambda: flink.job_state(job.settings, job.job_id) == "CANCELED", 60, "the cancel")
        checkpoint = job.latest_checkpoint()
        job.submit("--restore-from", str(checkpoint))
    job.check(f"cancelled, resubmitted from {checkpoint.parent.name[:8]}/{checkpoint.name}")


def test_postgres_down_mid_stream(pipeline: Pipeline, variant: Variant) -> None:
    job = pipeline
    with while_events_flow(job, variant):
        try:
            postgres.stop(job.settings)
            job.stats.fault("postgres-down", f"{variant.postgres_outage_s:.0f}s")
            time.sleep(variant.postgres_outage_s)
        finally:
            postgres.start(job.settings)
        job.resume("PostgreSQL down")
    job.check(f"PostgreSQL down {variant.postgres_outage_s:.0f}s")


def test_kafka_broker_restarted_mid_stream(pipeline: Pipeline, variant: Variant) -> None:
    job = pipeline
    ways = ["clean", "kill-9"] if variant.kafka_hard_kill else ["clean"]
    with while_events_flow(job, variant):
        for n, way in enumerate(ways):
            if n:
                time.sleep(job.rng.uniform(1.0, 3.0))
            try:
                if way == "clean":
                    kafka.stop(job.settings)
                else:
                    kafka.service(job.settings).kill()
                job.stats.fault(f"kafka-restart-{way}")
                time.sleep(5)
            finally:
                kafka.start(job.settings)
            job.resume(f"Kafka restart ({way})")
    job.check(f"Kafka broker restarted ({', '.join(ways)})")


def test_upgrade_with_a_savepoint_while_events_flow(pipeline: Pipeline, variant: Variant) -> None:
    job = pipeline
    with while_events_flow(job, variant):
        old = job.job_id
        output = job.cli("upgrade", *job.job_options())  # finds the live job by its name
        job.stats.fault("upgrade-with-savepoint", f"job {old}")
        job.job_id = job.job_id_in(output)
        assert job.job_id != old
        assert flink.job_state(job.settings, old) == "FINISHED"
        job.wait_running()
    savepoint = output.split("savepoint: ", 1)[1].split()[0].rsplit("/", 1)[-1]
    job.check(f"upgraded through {savepoint}")


def test_producers_retrying_everything_again_count_nothing_twice(pipeline: Pipeline) -> None:
    job = pipeline
    job.ensure_job()
    again = list(job.sent)
    job.rng.shuffle(again)
    job.stats.fault("producer-retries-all", f"{len(again)} records re-sent")
    job.produce(again)
    job.produce(job.new_events(20))
    job.check("every record sent again")
