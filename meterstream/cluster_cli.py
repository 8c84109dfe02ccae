"""The Flink cluster commands: `cluster-up`, `cluster-down`, `submit` and `upgrade`.

Registered on the main `meterstream` app in `meterstream/cli.py`; the work is done by
`meterstream.stack.flink`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from meterstream.config import Settings, load_settings
from meterstream.errors import MeterstreamError

console = Console()

#: Unknown options after the known ones go to the job unchanged (e.g. `--no-archive`).
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}

Address = Annotated[
    str | None,
    typer.Option(help="the JobManager's REST host:port (default: the local cluster's)"),
]
JobName = Annotated[str | None, typer.Option(help="the job's name (default: settings)")]
Topic = Annotated[str | None, typer.Option(help="raw events topic (default: settings)")]
RejectedTopic = Annotated[
    str | None, typer.Option(help="rejected events topic (default: settings)")
]
GroupId = Annotated[str | None, typer.Option(help="Kafka consumer group (default: settings)")]
CheckpointDir = Annotated[
    Path | None,
    typer.Option(help="checkpoints, on storage every TaskManager reaches (default: .stack/)"),
]


def _fail(exc: MeterstreamError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(code=1)


def _job_args(
    settings: Settings,
    *,
    job_name: str | None,
    topic: str | None,
    rejected_topic: str | None,
    group_id: str | None,
    checkpoint_dir: Path | None,
    extra: list[str],
) -> list[str]:
    args = ["--job-name", job_name or settings.flink.job_name]
    for flag, value in (
        ("--topic", topic),
        ("--rejected-topic", rejected_topic),
        ("--group-id", group_id),
        ("--checkpoint-dir", str(checkpoint_dir.resolve()) if checkpoint_dir else None),
    ):
        if value is not None:
            args += [flag, value]
    return [*args, *extra]


def cluster_up(
    taskmanagers: Annotated[int, typer.Option(help="TaskManagers to run (2 slots each)")] = 1,
) -> None:
    """Start a standalone Flink session cluster (JobManager + TaskManagers) from the wheel."""
    from meterstream.stack import flink  # noqa: PLC0415 - keep `--help` fast

    settings = load_settings()
    try:
        started = flink.start(settings)
        while len(flink.taskmanager_pids(settings)) < taskmanagers:
            flink.start_taskmanager(settings)
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    state = "started" if started else "already running"
    count = len(flink.taskmanager_pids(settings))
    console.print(f"Flink cluster {state}: {flink.rest_url(settings)}, {count} TaskManager(s)")


def cluster_down() -> None:
    """Stop the standalone Flink session cluster (every TaskManager and the JobManager)."""
    from meterstream.stack import flink  # noqa: PLC0415

    stopped = flink.stop(load_settings())
    console.print("Flink cluster " + ("stopped" if stopped else "was not running"))


def submit(  # noqa: PLR0917 - typer passes options as parameters
    ctx: typer.Context,
    address: Address = None,
    bounded: Annotated[bool, typer.Option(help="stop at the offsets current at start-up")] = False,
    restore_from: Annotated[str | None, typer.Option(help="checkpoint/savepoint to resume")] = None,
    job_name: JobName = None,
    topic: Topic = None,
    rejected_topic: RejectedTopic = None,
    group_id: GroupId = None,
    checkpoint_dir: CheckpointDir = None,
) -> None:
    """Submit the aggregation job to a Flink cluster (`flink run -d --python`).

    The job ships no jars: the cluster's lib/ must hold the connectors (`cluster-up` links
    them). Options the command does not know are passed to the job.
    """
    from meterstream.stack import flink  # noqa: PLC0415

    settings = load_settings()
    args = _job_args(
        settings,
        job_name=job_name,
        topic=topic,
        rejected_topic=rejected_topic,
        group_id=group_id,
        checkpoint_dir=checkpoint_dir,
        extra=list(ctx.args),
    )
    if bounded:
        args.append("--bounded")
    if restore_from:
        args += ["--restore-from", restore_from]
    try:
        job_id = flink.submit(settings, args, address=address)
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    console.print(f"submitted: job id {job_id}")


def upgrade(  # noqa: PLR0917 - typer passes options as parameters
    ctx: typer.Context,
    job_id: Annotated[
        str | None, typer.Option(help="the job to replace (default: the live job of that name)")
    ] = None,
    address: Address = None,
    savepoint_dir: Annotated[
        str | None,
        typer.Option(help="where the savepoint goes (default: .stack/savepoints; a URI works)"),
    ] = None,
    job_name: JobName = None,
    topic: Topic = None,
    rejected_topic: RejectedTopic = None,
    group_id: GroupId = None,
    checkpoint_dir: CheckpointDir = None,
) -> None:
    """Stop the job with a savepoint, then submit the current job code from that savepoint.

    Use it to deploy a new job version or new meter schemas: the Kafka offsets, dedup keys
    and figures carry over, so nothing is lost or counted twice. Give the same job options
    as to `submit`.
    """
    from meterstream.stack import flink  # noqa: PLC0415

    settings = load_settings()
    name = job_name or settings.flink.job_name
    args = _job_args(
        settings,
        job_name=name,
        topic=topic,
        rejected_topic=rejected_topic,
        group_id=group_id,
        checkpoint_dir=checkpoint_dir,
        extra=list(ctx.args),
    )
    try:
        old = job_id or flink.running_job(settings, name, address)
        console.print(f"stopping job {old} with a savepoint ...")
        savepoint, new = flink.upgrade(
            settings, old, args, directory=savepoint_dir, address=address
        )
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    console.print(f"savepoint: {savepoint}")
    console.print(f"submitted: job id {new}")
