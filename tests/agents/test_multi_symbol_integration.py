"""Raw messages of several symbols (the raw writer batches per partition) through a real
worker and Kafka: each symbol gets its own state, the outputs of a message are one message
in its partition, the lineage index is the record's place in the raw message, and the
same records sent again are rejected, symbol by symbol, from each symbol's own state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from app.sources.raw_writer import RawWriter, key_partition
from app.wire import codec
from devstack.stack import StackConfig
from tests.agents.test_pipeline_integration import IC, tick, wait_for
from tests.support.kafka import read_topic
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

PARTITIONS = 4  # tests.support.worker runs workers with kafka.partitions 4
RAW = "raw.broker.ticks"


async def write(bootstrap: str, items: list[tuple[bytes, codec.RawRecord]]) -> dict[str, int]:
    """The records through the service's RawWriter (linger: one message per partition)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()

    async def send(topic: str, key: bytes, value: bytes, partition: int | None) -> object:
        return await producer.send(topic, value, key=key, partition=partition)

    writer = RawWriter(send, RAW, "market-data-rejects", PARTITIONS, linger_s=0.2)
    try:
        for key, record in items:
            writer.put(key, record)
        await writer.flush()
    finally:
        await producer.stop()
    return writer.stats()


async def test_a_message_of_two_symbols(clean_kafka: StackConfig, tmp_path: Path, app_id: str):
    bootstrap = clean_kafka.kafka_bootstrap
    assert key_partition(b"AUDUSD", PARTITIONS) == key_partition(b"USDCHF", PARTITIONS) == 2
    items = [
        (b"AUDUSD", tick(IC, "0.65000", "0.65010", 0, symbol="AUDUSD")),
        (b"USDCHF", tick(IC, "0.88000", "0.88010", 10, symbol="USDCHF")),
        (b"AUDUSD", tick(IC, "0.65002", "0.65012", 20, symbol="AUDUSD")),
    ]
    with Worker(clean_kafka, tmp_path / "worker", app_id) as worker:
        stats = await write(bootstrap, items)
        assert (stats["messages_sent"], stats["multi_symbol_messages"]) == (1, 1)
        [raw] = await read_topic(bootstrap, RAW, expect=1)
        assert (raw.key, raw.partition) == (b"AUDUSD,USDCHF", 2)

        [out] = await read_topic(bootstrap, "market-data-stream", expect=1)
        assert (out.key, out.partition) == (b"AUDUSD,USDCHF", 2)
        ticks = codec.decode_market_data(out.value).ticks
        assert [(t.symbol, t.lineage.offset, t.lineage.index) for t in ticks] == [
            ("AUDUSD", 0, 0),
            ("AUDUSD", 0, 2),
            ("USDCHF", 0, 1),
        ]
        best = await wait_for(
            lambda: (b if {"AUDUSD", "USDCHF"} <= set(b := worker.get_json("/tables/best-price"))
                     else None)
        )  # fmt: skip
        assert best["USDCHF"]["bid"] == "0.88" and best["AUDUSD"]["bid"] == "0.65002"

        # The same records again (a source re-sending after a lost ack): all refused.
        await write(bootstrap, items)
        rejects = await read_topic(bootstrap, "market-data-rejects", expect=3)
        got = sorted(
            (r.key, codec.decode_rejection(r.value).lineage.index, *r_reasons)
            for r in rejects
            for r_reasons in [codec.decode_rejection(r.value).reasons]
        )
        assert got == [
            (b"AUDUSD", 0, "out_of_order"),  # older than AUDUSD's newest
            (b"AUDUSD", 2, "duplicate"),
            (b"USDCHF", 1, "duplicate"),
        ]
        await asyncio.sleep(0)
        assert len(await read_topic(bootstrap, "market-data-stream", expect=1, idle=1)) == 1
