"""Table writes of acknowledged groups are merged: one changelog record per key and
interval, however many raw messages (groups) changed the key within it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from app.wire import codec
from devstack.stack import StackConfig
from tests.agents.test_pipeline_integration import IC, tick
from tests.support.kafka import read_topic
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

MESSAGES = 20


async def produce_one_by_one(bootstrap: str, count: int, gap_s: float) -> None:
    """Each message acknowledged, then a pause: the worker sees them as separate groups."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        for i in range(count):
            bid = f"1.{10000 + i:05d}"
            ask = f"1.{10010 + i:05d}"
            value = codec.encode_raw_batch([tick(IC, bid, ask, i * 100)])
            await (await producer.send("raw.broker.ticks", value=value, key=b"EURUSD"))
            await asyncio.sleep(gap_s)
    finally:
        await producer.stop()


async def test_state_of_many_groups_is_written_once_per_interval(
    clean_kafka: StackConfig, tmp_path: Path, app_id: str
):
    bootstrap = clean_kafka.kafka_bootstrap
    env = {"INGEST__KAFKA__TABLE_WRITE_INTERVAL_MS": "2000"}
    with Worker(clean_kafka, tmp_path / "worker", app_id, env=env) as worker:
        # 20 messages within ~0.5 s, one group each (every tick changes the best price)
        await produce_one_by_one(bootstrap, MESSAGES, gap_s=0.02)
        stream = await read_topic(bootstrap, "market-data-stream", expect=MESSAGES)
        assert len(stream) == MESSAGES
        changelog = await read_topic(bootstrap, f"{app_id}-symbol-state-changelog", expect=1)
        # one write per 2 s interval: the 20 groups fall into one or two of them
        assert 1 <= len(changelog) <= 3, len(changelog)
        best = worker.get_json("/tables/best-price")["EURUSD"]
        assert best["bid"] == f"1.{10000 + MESSAGES - 1:05d}"
