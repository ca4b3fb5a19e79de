"""Scenario 3: NATS is down for 30 s while ticks flow through a real worker.

Raw ticks are produced into raw.broker.ticks before, during and after the outage; the
worker turns them into market-data-stream and its bridge mirrors that to JetStream. After
NATS is back (same store dir), the JetStream stream must hold exactly the distinct
market-data-stream messages: none lost, none twice.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.js.errors
import pytest
from aiokafka import AIOKafkaProducer

from app.pipeline.topics import MARKET_DATA_REJECTS, MARKET_DATA_STREAM, RAW_BROKER_TICKS
from app.wire import codec
from devstack import stack as local_stack
from devstack.stack import StackConfig
from tests.faults.conftest import FAST_REBALANCE
from tests.support.faults_b import BROKERS, wait_for
from tests.support.kafka import create_topics, read_topic
from tests.support.pipeline import jetstream_count, jetstream_messages, nats_env, wait_committed
from tests.support.worker import Worker

pytestmark = [pytest.mark.integration, pytest.mark.faults]

OUTAGE_S = 30.0
RATE_PER_S = 10  # raw messages per second, 5 ticks each
SYMBOLS = {"EURUSD": 1_080_000_000, "GBPUSD": 1_270_000_000, "USDJPY": 151_200_000_000}
T0 = 1_800_000_000_000_000_000


class TickFeed:
    """Valid raw ticks (as the broker source writes them) at a steady rate, seeded."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.rng = random.Random(3)
        self.mids = dict(SYMBOLS)
        self.event_ns = T0
        self.sent = 0
        self.stopping = asyncio.Event()

    def message(self, i: int) -> tuple[bytes, bytes]:
        symbol = sorted(SYMBOLS)[i % len(SYMBOLS)]
        batch = codec.RawBatch()
        for _ in range(5):
            self.event_ns += 50_000_000
            self.mids[symbol] += self.rng.randint(-20, 20) * SYMBOLS[symbol] // 1_000_000
            source = self.rng.choice(BROKERS)
            half = SYMBOLS[symbol] // 100_000
            batch.records.add(
                source=source,
                format="oanda_v20",
                receive_time_ns=self.event_ns + 1_000_000,
                tick=codec.MarketTick(
                    symbol=symbol,
                    source=source,
                    bid_e9=self.mids[symbol] - half,
                    ask_e9=self.mids[symbol] + half,
                    bid_volume=1e6,
                    ask_volume=1e6,
                    event_time_ns=self.event_ns,
                    receive_time_ns=self.event_ns + 1_000_000,
                ),
            )
        return symbol.encode(), batch.SerializeToString()

    async def run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            while not self.stopping.is_set():
                key, value = self.message(self.sent)
                await producer.send_and_wait(RAW_BROKER_TICKS, value=value, key=key)
                self.sent += 1
                await asyncio.sleep(1 / RATE_PER_S)
        finally:
            await producer.stop()


@pytest.fixture
async def js_names(clean_kafka: StackConfig, app_id: str) -> AsyncIterator[tuple[str, str]]:
    prefix, stream = f"f3{app_id[5:]}", f"F3{app_id[5:].upper()}"
    yield prefix, stream
    nc = await nats.connect(clean_kafka.nats_url)
    try:
        await nc.jetstream().delete_stream(stream)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await nc.close()


async def prepare(bootstrap: str, prefix: str, stream: str) -> dict[str, str]:
    """The pipeline's topics (4 partitions) and a worker env publishing to `stream`."""
    await create_topics(bootstrap, [RAW_BROKER_TICKS, MARKET_DATA_STREAM, MARKET_DATA_REJECTS], 4)
    return {
        **nats_env("unused"),  # timeouts and candles off, as in the other fault scenarios
        "INGEST__NATS__SUBJECT_PREFIX": prefix,
        "INGEST__NATS__STREAM_NAME": stream,
    }


