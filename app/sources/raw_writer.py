"""Adaptive batching writer of raw records to Kafka, for every source.

Per key (symbol) at most one Kafka message is in flight. A record whose key has nothing
in flight is sent at once (one tick per message at low rates: lowest latency); while a
send is in flight, records of that key accumulate, and when the send is confirmed they
go out as ONE RawBatch message (bounded by `max_records` / `max_bytes`). Under load the
batches grow by themselves, so faust's per-message cost is paid per batch, not per tick.

One message in flight per key also keeps each key's records in order across retries.
`put` never awaits; the reader awaits `wait_for_room()` only when the buffer is over its
bound (back-pressure instead of dropping). A failed send is logged and retried with
backoff until it is confirmed: nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app.sources.contract import Backoff
from app.wire import codec

log = logging.getLogger(__name__)

# Enqueue one message; returns the future of its delivery (Kafka ack).
SendFn = Callable[[str, bytes, bytes], Awaitable[Awaitable[Any]]]


@dataclass
class _Lane:
    """The queue of one (topic, key): at most one message of it is in flight."""

    topic: str
    key: bytes
    batched: bool
    items: deque[bytes] = field(default_factory=deque)
    busy: bool = False


class RawWriter:
    """Batches raw records per key into RawBatch messages; sends rejections one by one."""

    def __init__(
        self,
        send: SendFn,
        raw_topic: str,
        rejects_topic: str,
        max_records: int = 500,
        max_bytes: int = 512 * 1024,
        max_buffered: int = 100_000,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self._send = send
        self.raw_topic = raw_topic
        self.rejects_topic = rejects_topic
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_buffered = max_buffered
        self._retry = (retry_initial_s, retry_max_s)
        self._lanes: dict[tuple[str, bytes], _Lane] = {}
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

    def put(self, key: bytes, record: codec.RawRecord) -> None:
        """Queue a raw record for `raw_topic`; batched with others of the same key."""
        self._enqueue(self.raw_topic, key, record.SerializeToString(), batched=True)

    def reject(self, key: bytes, rejection: bytes) -> None:
        """Queue an encoded Rejection for `rejects_topic` (one per message, as consumers expect)."""
        self._enqueue(self.rejects_topic, key, rejection, batched=False)

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
        }

    def _enqueue(self, topic: str, key: bytes, value: bytes, batched: bool) -> None:
        lane = self._lanes.get((topic, key))
        if lane is None:
            lane = self._lanes[(topic, key)] = _Lane(topic, key, batched)
        lane.items.append(value)
        self.buffered += 1
        if not lane.busy:
            lane.busy = True
            task = asyncio.get_running_loop().create_task(self._drain(lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self, lane: _Lane) -> tuple[bytes, int]:
        """The next message of a lane: one rejection, or as many records as the bounds allow."""
        items = lane.items
        if not lane.batched:
            return items.popleft(), 1
        taken = [items.popleft()]
        size = len(taken[0]) + 4  # + tag and length prefix
        while items and len(taken) < self.max_records and size + len(items[0]) <= self.max_bytes:
            record = items.popleft()
            size += len(record) + 4  # + tag and length prefix
            taken.append(record)
        return codec.encode_raw_batch_from_encoded(taken), len(taken)

    async def _drain(self, lane: _Lane) -> None:
        try:
            while lane.items:
                value, count = self._take(lane)
                await self._deliver(lane, value, count)
                self.buffered -= count
                self.messages_sent += 1
                if lane.batched:
                    self.records_sent += count
                    self.largest_batch = max(self.largest_batch, count)
                else:
                    self.rejects_sent += 1
                if self.buffered < self.max_buffered:
                    self._room.set()
                if not self.buffered:
                    self._idle.set()
        finally:
            lane.busy = False

    async def _deliver(self, lane: _Lane, value: bytes, count: int) -> None:
        """Send until Kafka confirms; at-least-once (a retry after a lost ack may duplicate)."""
        backoff = Backoff(*self._retry)
        while True:
            try:
                delivery = await self._send(lane.topic, lane.key, value)
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
                    lane.key,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
