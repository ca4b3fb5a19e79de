"""The NATS bridge through real Kafka and a real nats-server -js: exactly N, byte-identical.

Each test uses its own subject prefix and JetStream stream, so Nats-Msg-Ids that repeat
across tests (topics are recreated, offsets restart at 0) never meet one duplicate window.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.js.errors
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from nats.aio.client import Client
from nats.js import JetStreamContext

from app.pipeline.topics import MARKET_CONTEXT_STREAM, MARKET_DATA_STREAM
from app.wire import codec
from devstack import stack as local_stack
from devstack.stack import StackConfig
from tests.support.kafka import create_topics, produce
from tests.support.pipeline import group_lag
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD")
SOURCES = ("data-ingestion", "dukascopy")
Item = tuple[bytes, bytes, str]  # key, value, expected subject


@dataclass(frozen=True)
class Bridge:
    prefix: str
    stream: str

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "INGEST__NATS__SUBJECT_PREFIX": self.prefix,
            "INGEST__NATS__STREAM_NAME": self.stream,
            "INGEST__NATS__ACK_TIMEOUT_S": "2",
            "INGEST__NATS__RECONNECT_WAIT_S": "0.5",
            **extra,
        }


@pytest.fixture
async def bridge(clean_kafka: StackConfig, app_id: str) -> AsyncIterator[Bridge]:
    await create_topics(clean_kafka.kafka_bootstrap, [MARKET_DATA_STREAM, MARKET_CONTEXT_STREAM], 4)
    names = Bridge(prefix=f"t{app_id[5:]}", stream=f"T{app_id[5:].upper()}")
    yield names
    nc = await nats.connect(clean_kafka.nats_url)
    try:
        await nc.jetstream().delete_stream(names.stream)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await nc.close()


def market_data(prefix: str, start: int, count: int) -> list[Item]:
    """`count` distinct MarketDataStream messages over several symbols and two sources."""
    items = []
    for i in range(start, start + count):
        symbol, source = SYMBOLS[i % len(SYMBOLS)], SOURCES[(i // 7) % len(SOURCES)]
        msg = codec.MarketDataStream(source=source, batch_time_ns=1_700_000_000_000_000_000 + i)
        for j in range(3):
            msg.ticks.add(symbol=symbol, source=source, bid_e9=1_000_000_000 + i, ask_e9=j)
        items.append((symbol.encode(), msg.SerializeToString(), f"{prefix}.{source}.ticks"))
    return items


def market_context(prefix: str, count: int) -> list[Item]:
    items = []
    for i in range(count):
        provider = ("fred", "coingecko")[i % 2]
        msg = codec.MarketContext(provider=provider, series=f"S{i}", value=float(i))
        key = f"{provider}:S{i}".encode()
        items.append((key, msg.SerializeToString(), f"{prefix}.context.{provider}"))
    return items


async def send(stack: StackConfig, topic: str, items: list[Item]) -> None:
    await produce(stack.kafka_bootstrap, topic, [(k, v) for k, v, _ in items])


async def stream_count(js: JetStreamContext, name: str) -> int:
    try:
        return (await js.stream_info(name)).state.messages
    except nats.js.errors.NotFoundError:
        return 0


async def wait_count(js: JetStreamContext, name: str, n: int, timeout: float = 90.0) -> int:
    """Wait until the stream holds `n` messages, then a little longer to see any surplus."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = await stream_count(js, name)
        if count >= n:
            await asyncio.sleep(1.5)
            return await stream_count(js, name)
        await asyncio.sleep(0.2)
    return count


async def stored(js: JetStreamContext, name: str) -> list[tuple[str, bytes]]:
    info = await js.stream_info(name)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(name, seq)
        out.append((msg.subject, msg.data))
    return out


def assert_exactly(got: list[tuple[str, bytes]], items: list[Item]) -> None:
    expected = Counter((subject, value) for _, value, subject in items)
    assert len(expected) == len(items), "test data must be distinct"
    assert len(got) == len(items)
    assert Counter(got) == expected


