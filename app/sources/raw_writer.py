"""Adaptive batching writer of raw records to Kafka, for every source.

Records are batched per PARTITION of the raw topic, not per symbol: a live feed of many
symbols at moderate rates would otherwise send one tick per Kafka message, and faust's
per-message cost would decide everything. Each record is filed under its symbol (its
Kafka key, copied into `RawRecord.symbol`) and goes to the partition the default
partitioner gives that key (murmur2, as every Kafka client and faust's tables assume),
so a symbol's records stay in one partition, in order, co-partitioned with its tables.

Per partition at most one Kafka message is in flight. A record arriving at an idle
partition is sent after `linger_s` (0: at once, the lowest latency); records arriving
while a send is in flight accumulate, and when it is confirmed they go out as ONE
RawBatch message (bounded by `max_records` / `max_bytes`) holding every symbol of that
partition. A message of one symbol is keyed by it, as before; a message of several is
keyed "SYM1,SYM2,..." (first appearance order) and sent to their partition explicitly.

One message in flight per partition also keeps each symbol's records in order across
retries. `put` never awaits; the reader awaits `wait_for_room()` only when the buffer is
over its bound (back-pressure instead of dropping). A failed send is logged and retried
with backoff until it is confirmed: nothing is dropped silently. Rejections go one per
message, keyed and partitioned by their symbol, in order per symbol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.partitioner import murmur2

from app.sources.contract import Backoff
from app.wire import codec

log = logging.getLogger(__name__)

# Enqueue one message (topic, key, value, partition; None = by key); returns the future
# of its delivery (Kafka ack).
SendFn = Callable[[str, bytes, bytes, int | None], Awaitable[Awaitable[Any]]]


def key_partition(key: bytes, partitions: int) -> int:
    """The partition of `key` by Kafka's default partitioner (aiokafka's and Java's)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class _Lane:
    """The queue of one raw partition, or of one rejection key: one message in flight."""

    topic: str
    partition: int | None  # None: a rejection lane, partitioned by its key
    items: deque[tuple[bytes, bytes]] = field(default_factory=deque)  # (key, value)
    busy: bool = False


