"""The foundation works end to end: a worker reacts to a raw record, NATS round-trips."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest

from app.wire import codec
from devstack.stack import StackConfig
from tests.support.kafka import create_topics, produce, read_topic
from tests.support.worker import Worker

pytestmark = pytest.mark.integration


async def test_worker_consumes_a_raw_record(clean_kafka: StackConfig, tmp_path: Path, app_id: str):
    with Worker(clean_kafka, tmp_path, app_id) as worker:
        health = worker.health()
        assert health["service_name"] == "data-ingestion"
        assert health["status"] == "healthy"
        line = (
            b'{"type":"PRICE","time":"2026-11-30T09:00:00.000000000Z","instrument":"EUR_USD",'
            b'"tradeable":true,"bids":[{"price":"1.10000","liquidity":1000000}],'
            b'"asks":[{"price":"1.10010","liquidity":1000000}]}'
        )
        record = codec.RawRecord(
            source="ic_markets",
            format="oanda_v20",
            payload=line,
            receive_time_ns=1_796_029_200_005_000_000,
        )
        await produce(
            clean_kafka.kafka_bootstrap,
            "raw.broker.ticks",
            [(b"EURUSD", codec.encode_raw_batch([record]))],
        )
        deadline = time.monotonic() + 30
        last: dict[str, dict] = {}
        while time.monotonic() < deadline and "EURUSD" not in last:
            await asyncio.sleep(0.5)
            last = worker.get_json("/tables/last-price")
        assert last["EURUSD"]["ic_markets"]["bid"] == "1.1"
        assert last["EURUSD"]["ic_markets"]["ask"] == "1.1001"


async def test_nats_publish_subscribe_round_trip(stack: StackConfig):
    nc = await nats.connect(stack.nats_url)
    try:
        sub = await nc.subscribe("market.test.ticks")
        await nc.publish("market.test.ticks", b"\x08\x01")
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"\x08\x01"
        js = nc.jetstream()
        info = await js.account_info()
        assert info is not None
    finally:
        await nc.drain()


async def test_read_topic_sees_every_partition(clean_kafka: StackConfig) -> None:
    await create_topics(clean_kafka.kafka_bootstrap, ["support.check"], partitions=3)
    items = [(b"k%d" % i, b"v%d" % i) for i in range(6)]
    await produce(clean_kafka.kafka_bootstrap, "support.check", items)
    records = await read_topic(clean_kafka.kafka_bootstrap, "support.check", expect=6, idle=0.5)
    assert sorted(r.value for r in records) == [v for _, v in items]
