"""The adaptive batching writer against a fake send function (pure logic, no Kafka)."""

from __future__ import annotations

import asyncio
import random

import pytest
from aiokafka.partitioner import DefaultPartitioner

from app.sources.raw_writer import RawWriter, key_partition
from app.wire import codec

PARTITIONS = 8
# Symbols and their partitions of 8 by Kafka's default partitioner (checked below).
AUDUSD, USDCHF = b"AUDUSD", b"USDCHF"  # both partition 6
EURUSD, USDJPY = b"EURUSD", b"USDJPY"  # 5 and 1


class FakeKafka:
    """Records every send; each delivery future is completed (or failed) by the test."""

    def __init__(self, auto_ack: bool = False) -> None:
        self.sent: list[tuple[str, bytes, bytes, int | None, asyncio.Future[None]]] = []
        self.auto_ack = auto_ack

    async def send(
        self, topic: str, key: bytes, value: bytes, partition: int | None
    ) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.auto_ack:
            fut.set_result(None)
        self.sent.append((topic, key, value, partition, fut))
        return fut

    def ack(self, index: int) -> None:
        self.sent[index][4].set_result(None)

    def batches(self, key: bytes) -> list[list[bytes]]:
        return [
            [r.payload for r in codec.decode_raw_batch(value).records]
            for topic, k, value, _, _ in self.sent
            if k == key and topic == "raw"
        ]


def writer_on(kafka: FakeKafka, **kwargs: float) -> RawWriter:
    return RawWriter(kafka.send, "raw", "rejects", PARTITIONS, **kwargs)  # type: ignore[arg-type]


def record(payload: bytes) -> codec.RawRecord:
    return codec.RawRecord(source="b", format="oanda_v20", payload=payload, receive_time_ns=1)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_batch_from_encoded_records_is_byte_identical() -> None:
    records = [record(b"x" * n) for n in (0, 1, 127, 128, 300, 20000)]
    encoded = [r.SerializeToString() for r in records]
    assert codec.encode_raw_batch_from_encoded(encoded) == codec.encode_raw_batch(records)


async def test_first_record_goes_alone_then_accumulated_records_go_as_one_batch() -> None:
    kafka = FakeKafka()
    writer = writer_on(kafka)
    writer.put(b"EURUSD", record(b"1"))
    await settle()
    assert kafka.batches(b"EURUSD") == [[b"1"]]
    for i in range(2, 12):
        writer.put(b"EURUSD", record(str(i).encode()))
    await settle()
    assert len(kafka.sent) == 1, "nothing else is sent while the first is in flight"
    kafka.ack(0)
    await settle()
    assert kafka.batches(b"EURUSD") == [[b"1"], [str(i).encode() for i in range(2, 12)]]
    kafka.ack(1)
    await writer.flush()
    assert writer.stats()["records_sent"] == 11 and writer.stats()["messages_sent"] == 2


def test_partition_is_kafkas_default_partitioner() -> None:
    rng = random.Random(7)
    keys = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20))) for _ in range(500)]
    for key in [*keys, AUDUSD, USDCHF, EURUSD, USDJPY]:
        for n in (1, 3, 8, 12):
            assert key_partition(key, n) == DefaultPartitioner()(key, list(range(n)), [])
    assert key_partition(AUDUSD, 8) == key_partition(USDCHF, 8) == 6
    assert (key_partition(EURUSD, 8), key_partition(USDJPY, 8)) == (5, 1)


async def test_partitions_do_not_wait_for_each_other() -> None:
    kafka = FakeKafka()
    writer = writer_on(kafka)
    writer.put(EURUSD, record(b"a"))
    writer.put(USDJPY, record(b"b"))
    await settle()
    assert sorted((k, p) for _, k, _, p, _ in kafka.sent) == [(EURUSD, 5), (USDJPY, 1)]