class RawWriter:
    """Batches raw records per partition into RawBatch messages; rejections one by one."""

    def __init__(
        self,
        send: SendFn,
        raw_topic: str,
        rejects_topic: str,
        partitions: int,
        max_records: int = 500,
        max_bytes: int = 512 * 1024,
        max_buffered: int = 100_000,
        linger_s: float = 0.0,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        if partitions < 1:
            raise ValueError(f"raw topic {raw_topic} needs at least one partition")
        self._send = send
        self.raw_topic = raw_topic
        self.rejects_topic = rejects_topic
        self.partitions = partitions
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_buffered = max_buffered
        self.linger_s = linger_s
        self._retry = (retry_initial_s, retry_max_s)
        self._partition_of: dict[bytes, int] = {}
        self._lanes: dict[tuple[str, int | bytes], _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.buffered = 0
        self.messages_sent = 0
        self.records_sent = 0
        self.rejects_sent = 0
        self.send_failures = 0
        self.largest_batch = 0
        self.multi_symbol_messages = 0
        self.round_trip_s = 0.0  # summed send -> Kafka ack of the raw messages

    def put(self, key: bytes, record: codec.RawRecord) -> None:
        """Queue a raw record of symbol `key` for `raw_topic`, batched with its partition's."""
        partition = self._partition_of.get(key)
        if partition is None:
            partition = self._partition_of[key] = key_partition(key, self.partitions)
        record.symbol = key.decode("utf-8", "replace")
        lane = self._lane(self.raw_topic, partition, partition)
        self._enqueue(lane, key, record.SerializeToString())

    def reject(self, key: bytes, rejection: bytes) -> None:
        """Queue an encoded Rejection for `rejects_topic` (one per message, as consumers expect)."""
        self._enqueue(self._lane(self.rejects_topic, key, None), key, rejection)

    @property
    def full(self) -> bool:
        return self.buffered >= self.max_buffered

    async def wait_for_room(self) -> None:
        while self.buffered >= self.max_buffered:
            self._room.clear()
            await self._room.wait()

    async def flush(self) -> None:
        """Wait until everything queued so far is confirmed by Kafka."""
        while self.buffered:
            self._idle.clear()
            await self._idle.wait()

    async def close(self, timeout: float = 10.0) -> None:
        """Flush for up to `timeout` s, then stop; records never confirmed are logged."""
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            log.error("raw writer: %d records not confirmed by Kafka at shutdown", self.buffered)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stats(self) -> dict[str, int]:
        return {
            "buffered": self.buffered,
            "messages_sent": self.messages_sent,
            "records_sent": self.records_sent,
            "rejects_sent": self.rejects_sent,
            "send_failures": self.send_failures,
            "largest_batch": self.largest_batch,
            "multi_symbol_messages": self.multi_symbol_messages,
            "mean_round_trip_us": round(
                1e6 * self.round_trip_s / max(1, self.messages_sent - self.rejects_sent)
            ),
        }

    def _lane(self, topic: str, lane_id: int | bytes, partition: int | None) -> _Lane:
        lane = self._lanes.get((topic, lane_id))
        if lane is None:
            lane = self._lanes[(topic, lane_id)] = _Lane(topic, partition)
        return lane

    def _enqueue(self, lane: _Lane, key: bytes, value: bytes) -> None:
        lane.items.append((key, value))
        self.buffered += 1
        if not lane.busy:
            lane.busy = True
            task = asyncio.get_running_loop().create_task(self._drain(lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self, lane: _Lane) -> tuple[bytes, bytes, int]:
        """The next message of a lane: (key, value, records) - one rejection, or as many
        records as the bounds allow."""
        items = lane.items
        if lane.partition is None:
            key, value = items.popleft()
            return key, value, 1
        key, value = items.popleft()
        keys = [key]
        taken = [value]
        size = len(value) + 4  # + tag and length prefix
        while items and len(taken) < self.max_records and size + len(items[0][1]) <= self.max_bytes:
            key, value = items.popleft()
            size += len(value) + 4
            taken.append(value)
            if key not in keys:
                keys.append(key)
        if len(keys) > 1:
            self.multi_symbol_messages += 1
        return (
            codec.KEY_SEPARATOR.join(keys),
            codec.encode_raw_batch_from_encoded(taken),
            len(taken),
        )

    async def _drain(self, lane: _Lane) -> None:
        try:
            if self.linger_s and lane.partition is not None:
                await asyncio.sleep(self.linger_s)
            while lane.items:
                key, value, count = self._take(lane)
                started = time.perf_counter()
                await self._deliver(lane, key, value, count)
                if lane.partition is not None:
                    self.round_trip_s += time.perf_counter() - started
                self.buffered -= count
                self.messages_sent += 1
                if lane.partition is None:
                    self.rejects_sent += 1
                else:
                    self.records_sent += count
                    self.largest_batch = max(self.largest_batch, count)
                if self.buffered < self.max_buffered:
                    self._room.set()
                if not self.buffered:
                    self._idle.set()
        finally:
            lane.busy = False

    async def _deliver(self, lane: _Lane, key: bytes, value: bytes, count: int) -> None:
        """Send until Kafka confirms; at-least-once (a retry after a lost ack may duplicate)."""
        backoff = Backoff(*self._retry)
        while True:
            try:
                delivery = await self._send(lane.topic, key, value, lane.partition)
                await delivery
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.send_failures += 1
                delay = backoff.next_delay()
                log.warning(
                    "raw writer: send of %d record(s) to %s key %r failed (%r); retry in %.1fs",
                    count,
                    lane.topic,
                    key,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
