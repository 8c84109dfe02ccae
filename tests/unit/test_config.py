"""Unit tests for meterstream.config: defaults, `METERSTREAM_*` overrides, validation, secrets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from meterstream.config import (
    FlinkSettings,
    KafkaSettings,
    PostgresSettings,
    Settings,
    TopicSettings,
    env_names,
    load_settings,
)
from meterstream.errors import ConfigError, MeterstreamError

SECRET = "s3cret-Pa55word"  # noqa: S105 - a made-up password, to check masking


def config_error(settings: Settings) -> str:
    """Validate `settings`, expecting a ConfigError; return its message."""
    with pytest.raises(ConfigError) as info:
        settings.validate()
    return str(info.value)


# --- load_settings ---------------------------------------------------------------------------


def test_load_settings_empty_env_gives_defaults() -> None:
    assert load_settings({}) == Settings()


def test_load_settings_env_dict_ignores_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("METERSTREAM_KAFKA_PORT", "29092")

    assert load_settings({}).kafka.port == 19092


def test_load_settings_without_env_reads_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("METERSTREAM_KAFKA_PORT", "29092")

    assert load_settings().kafka.port == 29092


def test_load_settings_kafka_port_overrides_nested_field() -> None:
    settings = load_settings({"METERSTREAM_KAFKA_PORT": "29092"})

    assert settings.kafka.port == 29092
    assert settings.kafka.bootstrap_servers == "127.0.0.1:29092"
    assert settings.kafka.controller_port == 19093
    assert settings.postgres == PostgresSettings()


def test_load_settings_kafka_topics_raw_overrides_twice_nested_field() -> None:
    settings = load_settings({"METERSTREAM_KAFKA_TOPICS_RAW": "my.raw.topic"})

    assert settings.kafka.topics == TopicSettings(raw="my.raw.topic")
    assert settings.kafka.port == 19092


def test_load_settings_flink_parallelism_overrides_nested_field() -> None:
    settings = load_settings({"METERSTREAM_FLINK_PARALLELISM": "2"})

    assert settings.flink.parallelism == 2
    assert settings.flink == FlinkSettings(parallelism=2)


def test_load_settings_several_overrides_apply_together() -> None:
    settings = load_settings(
        {
            "METERSTREAM_KAFKA_HOST": "kafka.internal",
            "METERSTREAM_KAFKA_TOPICS_PARTITIONS": "12",
            "METERSTREAM_POSTGRES_PASSWORD": SECRET,
            "METERSTREAM_FLINK_STATE_BACKEND": "hashmap",
            "METERSTREAM_SCHEMAS_DIR": "/srv/schemas",
        }
    )

    assert settings.kafka.bootstrap_servers == "kafka.internal:19092"
    assert settings.kafka.topics.partitions == 12
    assert settings.postgres.password == SECRET
    assert settings.flink.state_backend == "hashmap"
    assert settings.schemas_dir == Path("/srv/schemas")


def test_load_settings_unrelated_variables_are_ignored() -> None:
    env = {"METERSTREAM_NOPE": "1", "KAFKA_PORT": "1", "METERSTREAM_KAFKA": "x", "PATH": "/bin"}

    assert load_settings(env) == Settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("METERSTREAM_KAFKA_PORT", "kafka"),
        ("METERSTREAM_KAFKA_PORT", "19092.0"),
        ("METERSTREAM_KAFKA_PORT", ""),
        ("METERSTREAM_FLINK_PARALLELISM", "two"),
        ("METERSTREAM_KAFKA_TOPICS_PARTITIONS", "4x"),
    ],
)
def test_load_settings_non_integer_raises_config_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({name: value})

    assert str(info.value) == f"{name}={value!r} is not an integer"
    assert isinstance(info.value.__cause__, ValueError)


def test_load_settings_invalid_value_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="flink.parallelism must be >= 1"):
        load_settings({"METERSTREAM_FLINK_PARALLELISM": "0"})


def test_load_settings_every_env_name_round_trips() -> None:
    env = {
        name: str(value)
        for name, value in env_names().items()
        if name != "METERSTREAM_POSTGRES_PASSWORD"  # shown masked
    }

    assert load_settings(env) == Settings()


def test_config_error_is_a_meterstream_error() -> None:
    assert issubclass(ConfigError, MeterstreamError)


# --- Settings.validate -----------------------------------------------------------------------


def test_settings_validate_defaults_are_valid() -> None:
    Settings().validate()


def test_settings_validate_reports_several_problems_at_once() -> None:
    settings = Settings(
        kafka=KafkaSettings(port=0, topics=TopicSettings(partitions=0)),
        postgres=PostgresSettings(port=70000),
        flink=FlinkSettings(parallelism=0, state_backend="memory", aggregate_ttl_days=1),
    )

    message = config_error(settings)

    assert message.splitlines() == [
        "invalid settings:",
        "  kafka.port=0 is not a TCP port",
        "  postgres.port=70000 is not a TCP port",
        "  flink.parallelism must be >= 1",
        "  flink.state_backend must be 'hashmap' or 'rocksdb'",
        "  flink.aggregate_ttl_days must be >= flink.dedup_ttl_days",
        "  kafka.topics.partitions must be >= 1",
    ]


def test_settings_validate_equal_ports_are_a_problem() -> None:
    settings = Settings(postgres=PostgresSettings(port=19092))

    assert "ports must differ" in config_error(settings)


@pytest.mark.parametrize("port", [1, 65535])
def test_settings_validate_port_bounds_are_valid(port: int) -> None:
    Settings(flink=FlinkSettings(rest_port=port)).validate()


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_settings_validate_port_out_of_range_is_a_problem(port: int) -> None:
    message = config_error(Settings(flink=FlinkSettings(rest_port=port)))

    assert f"flink.rest_port={port} is not a TCP port" in message


def test_settings_validate_equal_ttls_are_valid() -> None:
    Settings(flink=FlinkSettings(dedup_ttl_days=35, aggregate_ttl_days=35)).validate()


def test_settings_are_frozen() -> None:
    settings = Settings()

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.kafka.port = 1  # type: ignore[misc]


# --- secrets ---------------------------------------------------------------------------------


def test_env_names_masks_password() -> None:
    settings = load_settings({"METERSTREAM_POSTGRES_PASSWORD": SECRET})

    names = env_names(settings)
    shown = names["METERSTREAM_POSTGRES_PASSWORD"]

    assert shown == "***"
    assert SECRET not in map(str, names.values())


def test_env_names_lists_every_setting_with_its_value() -> None:
    names = env_names(load_settings({"METERSTREAM_KAFKA_TOPICS_RAW": "my.raw.topic"}))

    assert names["METERSTREAM_KAFKA_TOPICS_RAW"] == "my.raw.topic"
    assert names["METERSTREAM_KAFKA_PORT"] == 19092
    assert names["METERSTREAM_POSTGRES_USER"] == "meterstream"
    assert names["METERSTREAM_FLINK_PARALLELISM"] == 1
    assert names["METERSTREAM_SCHEMAS_DIR"] == Settings().schemas_dir
    assert names["METERSTREAM_FLINK_DEDUP_TTL_DAYS"] == 35


def test_env_names_defaults_to_default_settings() -> None:
    assert env_names() == env_names(Settings())


def test_settings_repr_hides_password() -> None:
    settings = Settings(postgres=PostgresSettings(password=SECRET))

    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert SECRET not in repr(settings.postgres)
    assert "password" not in repr(settings.postgres)
    assert "user='meterstream'" in repr(settings.postgres)
