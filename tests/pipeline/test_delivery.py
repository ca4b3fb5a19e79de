"""The delivery engine's order with fakes: outputs acknowledged -> state written -> events acked.

Every step is recorded in one journal, so a change of order (state written before the
outputs are acknowledged, an event acked before its state is written or its outputs are
acknowledged) fails these tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from app.pipeline.delivery import DeliveryEngine, StateWrite

WRITE_INTERVAL_S = 0.01


@dataclass
class Journal:
    entries: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, kind: str, what: Any) -> None:
        self.entries.append((kind, what))

    def index(self, kind: str, what: Any) -> int:
        return self.entries.index((kind, what))

    def of(self, kind: str) -> list[Any]:
        return [what for k, what in self.entries if k == kind]


class FakeTopic:
    """Sends return futures the test resolves (or fails) when it chooses."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.futures: dict[bytes, asyncio.Future[None]] = {}
        self.sends = 0

    async def send(
        self, *, key: bytes, value: bytes, partition: int | None = None
    ) -> asyncio.Future[None]:
        self.sends += 1
        self.journal.add("send", value)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(
            lambda f: f.cancelled() or f.exception() or self.journal.add("acked", value)
        )
        self.futures[value] = fut
        return fut

    def ack(self, value: bytes) -> None:
        self.futures[value].set_result(None)


@dataclass(frozen=True)
class Message:
    tp: tuple[str, int]
    offset: int


class FakeEvent:
    def __init__(self, journal: Journal, partition: int, offset: int) -> None:
        self.journal = journal
        self.message = Message(("raw", partition), offset)

    def ack(self) -> bool:
        self.journal.add("event-acked", self.message.offset)
        return True


class FakeGroup:
    """One output and one state write per event: key = partition, value = offset."""

    def __init__(self, journal: Journal, topic: FakeTopic, events: list[FakeEvent]) -> None:
        self.journal = journal
        self.outputs = [(topic, b"k", b"out-%d" % e.message.offset, None) for e in events]
        self.writes = [
            StateWrite("table", b"p%d" % e.message.tp[1], e.message.offset, e) for e in events
        ]
        self.writes += [StateWrite("clocks", b"c", e.message.offset, e, rank=1) for e in events]

    def released(self) -> None:
        self.journal.add("released", [w.value for w in self.writes if w.rank == 0])


def make_engine(
    journal: Journal,
    topic: FakeTopic,
    owned: set[Any] | None = None,
    interval_s: float = WRITE_INTERVAL_S,
) -> tuple[DeliveryEngine, dict[tuple[str, bytes], Any]]:
    table: dict[tuple[str, bytes], Any] = {}
    owned_tps = owned if owned is not None else {("raw", 0), ("raw", 1)}

    def write(w: StateWrite) -> None:
        table[(w.table, w.key)] = w.value
        journal.add("write", (w.table, w.key, w.value))

    def process(events: list[Any]) -> FakeGroup:
        journal.add("processed", [e.message.offset for e in events])
        return FakeGroup(journal, topic, events)

    engine = DeliveryEngine(process, write, lambda: owned_tps, interval_s)  # type: ignore[arg-type]
    return engine, table


async def settle(seconds: float = WRITE_INTERVAL_S * 5) -> None:
    await asyncio.sleep(seconds)


async def test_nothing_is_written_or_acked_until_every_output_is_acknowledged() -> None:
    journal = Journal()
    topic = FakeTopic(journal)
    engine, table = make_engine(journal, topic)
    await engine.add(FakeEvent(journal, 0, 10))
    await engine.add(FakeEvent(journal, 1, 11))
    await settle()
    assert journal.of("send")  # handed to the producer
    assert table == {} and journal.of("event-acked") == []  # ...and nothing else yet
    for value in list(topic.futures):
        topic.ack(value)
    await settle()
    assert table[("table", b"p0")] == 10 and table[("table", b"p1")] == 11
    for offset, value in ((10, b"out-10"), (11, b"out-11")):
        assert journal.index("acked", value) < journal.index("write", ("table", b"p0", 10))
        assert journal.index("write", ("clocks", b"c", 11)) < journal.index("event-acked", offset)
    engine.stop()


async def test_groups_acknowledged_within_an_interval_write_each_key_once() -> None:
    journal = Journal()
    topic = FakeTopic(journal)
    engine, table = make_engine(journal, topic, interval_s=0.3)
    await engine.add(FakeEvent(journal, 0, 1))
    await settle()
    await engine.add(FakeEvent(journal, 0, 2))  # arrives while group 1 waits for its ack
    await settle()
    assert journal.of("processed") == [[1]]
    topic.ack(b"out-1")
    await settle()
    assert journal.of("processed") == [[1], [2]]
    assert table == {} and journal.of("event-acked") == []  # group 2 not acknowledged yet
    topic.ack(b"out-2")
    await settle(0.5)
    assert journal.of("event-acked") == [1, 2]
    # merged: partition 0's key written once, with the newest value; symbols before clocks
    assert journal.of("write") == [("table", b"p0", 2), ("clocks", b"c", 2)]
    assert journal.of("released") == [[1], [2]]
    engine.stop()


async def test_a_failed_send_is_sent_again_and_acked_only_after_the_copy() -> None:
    journal = Journal()
    topic = FakeTopic(journal)
    engine, table = make_engine(journal, topic)
    await engine.add(FakeEvent(journal, 0, 5))
    await settle()
    topic.futures[b"out-5"].set_exception(KafkaConnectionError("broker gone"))
    await settle(0.3)  # the engine pauses 0.1 s before sending again
    assert table == {} and journal.of("event-acked") == []
    assert topic.sends == 2  # the whole group handed over again
    topic.ack(b"out-5")
    await settle()
    assert journal.of("event-acked") == [5]
    assert journal.index("acked", b"out-5") < journal.index("event-acked", 5)
    engine.stop()


async def test_a_revoked_partition_is_neither_written_nor_acked() -> None:
    journal = Journal()
    topic = FakeTopic(journal)
    owned = {("raw", 0), ("raw", 1)}
    engine, table = make_engine(journal, topic, owned)
    await engine.add(FakeEvent(journal, 0, 1))
    await engine.add(FakeEvent(journal, 1, 2))
    await settle()
    owned.discard(("raw", 1))  # rebalance while the outputs wait
    for value in list(topic.futures):
        topic.ack(value)
    await settle()
    assert ("table", b"p1") not in table and table[("table", b"p0")] == 1
    assert journal.of("event-acked") == [1]
    engine.stop()


async def test_a_failed_write_stops_the_agent_with_its_events_unacked() -> None:
    journal = Journal()
    topic = FakeTopic(journal)

    def write(_w: StateWrite) -> None:
        raise OSError("disk full")

    engine = DeliveryEngine(
        lambda events: FakeGroup(journal, topic, events),  # type: ignore[arg-type, return-value]
        write,
        lambda: {("raw", 0)},
        WRITE_INTERVAL_S,
    )
    await engine.add(FakeEvent(journal, 0, 1))
    await settle()
    topic.ack(b"out-1")
    await settle()
    assert journal.of("event-acked") == []
    with pytest.raises(OSError, match="disk full"):
        await engine.add(FakeEvent(journal, 0, 2))
    engine.stop()