async def test_symbols_of_one_partition_share_a_message_in_arrival_order() -> None:
    kafka = FakeKafka()
    writer = writer_on(kafka)
    writer.put(AUDUSD, record(b"1"))
    await settle()
    for key, payload in [(USDCHF, b"2"), (AUDUSD, b"3"), (USDCHF, b"4")]:
        writer.put(key, record(payload))
    await settle()
    assert len(kafka.sent) == 1, "the partition has a message in flight"
    kafka.ack(0)
    await settle()
    topic, key, value, partition, _ = kafka.sent[1]
    assert (topic, key, partition) == ("raw", b"USDCHF,AUDUSD", 6)
    records = codec.decode_raw_batch(value).records
    assert [(r.symbol, r.payload) for r in records] == [
        ("USDCHF", b"2"),
        ("AUDUSD", b"3"),
        ("USDCHF", b"4"),
    ]
    assert codec.decode_raw_batch(kafka.sent[0][2]).records[0].symbol == "AUDUSD"
    assert kafka.sent[0][1] == AUDUSD, "a message of one symbol is keyed by it"
    kafka.ack(1)
    await writer.flush()
    assert writer.stats()["multi_symbol_messages"] == 1


@pytest.mark.parametrize("linger_s", [0.0, 0.05])
async def test_linger_gathers_an_idle_partitions_records(linger_s: float) -> None:
    kafka = FakeKafka(auto_ack=True)
    writer = writer_on(kafka, linger_s=linger_s)
    writer.put(AUDUSD, record(b"1"))
    await settle()
    writer.put(USDCHF, record(b"2"))
    await writer.flush()
    keys = [k for _, k, _, _, _ in kafka.sent]
    assert keys == ([b"AUDUSD,USDCHF"] if linger_s else [AUDUSD, USDCHF])


async def test_batches_are_bounded_by_count_and_bytes_and_keep_order() -> None:
    kafka = FakeKafka(auto_ack=True)
    writer = writer_on(kafka, max_records=500)
    for i in range(1201):  # put without yielding: the drain task starts after the loop
        writer.put(b"K", record(f"{i:04d}".encode()))
    await writer.flush()
    sizes = [len(b) for b in kafka.batches(b"K")]
    assert sizes == [500, 500, 201]
    assert [p for b in kafka.batches(b"K") for p in b] == [f"{i:04d}".encode() for i in range(1201)]

    big = FakeKafka(auto_ack=True)
    writer = writer_on(big, max_records=500, max_bytes=10_000)
    for _ in range(11):
        writer.put(b"K", record(b"x" * 2000))
    await writer.flush()
    assert all(len(v) <= 10_000 for _, _, v, _, _ in big.sent)
    assert sum(len(b) for b in big.batches(b"K")) == 11


async def test_failed_send_is_retried_until_confirmed_and_nothing_is_lost() -> None:
    kafka = FakeKafka()
    writer = writer_on(kafka, retry_initial_s=0.01, retry_max_s=0.02)
    writer.put(b"K", record(b"a"))
    await settle()
    kafka.sent[0][4].set_exception(ConnectionError("broker down"))
    while len(kafka.sent) < 2:
        await asyncio.sleep(0.005)
    assert kafka.sent[1][2] == kafka.sent[0][2], "the same message is sent again"
    kafka.ack(1)
    await writer.flush()
    assert writer.stats()["send_failures"] == 1 and writer.stats()["records_sent"] == 1


async def test_reader_waits_when_the_buffer_is_full() -> None:
    kafka = FakeKafka()
    writer = writer_on(kafka, max_buffered=5)
    for i in range(5):
        writer.put(b"K", record(bytes([i])))
    assert writer.full
    waiter = asyncio.create_task(writer.wait_for_room())
    await settle()
    assert not waiter.done()
    kafka.ack(0)
    await asyncio.wait_for(waiter, 1)
    assert not writer.full


async def test_rejections_go_one_per_message_to_the_rejects_topic() -> None:
    kafka = FakeKafka(auto_ack=True)
    writer = writer_on(kafka)
    for i in range(3):
        writer.reject(b"ic_markets", f"r{i}".encode())
    await writer.flush()
    assert [(t, k, v) for t, k, v, _, _ in kafka.sent] == [
        ("rejects", b"ic_markets", b"r0"),
        ("rejects", b"ic_markets", b"r1"),
        ("rejects", b"ic_markets", b"r2"),
    ]


@pytest.mark.parametrize("ack", [True, False])
async def test_close_flushes_or_reports_what_is_unconfirmed(ack: bool, caplog) -> None:
    kafka = FakeKafka(auto_ack=ack)
    writer = writer_on(kafka)
    writer.put(b"K", record(b"a"))
    await writer.close(timeout=0.1)
    assert writer.buffered == (0 if ack else 1)
    assert ("not confirmed" in caplog.text) is not ack
