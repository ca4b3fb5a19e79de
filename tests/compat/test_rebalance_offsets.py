"""faust's offset bookkeeping around rebalances (issue #17), on faust's real Consumer.

The consumer thread is replaced by an in-memory partition log on aiokafka's real
subscription state (positions, seeks), so faust's own `getmany`, `_drain_messages`,
`perform_seek`, `_add_gap` and `_new_offset` run as in a worker, in milliseconds. Each
scenario runs once as faust ships (it shows the fault, so a faust release that fixes it
is noticed) and once with the adaptation (the fault is gone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import faust
import pytest
from aiokafka.consumer import subscription_state
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.tables.recovery import Recovery
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.utils.queues import FlowControlQueue

from app.compat import faust_kafka

TOPIC = "raw.broker.ticks"
TP0 = TP(TOPIC, 0)
CHANGELOG = TP("app-table-changelog", 0)
ADAPTED = [
    (faust_consumer.Consumer, "_add_gap"),
    (faust_consumer.Consumer, "_new_offset"),
    (subscription_state.TopicPartitionState, "seek"),
    (subscription_state.TopicPartitionState, "reset_to"),
    (faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records"),
    (faust_consumer.Consumer, "_reset_state"),
    (Recovery, "on_recovery_completed"),
    (Recovery, "_resume_streams"),
]


@pytest.fixture(params=["faust", "adapted"])
def variant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """faust as installed, then with the adaptations (restored after the test either way)."""
    for cls, name in ADAPTED:
        monkeypatch.setattr(cls, name, faust_kafka._original(cls, name))
    if request.param == "adapted":
        faust_kafka.drop_stale_fetches()
        faust_kafka.exact_offset_gaps()
    return request.param


class MemoryLog:
    """One partition of `size` records behind aiokafka's real subscription state.

    `fetched_records` returns up to `batch` records from the partition's position and
    moves it on, as aiokafka's Fetcher does; `seek_to_committed` seeks to `committed`.
    """

    def __init__(self, size: int, committed: int, batch: int = 20) -> None:
        self.size, self.committed, self.batch = size, committed, batch
        self.subscription = SubscriptionState()
        self.subscription.assign_from_user({TopicPartition(TOPIC, 0)})
        self.subscription.seek(TopicPartition(TOPIC, 0), committed)
        # the parts of AIOKafkaConsumer that faust's consumer thread touches
        self._subscription = self.subscription
        self._fetcher = self
        self._subscriptions = self.subscription
        self._closed = False
        self._max_poll_records = None

    def state(self) -> Any:
        return self.subscription.subscription.assignment.state_value(TopicPartition(TOPIC, 0))

    async def fetched_records(self, partitions: Any, timeout: float = 0, **_: Any) -> Any:
        await asyncio.sleep(0)
        state = self.state()
        start = state.position
        if TP0 not in partitions or start >= self.size:
            await asyncio.sleep(0.01)
            return {}
        return self.take(state)

    def take(self, state: Any) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Up to `batch` records from the position, moving it past them (as aiokafka does)."""
        start = state.position
        end = min(start + self.batch, self.size)
        state.consumed_to(end)
        return {TopicPartition(TOPIC, 0): [self.record(o) for o in range(start, end)]}

    async def seek_to_committed(self) -> dict[TopicPartition, int]:
        await asyncio.sleep(0)
        self.subscription.seek(TopicPartition(TOPIC, 0), self.committed)
        return {TopicPartition(TOPIC, 0): self.committed}

    def highwater(self, tp: Any) -> int:
        return self.size

    @staticmethod
    def record(offset: int) -> ConsumerRecord:
        return ConsumerRecord(TOPIC, 0, offset, 0, 0, b"k", b"v", None, 1, 1, ())


def faust_consumer_on(log: MemoryLog, monkeypatch: pytest.MonkeyPatch) -> Any:
    """faust's real aiokafka Consumer whose thread calls run inline on `log`."""
    app = faust.App("compat-rebalance", broker="kafka://127.0.0.1:1", store="memory://")
    consumer = app.consumer
    thread = consumer._thread
    thread._consumer = log

    async def call_thread(fun: Any, *args: Any, **kwargs: Any) -> Any:
        return await fun(*args, **kwargs)

    monkeypatch.setattr(thread, "call_thread", call_thread)
    monkeypatch.setattr(app.topics, "acks_enabled_for", lambda topic: topic == TOPIC)
    consumer._set_active_tps({TP0})
    consumer.resume_flow()
    return consumer


