"""The adaptive batching writer against a fake send function (pure logic, no Kafka)."""

from __future__ import annotations

import asyncio

import pytest

from app.sources.raw_writer import RawWriter
from app.wire import codec


class FakeKafka:
    """Records every send; each delivery future is completed (or failed) by the test."""

    def __init__(self, auto_ack: bool = False) -> None:
        self.sent: list[tuple[str, bytes, bytes, asyncio.Future[None]]] = []
        self.auto_ack = auto_ack

    async def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.auto_ack:
            fut.set_result(None)
        self.sent.append((topic, key, value, fut))
        return fut

    def ack(self, index: int) -> None:
        self.sent[index][3].set_result(None)

    def batches(self, key: bytes) -> list[list[bytes]]:
        return [
            [r.payload for r in codec.decode_raw_batch(value).records]
            for topic, k, value, _ in self.sent
            if k == key and topic == "raw"
        ]


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
    writer = RawWriter(kafka.send, "raw", "rejects")
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


async def test_keys_do_not_wait_for_each_other() -> None:
    kafka = FakeKafka()
    writer = RawWriter(kafka.send, "raw", "rejects")
    writer.put(b"EURUSD", record(b"a"))
    writer.put(b"USDJPY", record(b"b"))
    await settle()
    assert sorted(k for _, k, _, _ in kafka.sent) == [b"EURUSD", b"USDJPY"]


async def test_batches_are_bounded_by_count_and_bytes_and_keep_order() -> None:
    kafka = FakeKafka(auto_ack=True)
    writer = RawWriter(kafka.send, "raw", "rejects", max_records=500)
    for i in range(1201):  # put without yielding: the drain task starts after the loop
        writer.put(b"K", record(f"{i:04d}".encode()))
    await writer.flush()
    sizes = [len(b) for b in kafka.batches(b"K")]
    assert sizes == [500, 500, 201]
    assert [p for b in kafka.batches(b"K") for p in b] == [f"{i:04d}".encode() for i in range(1201)]

    big = FakeKafka(auto_ack=True)
    writer = RawWriter(big.send, "raw", "rejects", max_records=500, max_bytes=10_000)
    for _ in range(11):
        writer.put(b"K", record(b"x" * 2000))
    await writer.flush()
    assert all(len(v) <= 10_000 for _, _, v, _ in big.sent)
    assert sum(len(b) for b in big.batches(b"K")) == 11


async def test_failed_send_is_retried_until_confirmed_and_nothing_is_lost() -> None:
    kafka = FakeKafka()
    writer = RawWriter(kafka.send, "raw", "rejects", retry_initial_s=0.01, retry_max_s=0.02)
    writer.put(b"K", record(b"a"))
    await settle()
    kafka.sent[0][3].set_exception(ConnectionError("broker down"))
    while len(kafka.sent) < 2:
        await asyncio.sleep(0.005)
    assert kafka.sent[1][2] == kafka.sent[0][2], "the same message is sent again"
    kafka.ack(1)
    await writer.flush()
    assert writer.stats()["send_failures"] == 1 and writer.stats()["records_sent"] == 1


async def test_reader_waits_when_the_buffer_is_full() -> None:
    kafka = FakeKafka()
    writer = RawWriter(kafka.send, "raw", "rejects", max_buffered=5)
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
    writer = RawWriter(kafka.send, "raw", "rejects")
    for i in range(3):
        writer.reject(b"ic_markets", f"r{i}".encode())
    await writer.flush()
    assert [(t, k, v) for t, k, v, _ in kafka.sent] == [
        ("rejects", b"ic_markets", b"r0"),
        ("rejects", b"ic_markets", b"r1"),
        ("rejects", b"ic_markets", b"r2"),
    ]


@pytest.mark.parametrize("ack", [True, False])
async def test_close_flushes_or_reports_what_is_unconfirmed(ack: bool, caplog) -> None:
    kafka = FakeKafka(auto_ack=ack)
    writer = RawWriter(kafka.send, "raw", "rejects")
    writer.put(b"K", record(b"a"))
    await writer.close(timeout=0.1)
    assert writer.buffered == (0 if ack else 1)
    assert ("not confirmed" in caplog.text) is not ack