async def test_nats_down_30s_nothing_lost_nothing_duplicated(
    clean_kafka: StackConfig, js_names: tuple[str, str], tmp_path: Path, app_id: str
) -> None:
    prefix, stream = js_names
    bootstrap = clean_kafka.kafka_bootstrap
    env = await prepare(bootstrap, prefix, stream)
    feed = TickFeed(bootstrap)
    with Worker(clean_kafka, tmp_path, app_id, env=env) as worker:
        feeding = asyncio.create_task(feed.run())
        try:
            await wait_for(lambda: worker.health()["status"] == "healthy", 20, "a healthy worker")
            nats_url = clean_kafka.nats_url

            async def bridged() -> int:
                return await jetstream_count(nats_url, stream)

            deadline = time.monotonic() + 30
            while await bridged() < 20:
                assert time.monotonic() < deadline, "nothing reached JetStream before the outage"
                await asyncio.sleep(0.3)
            await asyncio.to_thread(local_stack.stop, clean_kafka, "nats")
            stopped = time.monotonic()
            sent_at_stop = feed.sent
            during: list[dict] = []
            while time.monotonic() - stopped < OUTAGE_S:
                during.append(await asyncio.to_thread(worker.health))
                await asyncio.sleep(1)
            sent_during = feed.sent - sent_at_stop
            await asyncio.to_thread(local_stack.start, clean_kafka, "nats")
            restarted = time.monotonic()

            def recovered() -> bool:
                h = worker.health()
                bridge = h["nats_bridge"]
                return (
                    h["status"] == "healthy"
                    and bridge["state"] == "connected"
                    and bridge["lag_messages"] == 0
                )

            await wait_for(recovered, 60, "the bridge to reconnect and catch up")
            recovery_s = time.monotonic() - restarted
            await asyncio.sleep(3)  # ticks keep flowing after the outage too
        finally:
            feed.stopping.set()
            await feeding
        raw_sent = feed.sent
        await wait_for(lambda: worker.health()["nats_bridge"]["lag_messages"] == 0, 30, "lag 0")
        after = worker.health()

    stream_msgs = await read_topic(bootstrap, MARKET_DATA_STREAM, idle=2)
    in_kafka = Counter(m.value for m in stream_msgs)
    distinct = set(in_kafka)

    async def count() -> int:
        return await jetstream_count(clean_kafka.nats_url, stream)

    deadline = time.monotonic() + 30
    while await count() < len(distinct) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    stored = [data for _subject, data in await jetstream_messages(clean_kafka.nats_url, stream)]
    stored_counts = Counter(stored)
    lost = len(distinct - set(stored_counts))
    duplicated = sum(n - 1 for n in stored_counts.values())
    print(
        f"\nscenario 3 NATS outage {OUTAGE_S:.0f}s: raw messages={raw_sent}"
        f" ({sent_during} during the outage) market-data-stream={len(stream_msgs)}"
        f" (distinct {len(distinct)}) jetstream={len(stored)} lost={lost}"
        f" duplicated={duplicated} recovery={recovery_s:.1f}s"
        f" re-sends dropped by JetStream={after['nats_bridge'].get('duplicates_dropped')}"
    )
    assert sent_during >= OUTAGE_S * RATE_PER_S / 3, "ticks did not keep flowing"
    assert any(
        h["status"] == "degraded"
        and "nats_bridge" in h["problems"]
        and h["nats_bridge"]["state"] != "connected"
        for h in during
    ), during[-1]
    assert during[-1]["status"] == "degraded"
    assert after["status"] == "healthy" and after["nats_bridge"]["reconnects"] >= 1
    assert len(stream_msgs) > raw_sent / 2  # best price changed with (almost) every message
    assert lost == 0
    assert duplicated == 0
    assert set(stored_counts) == distinct
    assert len(stored) == len(distinct)


async def test_worker_killed_while_nats_is_down_nothing_lost_nothing_duplicated(
    clean_kafka: StackConfig, js_names: tuple[str, str], tmp_path: Path, app_id: str
) -> None:
    """Two workers; NATS stops, one worker is SIGKILLed and the group rebalances while
    the bridge cannot publish, then NATS comes back. What the dead worker's bridge had
    taken but not published is re-read by the survivor: JetStream gets every distinct
    market-data-stream message exactly once."""
    prefix, stream = js_names
    bootstrap = clean_kafka.kafka_bootstrap
    env = {**await prepare(bootstrap, prefix, stream), **FAST_REBALANCE}
    feed = TickFeed(bootstrap)
    nats_url = clean_kafka.nats_url
    with (
        Worker(clean_kafka, tmp_path / "a", app_id, env=env) as survivor,
        Worker(clean_kafka, tmp_path / "b", app_id, env=env) as victim,
    ):
        feeding = asyncio.create_task(feed.run())
        try:
            await wait_for(lambda: victim.health()["status"] == "healthy", 30, "both workers")
            deadline = time.monotonic() + 30
            while await jetstream_count(nats_url, stream) < 20:
                assert time.monotonic() < deadline, "nothing reached JetStream before the outage"
                await asyncio.sleep(0.3)
            await asyncio.to_thread(local_stack.stop, clean_kafka, "nats")
            await asyncio.sleep(5)  # both bridges take messages they cannot publish
            victim.kill()
            await asyncio.sleep(12)  # session timeout 6 s: the survivor gets every partition
            await asyncio.to_thread(local_stack.start, clean_kafka, "nats")

            def caught_up() -> bool:
                h = survivor.health()
                return h["status"] == "healthy" and h["nats_bridge"]["lag_messages"] == 0

            await wait_for(caught_up, 60, "the survivor's bridge to catch up")
            await asyncio.sleep(2)
        finally:
            feed.stopping.set()
            await feeding
        await wait_for(lambda: survivor.health()["nats_bridge"]["lag_messages"] == 0, 30, "lag 0")
        # The survivor commits what it re-read, the dead worker's partitions included
        # (faust's commit after such a rebalance was measured taking 11-26 s).
        committing = time.monotonic()
        await wait_committed(bootstrap, app_id, timeout=30)
        commit_s = time.monotonic() - committing

    in_kafka = await read_topic(bootstrap, MARKET_DATA_STREAM, idle=2)
    distinct = {m.value for m in in_kafka}
    deadline = time.monotonic() + 30
    while await jetstream_count(nats_url, stream) < len(distinct) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    stored = Counter([data for _subject, data in await jetstream_messages(nats_url, stream)])
    lost = len(distinct - set(stored))
    missing = [(m.partition, m.offset, m.timestamp) for m in in_kafka if m.value not in stored]
    duplicated = sum(n - 1 for n in stored.values())
    print(
        f"\nscenario 3b worker killed while NATS down: raw messages={feed.sent}"
        f" market-data-stream distinct={len(distinct)} jetstream={sum(stored.values())}"
        f" lost={lost} duplicated={duplicated}; all committed {commit_s:.1f}s after catching up"
    )
    assert len(distinct) > feed.sent / 2
    assert (lost, duplicated) == (0, 0), f"not in JetStream (partition, offset, ms): {missing}"
    assert set(stored) == distinct