async def drain(consumer: Any, on_message: Any, until: int, timeout: float = 10.0) -> None:
    """Run faust's `_drain_messages` until offset `until` was delivered."""
    stopped = asyncio.Event()
    fetcher = type("Fetcher", (), {"_stopped": stopped})()
    delivered: list[int] = []

    async def callback(message: Any) -> None:
        delivered.append(message.offset)
        await on_message(message)
        if message.offset >= until:
            stopped.set()

    consumer.callback = callback
    await asyncio.wait_for(consumer._drain_messages(fetcher), timeout)


async def test_records_fetched_before_the_seek_after_a_rebalance_are_not_delivered_after_it(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seek to the committed offset lands while faust delivers a batch fetched before it.

    As in `Recovery.on_recovery_completed`: the stream partition is resumed and the seek
    is awaited in the consumer thread while the drain loop holds a batch that starts past
    the committed offset 8 (aiokafka had returned 8..19 while faust had the partition
    paused). faust stamps the read offset of the message in flight (20) over the seek's,
    delivers the rest of the stale batch after the seek, and drops the re-fetched offsets
    8..19 as already read: never processed, and the commit is stuck at 8 (with the read
    offset the seek set, the jump to the stale batch is a gap instead, and the gap commits
    9..19 unprocessed).
    """
    log = MemoryLog(size=60, committed=20)  # the stale position: 20
    consumer = faust_consumer_on(log, monkeypatch)
    log.committed = 8
    after_seek: list[int] = []
    seek: asyncio.Task[None] | None = None

    async def on_message(message: Any) -> None:
        nonlocal seek
        if seek is None:  # the seek comes in while the batch 20..39 is being delivered
            seek = asyncio.ensure_future(consumer.perform_seek())
        elif seek.done():
            after_seek.append(message.offset)
        consumer.ack(message)

    await drain(consumer, on_message, until=59)
    first = after_seek[0]
    if variant == "faust":
        assert first == 21 and not set(range(8, 20)) & set(after_seek)  # 21..39 stale
        assert consumer._new_offset(TP0) is None  # 20..59 done, the commit stuck at 8
    else:
        assert after_seek == list(range(8, 60))  # from the seek target, in order, once
        assert consumer._new_offset(TP0) == 60


def ack_offsets(consumer: Any, offsets: Iterator[int]) -> None:
    for offset in offsets:
        message = MemoryLog.record(offset)
        consumer.ack(consumer._to_message(TP0, message))


def commits_until(consumer: Any, end: int) -> list[int]:
    """The offsets successive commits move to (one `_new_offset` per commit interval)."""
    moves: list[int] = []
    while (offset := consumer._new_offset(TP0)) is not None and len(moves) < 500:
        consumer._committed_offset[TP0] = offset
        moves.append(offset)
        if offset >= end:
            break
    return moves


async def test_gap_offsets_acked_for_real_too_commit_in_one_step(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit crawl: a spurious gap 9..44 (read offset 8, then offset 44 read) whose
    offsets are then delivered and acked for real as well, as seen after a rebalance
    (market-data-stream/2, 8 committed). faust has each of them twice in its acked list
    and moves the commit about one offset per commit interval."""
    consumer = faust_consumer_on(MemoryLog(size=0, committed=8), monkeypatch)
    consumer._committed_offset[TP0] = 8
    await consumer._add_gap(TP0, 9, 44)  # what _drain_messages does (consumer.py 1215)
    ack_offsets(consumer, iter(range(8, 130)))
    moves = commits_until(consumer, 130)
    assert moves[-1] == 130
    if variant == "faust":
        assert len(moves) > 30  # 1 offset per commit through the doubled entries
    else:
        assert moves == [130]


async def test_the_message_after_a_gap_is_not_committed_before_it_is_acked(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read offset 9, then offset 20 read (a real gap 10..19): faust puts 20 in the gap
    too, so acking 21 commits 20 before 20 is processed."""
    consumer = faust_consumer_on(MemoryLog(size=0, committed=8), monkeypatch)
    consumer._committed_offset[TP0] = 8
    ack_offsets(consumer, iter([8, 9]))
    await consumer._add_gap(TP0, 10, 20)  # as _drain_messages calls it for offset 20
    ack_offsets(consumer, iter([21]))
    committed = consumer._new_offset(TP0)
    if variant == "faust":
        assert committed == 22  # 20 counted as done
    else:
        assert committed == 20  # 8, 9 done, 10..19 do not exist, 20 not done yet
        consumer._committed_offset[TP0] = committed
        ack_offsets(consumer, iter([20]))
        assert consumer._new_offset(TP0) == 22


def test_check_names_a_changed_gap_call(monkeypatch: pytest.MonkeyPatch) -> None:
    async def drain_messages(self: Any, fetcher: Any) -> None:
        return None

    monkeypatch.setattr(faust_consumer.Consumer, "_drain_messages", drain_messages)
    with pytest.raises(faust_kafka.CompatError, match="adds gaps"):
        faust_kafka.check_installed()


def test_check_names_a_gone_partition_state_seek(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subscription_state.TopicPartitionState, "reset_to", None)
    monkeypatch.delattr(subscription_state.TopicPartitionState, "_faustreset_to", raising=False)
    with pytest.raises(faust_kafka.CompatError, match="reset_to is gone"):
        faust_kafka.check_installed()


async def test_a_batch_from_before_a_reassignment_is_not_delivered_after_it(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebalance gives the partition back to the same worker (eager: every partition is
    revoked and assigned again) while faust still iterates a batch of the old assignment:
    aiokafka starts the new assignment at the committed offset, faust keeps delivering the
    old batch."""
    log = MemoryLog(size=60, committed=20)
    consumer = faust_consumer_on(log, monkeypatch)
    delivered: list[int] = []
    async for _tp, message in consumer.getmany(timeout=1.0):
        delivered.append(message.offset)
        if message.offset == 20:
            log.subscription.assign_from_user({TopicPartition(TOPIC, 0)})  # new assignment
            log.subscription.seek(TopicPartition(TOPIC, 0), 8)  # its position: committed
    if variant == "faust":
        assert delivered == list(range(20, 40))
    else:
        assert delivered == [20]


@pytest.fixture(params=["faust", "adapted"])
def resume_variant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Adaptations 7 and 8 on; adaptation 10 (stream partitions resumed after the seek and
    the queue clear) off as faust ships, then on."""
    for cls, name in ADAPTED:
        monkeypatch.setattr(cls, name, faust_kafka._original(cls, name))
    faust_kafka.drop_stale_fetches()
    faust_kafka.exact_offset_gaps()
    if request.param == "adapted":
        faust_kafka.resume_streams_after_seek()
    return request.param


async def test_records_fetched_while_the_rebalance_seek_is_awaited_reach_the_agent(
    resume_variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust's real `Recovery.on_recovery_completed` at the end of a rebalance, with the
    drain loop running and an agent queue that flow control clears on resume (as every
    agent's is). The stream partition is paused, flow control already resumed (for the
    changelog reading), 10 committed. faust resumes the partition and awaits the seek;
    the seek lands in the consumer thread, and while its result travels back, records
    10..39 are fetched into the agent queue; then the read offset is set back to 10 and
    resuming flow control clears the queue. The agent never gets 10..39, and the next
    record (40, once it is written) opens a gap over them that the commit counts as done."""
    log = MemoryLog(size=40, committed=10)
    consumer = faust_consumer_on(log, monkeypatch)
    app = consumer.app
    seek_to_committed = log.seek_to_committed

    async def seek_then_return() -> dict[TopicPartition, int]:
        offsets = await seek_to_committed()
        await asyncio.sleep(0.05)  # the way back from the consumer thread
        return offsets

    log.seek_to_committed = seek_then_return  # type: ignore[method-assign]
    log.assignment = lambda: {TopicPartition(TOPIC, 0)}  # type: ignore[attr-defined]

    async def no_fetcher() -> None:
        return None

    monkeypatch.setattr(app._fetcher, "maybe_start", no_fetcher)
    consumer._set_active_tps({TP0, CHANGELOG})  # a standby's changelog keeps the loop fetching
    consumer.pause_partitions({TP0})
    app.flow_control.resume()  # as recovery does before reading the changelogs
    queue: FlowControlQueue[int] = FlowControlQueue(
        flow_control=app.flow_control, clear_on_resume=True
    )
    stopped = asyncio.Event()
    fetcher = type("Fetcher", (), {"_stopped": stopped})()

    async def conductor(message: Any) -> None:  # faust's conductor: into the agent queue
        queue.put_nowait(message.offset)
        if message.offset >= 59:
            stopped.set()

    consumer.callback = conductor
    draining = asyncio.ensure_future(consumer._drain_messages(fetcher))
    await app.tables.recovery.on_recovery_completed(app.consumer_generation_id)
    log.size = 60  # 40..59 written after the rebalance
    await asyncio.wait_for(draining, 10)
    received = [queue.get_nowait() for _ in range(queue.qsize())]
    ack_offsets(consumer, iter(received))
    if resume_variant == "faust":
        assert received == list(range(40, 60))  # 10..39 never reach the agent
        assert consumer._new_offset(TP0) == 60  # and are committed as a gap
    else:
        assert received == list(range(10, 60))  # from the committed offset, in order, once
        assert consumer._new_offset(TP0) == 60


def test_check_names_a_changed_resume_order(monkeypatch: pytest.MonkeyPatch) -> None:
    async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        await self.app.consumer.perform_seek()
        self.app.flow_control.resume()
        self.app.consumer.resume_partitions(set())

    monkeypatch.setattr(Recovery, "on_recovery_completed", on_recovery_completed)
    monkeypatch.delattr(Recovery, "_fauston_recovery_completed", raising=False)
    with pytest.raises(faust_kafka.CompatError, match="on_recovery_completed no longer resumes"):
        faust_kafka.check_installed()


class WaitingLog(MemoryLog):
    """A MemoryLog whose fetch waits for data as aiokafka's does, and then applies the
    partition filter as aiokafka's `Fetcher.fetched_records` does (fetcher.py 1221):
    an empty filter drains every partition."""

    async def fetched_records(self, partitions: Any, timeout: float = 0, **_: Any) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            state = self.state()
            if state.position < self.size and not (partitions and TP0 not in partitions):
                return self.take(state)
            if asyncio.get_running_loop().time() >= deadline:
                return {}
            await asyncio.sleep(0.01)


async def test_a_fetch_waiting_while_every_partition_is_paused_takes_no_records(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in recovery: the stream partition is paused (until the rebalance's seek), the
    only active partition is a changelog, and a fetch waits for data. Recovery pauses the
    changelog it has read: faust's live set of active partitions, the fetch's filter, is
    now empty, which aiokafka reads as every partition. Records 10..29 arrive and the
    waiting fetch takes them; faust drops them as not active, and aiokafka's position is
    past them: resumed later, the partition continues at 30."""
    log = WaitingLog(size=10, committed=10)
    consumer = faust_consumer_on(log, monkeypatch)
    consumer._set_active_tps({TP0, CHANGELOG})
    consumer.pause_partitions({TP0})
    delivered: list[int] = []
    stopped = asyncio.Event()
    fetcher = type("Fetcher", (), {"_stopped": stopped})()

    async def on_message(message: Any) -> None:
        delivered.append(message.offset)
        if message.offset >= 39:
            stopped.set()

    consumer.callback = on_message
    draining = asyncio.ensure_future(consumer._drain_messages(fetcher))
    await asyncio.sleep(0.05)  # the fetch is waiting, filtered to the changelog
    consumer.pause_partitions({CHANGELOG})  # recovery is done with it: the set is empty
    log.size = 30  # 10..29 arrive
    await asyncio.sleep(0.1)
    consumer.resume_partitions({TP0})  # after the seek
    log.size = 40
    await asyncio.wait_for(draining, 10)
    if variant == "faust":
        assert delivered[0] == 30  # 10..29 taken by the empty filter and dropped
    else:
        assert delivered == list(range(10, 40))
