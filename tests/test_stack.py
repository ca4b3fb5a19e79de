"""The local stack really runs Kafka and NATS, survives component restarts and cleans up.

Uses its own ports and run dir so it never touches a developer's stack on the default ports.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import pytest

from devstack import stack
from devstack.stack import StackConfig, StackError
from tests.conftest import PORT_BASE


def _cfg(run_dir: Path) -> StackConfig:
    # Below the ephemeral range (32768-60999 here), where a client socket of the session
    # stack once held 39092 and failed this test; offset from the session stack's ports.
    base = PORT_BASE + 500
    return StackConfig(
        run_dir=run_dir,
        kafka_port=base + 92,
        controller_port=base + 93,
        nats_port=base + 222,
        nats_monitor_port=base + 300,  # the session stack monitors on PORT_BASE + 822
        timeout=60,
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


async def _kafka_roundtrip(bootstrap: str) -> tuple[str, bytes]:
    """Create a topic (auto-create is off), produce one message and read it back."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"stack-test-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    return topic, msg.value


async def _kafka_topics(bootstrap: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


async def _js_publish(url: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"])
        await js.publish("t.one", b"x")
    finally:
        await nc.close()


async def _js_messages(url: str) -> int:
    import nats

    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info("T")
        return info.state.messages
    finally:
        await nc.close()


@pytest.mark.integration
def test_stack_lifecycle(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "stack")
    try:
        assert stack.up(cfg) == {"kafka": "started", "nats": "started"}
        st = stack.status(cfg)
        assert all(info["running"] for info in st.values())
        pids = {name: info["pid"] for name, info in st.items()}

        topic, value = asyncio.run(_kafka_roundtrip(cfg.kafka_bootstrap))
        assert value == b"hello"

        assert stack.up(cfg) == {"kafka": "already running", "nats": "already running"}
        assert {name: info["pid"] for name, info in stack.status(cfg).items()} == pids

        asyncio.run(_js_publish(cfg.nats_url))
        assert stack.stop(cfg, "nats") == "stopped"
        assert not stack.status(cfg)["nats"]["running"]
        assert stack.start(cfg, "nats") == "started"
        assert asyncio.run(_js_messages(cfg.nats_url)) == 1

        assert stack.stop(cfg, "kafka") == "stopped"
        assert stack.start(cfg, "kafka") == "started"
        assert topic in asyncio.run(_kafka_topics(cfg.kafka_bootstrap))

        pids = {name: info["pid"] for name, info in stack.status(cfg).items()}
        stack.down(cfg)
        assert not any(_alive(pid) for pid in pids.values())
        assert not any(info["running"] for info in stack.status(cfg).values())
        assert not cfg.pid_file("kafka").exists()
    finally:
        stack.down(cfg, purge=True)
    assert not cfg.run_dir.exists()


def test_port_in_use_is_refused_before_starting_anything(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "stack")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        cfg.nats_port = blocker.getsockname()[1]
        with pytest.raises(StackError) as err:
            stack.up(cfg)
    assert str(cfg.nats_port) in str(err.value)
    assert err.value.exit_code == 2
    assert not any(info["running"] for info in stack.status(cfg).values())
    assert not cfg.pid_file("kafka").exists()
    assert not cfg.pid_file("nats").exists()
