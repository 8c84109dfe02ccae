"""Recovery on a standalone Flink cluster: the job's TaskManager SIGKILLed under a fixed input rate.

The local job (`suite._live_recovery`) runs in a mini cluster inside its own process: killing it
kills everything, and the restart plans and submits the job again in a new JVM. On a cluster
(`meterstream cluster-up`, `cluster submit`) the JobManager keeps the job and restarts its tasks
from the last completed checkpoint once a TaskManager offers slots. Here a replacement
TaskManager is started right after the kill, as a supervisor (systemd, Kubernetes) would.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meterstream.bench import freshness, state
from meterstream.config import Settings
from meterstream.flink.launch import JobOptions
from meterstream.stack import flink
from meterstream.stack.processes import wait_until
from meterstream.testing import Record

#: How long the job runs at the fixed rate (after its first fresh probe) before the kill.
WARM_S = 30.0
#: Probes after "live again" that must all be on time before it counts.
SETTLE_S = 10.0


@dataclass(frozen=True, slots=True)
class ClusterRun:
    """What the measurement needs: where to send what, and how long to wait."""

    settings: Settings
    topic: str
    rejected_topic: str
    prefix: str
    checkpoint_dir: Path
    archive_dir: Path
    records: Iterator[Record]
    rate: float
    probe_meter: str
    probe_data: dict[str, Any]
    fresh_s: float
    timeout_s: float
    warm_s: float = WARM_S


def measure(run: ClusterRun, say: Callable[[str], None]) -> state.Recovery:
    """Start a cluster (unless one runs here), run the job at the rate, kill its TaskManager."""
    settings = run.settings
    if flink.running(settings):
        return state.Recovery.not_measured(
            "cluster",
            f"a Flink cluster already listens on port {settings.flink.rest_port}; the bench "
            "does not kill TaskManagers of a cluster it did not start",
        )
    flink.start(settings)
    poller = freshness.ProbePoller(settings, f"{run.prefix}-probe")
    producer = freshness.PacedProducer(
        settings,
        run.topic,
        run.records,
        run.rate,
        f"{run.prefix}-probe",
        run.probe_meter,
        run.probe_data,
    )
    job_id = None
    try:
        options = JobOptions(
            topic=run.topic,
            rejected_topic=run.rejected_topic,
            group_id=f"{run.prefix}-cluster",
            checkpoint_dir=run.checkpoint_dir,
            archive_dir=run.archive_dir,
            job_name=f"{run.prefix}-cluster",
        )
        job_id = flink.submit(settings, options.job_args())
        poller.start()
        producer.start()
        wait_until(
            lambda: any(p.freshness_s <= run.fresh_s for p in poller.seen.values()),
            120,
            "the cluster job's first fresh probe",
        )
        time.sleep(run.warm_s)
        wait_until(
            lambda: flink.completed_checkpoints(settings, job_id) > 0,
            60,
            "a completed checkpoint of the cluster job",
        )
        return _kill_and_recover(run, job_id, poller, producer, say)
    finally:
        producer.stop()
        poller.stop()
        if job_id is not None:
            with contextlib.suppress(Exception):  # the cluster is stopped next anyway
                flink.cancel(settings, job_id)
        flink.stop(settings)


def _kill_and_recover(
    run: ClusterRun,
    job_id: str,
    poller: freshness.ProbePoller,
    producer: freshness.PacedProducer,
    say: Callable[[str], None],
) -> state.Recovery:
    settings = run.settings
    pids = {flink.taskmanager_pid(settings, tm) for tm in flink.job_taskmanagers(settings, job_id)}
    pids.discard(None)
    if not pids:
        return state.Recovery.not_measured("cluster", "no TaskManager process of the job found")
    killed_at = time.time()
    for pid in pids:
        flink.kill_taskmanager(settings, pid)  # type: ignore[arg-type]
    replacement = threading.Thread(
        target=lambda: [flink.start_taskmanager(settings) for _ in pids], daemon=True
    )
    replacement.start()
    running_again = first_fresh = live_again = None
    while time.time() - killed_at < run.timeout_s and live_again is None:
        now = time.time()
        if running_again is None and flink.tasks_running(
            settings, job_id, since_ms=int(killed_at * 1000)
        ):
            running_again = now
        if first_fresh is None:
            first_fresh = freshness.first_fresh_at(poller.between(killed_at, now), run.fresh_s)
        live_again = freshness.live_again_at(
            list(producer.probe_log),
            dict(poller.seen),
            since=killed_at,
            limit_s=run.fresh_s,
            settle_s=SETTLE_S,
            now=now,
        )
        time.sleep(0.2)
    replacement.join(timeout=120)
    recovery = state.Recovery(
        restored_checkpoint=flink.restored_checkpoint(settings, job_id),
        to_running_s=running_again - killed_at if running_again else None,
        to_caught_up_s=first_fresh - killed_at if first_fresh else None,
        fresh_s=run.fresh_s,
        max_lag=None,
        waited_s=run.timeout_s,
        live_again_s=live_again - killed_at if live_again else None,
        where="cluster",
        detail=f"{len(pids)} TaskManager(s) killed, replacement started at once",
    )
    say(
        f"   cluster recovery: RUNNING again {state.seconds(recovery.to_running_s)} s, first fresh "
        f"probe {state.seconds(recovery.to_caught_up_s)} s, live again "
        f"{state.seconds(recovery.live_again_s)} s after the SIGKILL"
    )
    return recovery
