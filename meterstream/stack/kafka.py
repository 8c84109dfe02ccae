"""A single-node Kafka broker in KRaft combined mode (controller + broker), on loopback only."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from meterstream.config import Settings
from meterstream.errors import StackError
from meterstream.stack.jars import ensure_jars, kafka_classpath
from meterstream.stack.processes import Service, port_open, require_free, wait_until

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


def _dirs(settings: Settings) -> tuple[Path, Path]:
    home = settings.stack_dir / "kafka"
    return home, home / "data"


def service(settings: Settings) -> Service:
    """The broker's process handle."""
    return Service("kafka", settings.stack_dir / "run", settings.stack_dir / "logs")


def server_properties(settings: Settings, data_dir: Path) -> str:
    """The broker configuration: one node, replication factor 1, loopback listeners."""
    k = settings.kafka
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{k.host}:{k.controller_port}",
            f"listeners=PLAINTEXT://{k.host}:{k.port},CONTROLLER://{k.host}:{k.controller_port}",
            f"advertised.listeners=PLAINTEXT://{k.host}:{k.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={data_dir}",
            f"num.partitions={k.topics.partitions}",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # Flink's exactly-once Kafka sink opens transactions of up to this length.
            "transaction.max.timeout.ms=3600000",
            "auto.create.topics.enable=false",
            "log.retention.hours=-1",
            "",
        ]
    )


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        msg = "java is not installed; the Kafka broker and Flink need a JDK 17"
        raise StackError(msg)
    return java


def start(settings: Settings) -> bool:
    """Start the broker unless it runs; format its storage on first start. True if started."""
    svc = service(settings)
    if svc.running():
        return False
    require_free(settings.kafka.port, "Kafka")
    require_free(settings.kafka.controller_port, "the Kafka controller")
    ensure_jars(settings)
    home, data = _dirs(settings)
    home.mkdir(parents=True, exist_ok=True)
    props = home / "server.properties"
    props.write_text(server_properties(settings, data))
    log4j = home / "log4j2.properties"
    log4j.write_text(LOG4J2.format(log=settings.stack_dir / "logs" / "kafka-server.log"))
    java = _java()
    base = [
        java,
        "-Xms256m",
        "-Xmx1g",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        kafka_classpath(settings),
    ]
    if not (data / "meta.properties").exists():
        fmt = subprocess.run(
            [
                *base,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                uuid.uuid4().hex[:22],
                "-c",
                str(props),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            msg = f"formatting Kafka storage in {data} failed:\n{fmt.stdout}{fmt.stderr}"
            raise StackError(msg)
    svc.start([*base, "kafka.Kafka", str(props)])
    wait_until(lambda: port_open(settings.kafka.port), 90, "Kafka", svc.log_file)
    wait_until(lambda: _metadata_ready(settings), 60, "Kafka metadata", svc.log_file)
    wait_until(lambda: _producer_ids_ready(settings), 60, "Kafka producer ids", svc.log_file)
    return True


def admin_config(settings: Settings) -> dict[str, object]:
    """An admin client's configuration: librdkafka's log at warnings and above.

    An admin client dropped right after its answer can log "Purging 1 unserved events from
    background queue" (level 6, informational) into the command's output, e.g. the demo's.
    """
    return {"bootstrap.servers": settings.kafka.bootstrap_servers, "log_level": 4}


def _metadata_ready(settings: Settings) -> bool:
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415 - keep CLI start-up light

    try:
        AdminClient(admin_config(settings)).list_topics(timeout=2)
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    return True


def _producer_ids_ready(settings: Settings, timeout_s: float = 5.0) -> bool:
    """Whether an idempotent producer gets its producer id.

    A fresh KRaft broker fetches its first block of producer ids from the controller when the
    first idempotent producer asks, and answers "Coordinator load in progress" until then:
    librdkafka retries, but prints a GETPID warning in whatever command produced first (the
    demo, the API). Asking once here, with librdkafka's log at errors only, moves that wait
    into start-up.
    """
    from confluent_kafka import Producer  # noqa: PLC0415

    states: list[str] = []

    def on_stats(raw: str) -> None:
        states.append(json.loads(raw).get("eos", {}).get("idemp_state", ""))

    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "enable.idempotence": True,
            "statistics.interval.ms": 100,
            "stats_cb": on_stats,
            "log_level": 3,  # errors only: the retried GETPID warning is expected here
        }
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        producer.poll(0.1)
        if states and states[-1] == "Assigned":
            return True
    return False


def stop(settings: Settings) -> bool:
    """Stop the broker (clean shutdown, then kill); True if it was running."""
    return service(settings).stop(timeout_s=60)


def reset(settings: Settings) -> None:
    """Delete the broker's data (it must be stopped)."""
    if service(settings).running():
        msg = "stop Kafka before deleting its data"
        raise StackError(msg)
    shutil.rmtree(_dirs(settings)[0], ignore_errors=True)


#: Raw-event topics: the broker stamps each record's arrival time, which validation uses for
#: its time checks; clients cannot set it.
RAW_TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}


def create_topics(
    settings: Settings,
    names: list[str],
    partitions: int | None = None,
    config: dict[str, str] | None = None,
) -> None:
    """Create topics that do not exist yet (idempotent)."""
    from confluent_kafka.admin import AdminClient, NewTopic  # noqa: PLC0415

    admin = AdminClient(admin_config(settings))
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [
        NewTopic(
            name,
            num_partitions=partitions or settings.kafka.topics.partitions,
            replication_factor=1,
            config=config or {},
        )
        for name in names
        if name not in existing
    ]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, operation_timeout=30).items():
        try:
            future.result()
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                msg = f"could not create topic {name}: {exc}"
                raise StackError(msg) from exc