async def uncommitted(stack: StackConfig, group: str, timeout: float = 15.0) -> dict[int, str]:
    """Partitions of market-data-stream whose committed offset is not yet the end offset."""
    tps = [TopicPartition(MARKET_DATA_STREAM, p) for p in range(4)]
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await consumer.start()
    await admin.start()
    try:
        end = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        behind: dict[int, str] = {}
        while time.monotonic() < deadline:
            offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
            behind = {
                tp.partition: f"committed {offsets[tp].offset if tp in offsets else None}"
                f" of {end[tp]}"
                for tp in tps
                if end[tp] and (tp not in offsets or offsets[tp].offset != end[tp])
            }
            if not behind:
                break
            await asyncio.sleep(0.5)
        return behind
    finally:
        await consumer.stop()
        await admin.close()


@pytest.fixture
async def js(stack: StackConfig) -> AsyncIterator[JetStreamContext]:
    nc: Client = await nats.connect(stack.nats_url, max_reconnect_attempts=-1)
    yield nc.jetstream()
    await nc.close()


async def test_every_message_arrives_once_byte_identical(
    bridge: Bridge, js: JetStreamContext, clean_kafka: StackConfig, tmp_path: Path, app_id: str
):
    ticks = market_data(bridge.prefix, 0, 2000)
    context = market_context(bridge.prefix, 20)
    with Worker(clean_kafka, tmp_path, app_id, env=bridge.env()) as worker:
        started = time.monotonic()
        await send(clean_kafka, MARKET_DATA_STREAM, ticks)
        await send(clean_kafka, MARKET_CONTEXT_STREAM, context)
        assert await wait_count(js, bridge.stream, 2020) == 2020
        elapsed = time.monotonic() - started
        assert_exactly(await stored(js, bridge.stream), ticks + context)
        # Offsets are committed once NATS has acked (commit interval 1 s).
        assert await uncommitted(clean_kafka, app_id) == {}
        section = worker.health()["nats_bridge"]
        assert section["state"] == "connected"
        assert section["acked"] == section["consumed"] == 2020
        assert section["lag_messages"] == 0
        assert section["in_flight"] == 0
        print(f"bridge: 2020 messages through Kafka+faust+JetStream in {elapsed:.2f}s")


async def test_nats_outage_loses_nothing_and_duplicates_nothing(
    bridge: Bridge, js: JetStreamContext, clean_kafka: StackConfig, tmp_path: Path, app_id: str
):
    first, second = market_data(bridge.prefix, 0, 1000), market_data(bridge.prefix, 1000, 1000)
    with Worker(clean_kafka, tmp_path, app_id, env=bridge.env()) as worker:
        await send(clean_kafka, MARKET_DATA_STREAM, first)
        while (before_stop := await stream_count(js, bridge.stream)) < 300:
            await asyncio.sleep(0.02)
        local_stack.stop(clean_kafka, "nats")  # mid-stream: publishes in flight die with it
        try:
            await send(clean_kafka, MARKET_DATA_STREAM, second)
            await asyncio.sleep(4)
            health = worker.health()
            assert health["status"] == "degraded"
            assert "nats_bridge" in health["problems"]
            # The bridge holds what it took (not acked, not committed); the rest waits in Kafka.
            assert health["nats_bridge"]["lag_messages"] >= 1
            assert health["nats_bridge"]["state"] == "disconnected"
        finally:
            local_stack.start(clean_kafka, "nats")
        assert await wait_count(js, bridge.stream, 2000) == 2000
        assert_exactly(await stored(js, bridge.stream), first + second)
        section = worker.health()["nats_bridge"]
        assert section["reconnects"] >= 1
        assert section["lag_messages"] == 0
        print(f"NATS stopped at {before_stop}/1000 stored; after the outage: {section}")


async def test_worker_crash_resends_are_deduplicated(
    bridge: Bridge, js: JetStreamContext, clean_kafka: StackConfig, tmp_path: Path, app_id: str
):
    first, second = market_data(bridge.prefix, 0, 1000), market_data(bridge.prefix, 1000, 1000)
    # faust reads these from the environment: the killed member leaves the group after
    # 6 s (Kafka's minimum) instead of 60 s, so the restarted worker joins quickly.
    env = bridge.env(BROKER_SESSION_TIMEOUT="6", BROKER_HEARTBEAT_INTERVAL="1")
    worker = Worker(clean_kafka, tmp_path, app_id, env=env).start()
    try:
        await send(clean_kafka, MARKET_DATA_STREAM, first)
        while await stream_count(js, bridge.stream) < 600:
            await asyncio.sleep(0.05)
    finally:
        worker.kill()  # mid-stream, offsets of up to a commit interval uncommitted
    await send(clean_kafka, MARKET_DATA_STREAM, second)
    with Worker(clean_kafka, tmp_path, app_id, env=env) as restarted:
        assert await wait_count(js, bridge.stream, 2000) == 2000
        assert_exactly(await stored(js, bridge.stream), first + second)
        section = restarted.health()["nats_bridge"]
        assert section["acked"] >= 1000
        print(f"re-sent after SIGKILL and dropped by JetStream: {section['duplicates_dropped']}")


