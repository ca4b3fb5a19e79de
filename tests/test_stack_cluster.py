"""`devstack.stack --brokers 3`: the cluster's layout, without starting processes (the
running cluster is exercised by tests/faults/test_cluster.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack import stack
from devstack.stack import StackConfig, StackError


def _cluster(run_dir: Path) -> StackConfig:
    return StackConfig(run_dir=run_dir, kafka_port=21592, controller_port=21593, brokers=3)


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_three_nodes_have_own_ports_dirs_and_one_quorum(tmp_path: Path) -> None:
    cfg = _cluster(tmp_path)
    assert cfg.kafka_nodes == ["kafka-1", "kafka-2", "kafka-3"]
    assert cfg.kafka_bootstrap == "127.0.0.1:21592,127.0.0.1:21602,127.0.0.1:21612"
    props = {n: _props(stack._kafka_properties(cfg, n)) for n in cfg.kafka_nodes}
    assert [p["node.id"] for p in props.values()] == ["1", "2", "3"]
    voters = "1@127.0.0.1:21593,2@127.0.0.1:21603,3@127.0.0.1:21613"
    assert {p["controller.quorum.voters"] for p in props.values()} == {voters}
    assert props["kafka-2"]["listeners"] == (
        "PLAINTEXT://127.0.0.1:21602,CONTROLLER://127.0.0.1:21603"
    )
    assert len({p["log.dirs"] for p in props.values()}) == 3
    for p in props.values():
        assert p["process.roles"] == "broker,controller"
        assert p["default.replication.factor"] == "3"
        assert p["min.insync.replicas"] == "2"
        assert p["offsets.topic.replication.factor"] == "3"
        assert p["transaction.state.log.replication.factor"] == "3"
        assert p["transaction.state.log.min.isr"] == "2"
        assert p["unclean.leader.election.enable"] == "false"


def test_single_broker_is_unchanged(tmp_path: Path) -> None:
    cfg = StackConfig(run_dir=tmp_path, kafka_port=21592, controller_port=21593)
    assert cfg.kafka_nodes == ["kafka"] and cfg.kafka_bootstrap == "127.0.0.1:21592"
    props = _props(stack._kafka_properties(cfg))
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:21593"
    assert props["offsets.topic.replication.factor"] == "1"
    assert "min.insync.replicas" not in props


def test_cluster_id_is_made_once_and_reused(tmp_path: Path) -> None:
    cfg = _cluster(tmp_path)
    first = stack._cluster_id(cfg)
    assert stack._cluster_id(cfg) == first
    assert stack._cluster_id(_cluster(tmp_path)) == first  # a later command, same run dir


def test_one_node_by_name_and_kafka_for_all(tmp_path: Path) -> None:
    cfg = _cluster(tmp_path)
    assert stack._components(cfg, "kafka-2") == ["kafka-2"]
    assert stack._components(cfg, "kafka") == cfg.kafka_nodes
    with pytest.raises(StackError):
        stack._components(cfg, "kafka-4")
    with pytest.raises(StackError):
        stack._components(StackConfig(run_dir=tmp_path / "one"), "kafka-2")


def test_secure_cluster_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StackError) as err:
        StackConfig(run_dir=tmp_path, brokers=3, secure=True)
    assert err.value.exit_code == stack.EXIT_PRECONDITION


def test_later_commands_read_the_broker_count(tmp_path: Path) -> None:
    stack._save_state(_cluster(tmp_path))
    assert json.loads((tmp_path / "stack.json").read_text())["brokers"] == 3
    assert StackConfig.resolve(run_dir=tmp_path).kafka_nodes == ["kafka-1", "kafka-2", "kafka-3"]


def test_active_controller_is_the_leader_of_the_newest_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cluster(tmp_path)
    states = {"kafka-1": (2, 3), "kafka-2": (3, 4), "kafka-3": (2, 3)}  # (leader, epoch)
    for node, (leader, epoch) in states.items():
        meta = cfg.component_dir(node) / "data" / "__cluster_metadata-0"
        meta.mkdir(parents=True)
        (meta / "quorum-state").write_text(
            json.dumps({"leaderId": leader, "leaderEpoch": epoch, "votedId": -1})
        )
    monkeypatch.setattr(stack, "_running_pid", lambda cfg, node: 1)
    assert stack.active_controller(cfg) == 3
    # a stopped node's file is not read
    monkeypatch.setattr(stack, "_running_pid", lambda cfg, node: None if node == "kafka-2" else 1)
    assert stack.active_controller(cfg) == 2
