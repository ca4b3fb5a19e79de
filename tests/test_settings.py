"""A broken configuration stops the service with a message naming the field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import DEFAULT_CONFIG, ConfigError, load_settings

REPO = Path(__file__).resolve().parent.parent


def test_shipped_config_is_valid() -> None:
    settings = load_settings(DEFAULT_CONFIG, environ={})
    assert settings.kafka.partitions == 8
    assert [b.priority for b in settings.brokers.values()] == [1, 2, 3, 4, 5, 6]
    assert [b.kind for b in settings.brokers.values()] == ["oanda_v20"] * 3 + ["mt5"] * 3


def test_broken_yaml_is_reported_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kafka:\n  partitions: [8\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML"):
        load_settings(path, environ={})


def test_negative_partition_count_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "neg.yaml"
    path.write_text("kafka:\n  partitions: -1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "kafka.partitions: Input should be greater than 0" in str(info.value)


def test_unknown_key_is_an_error_not_a_silent_default(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("kafka:\n  bootstrap_server: x:9092\n")
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap_server: Extra inputs"):
        load_settings(path, environ={})


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_environment_overrides_yaml() -> None:
    env = {"INGEST__KAFKA__BOOTSTRAP_SERVERS": "kafka:9092", "INGEST__KAFKA__PARTITIONS": "3"}
    settings = load_settings(DEFAULT_CONFIG, environ=env)
    assert (settings.kafka.bootstrap_servers, settings.kafka.partitions) == ("kafka:9092", 3)


def test_bad_override_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.partitions"):
        load_settings(DEFAULT_CONFIG, environ={"INGEST__KAFKA__PARTITIONS": "-4"})


def test_worker_refuses_to_start_on_a_broken_config(tmp_path: Path) -> None:
    path = tmp_path / "neg.yaml"
    path.write_text("kafka:\n  partitions: -1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "app", "worker"],
        cwd=REPO,
        env={**os.environ, "INGEST_CONFIG": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "kafka.partitions: Input should be greater than 0" in proc.stderr