async def test_core_mode_subscriber_receives(
    bridge: Bridge, clean_kafka: StackConfig, tmp_path: Path, app_id: str
):
    items = market_data(bridge.prefix, 0, 50)
    nc = await nats.connect(clean_kafka.nats_url)
    try:
        sub = await nc.subscribe(f"{bridge.prefix}.>")
        env = bridge.env(INGEST__NATS__MODE="core")
        with Worker(clean_kafka, tmp_path, app_id, env=env) as worker:
            deadline = time.monotonic() + 10
            while worker.health()["nats_bridge"]["state"] != "connected":
                assert time.monotonic() < deadline, "bridge never connected"
                await asyncio.sleep(0.2)
            await send(clean_kafka, MARKET_DATA_STREAM, items)
            got = [await sub.next_msg(timeout=20) for _ in items]
        assert Counter((m.subject, m.data) for m in got) == Counter((s, v) for _, v, s in items)
    finally:
        await nc.close()


async def test_worker_starts_while_nats_is_down_and_catches_up(
    bridge: Bridge, js: JetStreamContext, clean_kafka: StackConfig, tmp_path: Path, app_id: str
):
    items = market_data(bridge.prefix, 0, 200)
    local_stack.stop(clean_kafka, "nats")
    try:
        worker = Worker(clean_kafka, tmp_path, app_id, env=bridge.env()).start(timeout=30)
        await send(clean_kafka, MARKET_DATA_STREAM, items)
        section = worker.health()["nats_bridge"]
        assert section["state"] != "connected"
        assert section["acked"] == 0
    finally:
        local_stack.start(clean_kafka, "nats")
    try:
        assert await wait_count(js, bridge.stream, 200) == 200
        assert_exactly(await stored(js, bridge.stream), items)
    finally:
        worker.stop()


async def test_bridge_down_longer_than_the_window_republishes_nothing(
    bridge: Bridge, js: JetStreamContext, clean_kafka: StackConfig, tmp_path: Path, app_id: str
):
    """JetStream's duplicate window (2 s here) is over when the bridge comes back, and the
    bridge's Kafka offsets were never committed (commit interval 60 s), so it re-reads all
    of `first`: only its own record of what NATS acked keeps those out of the stream."""
    first, second = market_data(bridge.prefix, 0, 500), market_data(bridge.prefix, 500, 200)
    env = bridge.env(
        INGEST__NATS__DUPLICATE_WINDOW_S="2",
        INGEST__KAFKA__COMMIT_INTERVAL_S="60",
        BROKER_SESSION_TIMEOUT="6",
        BROKER_HEARTBEAT_INTERVAL="1",
    )
    worker = Worker(clean_kafka, tmp_path, app_id, env=env).start()
    try:
        await send(clean_kafka, MARKET_DATA_STREAM, first)
        assert await wait_count(js, bridge.stream, 500) == 500  # + 1.5 s for the table write
    finally:
        worker.kill()
    reread = sum(
        (await group_lag(clean_kafka.kafka_bootstrap, app_id, [MARKET_DATA_STREAM])).values()
    )
    assert reread > 0, "offsets were committed: nothing would be re-read"
    await asyncio.sleep(3)  # longer than the duplicate window
    await send(clean_kafka, MARKET_DATA_STREAM, second)
    with Worker(clean_kafka, tmp_path, app_id, env=env) as restarted:
        assert await wait_count(js, bridge.stream, 700) == 700
        assert_exactly(await stored(js, bridge.stream), first + second)
        section = restarted.health()["nats_bridge"]
        assert section["skipped_published"] == reread
        assert section["duplicates_dropped"] == 0  # not JetStream's doing
        print(f"bridge down > window: re-read {reread}, skipped {reread}, stream 700 of 700")
