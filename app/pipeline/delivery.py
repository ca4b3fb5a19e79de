"""The delivery engine: input events -> outputs acknowledged -> state written -> offsets acked.

This is what makes the pipeline at-least-once without loss, whatever the processing is:

1. events that accumulated while the previous group was busy form a group (one message
   when input is rare, hundreds under load; no timer, so a lone message waits for
   nothing); `process` turns it into outputs and state writes, in memory, with no await;
2. the outputs are handed to the producer, and the next group is processed while Kafka
   confirms them;
3. once every output of a group is acknowledged, its state writes join those of the other
   groups acknowledged within `write_interval_s`; each key is then written once (its
   newest value) and only after that are the groups' events acked, so faust commits their
   offsets. A write of a partition revoked meanwhile is skipped and its events stay
   unacked: the new owner re-reads them.

A crash therefore either re-processes an event whose state is not written (its outputs are
produced again: identical bytes, a duplicate downstream de-duplication absorbs) or finds its
state written, which happened only after its outputs were acknowledged. The engine knows
nothing of ticks or of faust beyond the event's `message.tp` and `ack()`; the agent gives it
`process` and `write`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

GROUP_MAX = 500  # events per group; `add` waits while this many are pending
PUBLISH_RETRY_MAX_S = 5.0


class Event(Protocol):
    """What the engine needs of a faust event."""

    message: Any  # .tp: the input partition

    def ack(self) -> bool: ...


class Sendable(Protocol):
    """A faust topic: `send` hands a message to the producer and returns its future."""

    async def send(
        self, *, key: bytes, value: bytes, partition: int | None = None
    ) -> Awaitable[Any]: ...


@dataclass(slots=True)
class StateWrite:
    """One table key's new value, written in the partition of `event`.

    Writes of `rank` 1 are made after those of rank 0 of the same interval (a summary such as
    partition clocks must never be ahead of the state it summarises).
    """

    table: Any
    key: bytes
    value: Any
    event: Any
    rank: int = 0


class Group(Protocol):
    """A processed group: what to send, what to write after, and how to let go of it."""

    outputs: Sequence[tuple[Sendable, bytes, bytes, int | None]]  # partition None: by key
    writes: Sequence[StateWrite]

    def released(self) -> None:
        """Called once its writes are made (or abandoned with a revoked partition)."""


@dataclass(slots=True)
class Sent:
    """A group whose outputs are with the producer."""

    group: Group
    events: list[Event]
    started: float
    pending: list[Awaitable[Any]]


async def send_outputs(group: Group) -> list[Awaitable[Any]]:
    """Hand every output to the producer; the acknowledgements come later."""
    return [
        await topic.send(key=key, value=value, partition=partition)
        for topic, key, value, partition in group.outputs
    ]


async def acknowledged(sent: Sent) -> None:
    """Wait until every output of `sent` is acknowledged.

    A failed send (Kafka unreachable past the producer's own retries) sends the whole group
    again after a pause rather than dropping anything: copies are identical bytes.
    """
    delay = 0.1
    while True:
        try:
            if sent.pending:
                await asyncio.gather(*sent.pending)
            return
        except KafkaError as exc:
            log.warning("outputs not acknowledged (%r); sending again in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, PUBLISH_RETRY_MAX_S)
            try:
                sent.pending = await send_outputs(sent.group)
            except KafkaError as again:
                log.warning("sending again failed: %r", again)


class AcknowledgedGroups:
    """Groups whose outputs are acknowledged and whose state is not written yet."""

    def __init__(
        self, write: Callable[[StateWrite], None], owned: Callable[[], set[Hashable]]
    ) -> None:
        self._write = write
        self._owned = owned
        self.groups: list[tuple[Group, list[Event]]] = []

    def add(self, group: Group, events: list[Event]) -> None:
        self.groups.append((group, events))

    def write(self) -> None:
        """Each key once (its newest value: values are whole snapshots), then the acks."""
        groups, self.groups = self.groups, []
        if not groups:
            return
        owned = self._owned()
        newest: dict[tuple[int, int, bytes], StateWrite] = {}
        for group, _events in groups:
            for w in group.writes:
                newest[(w.rank, id(w.table), w.key)] = w
        for _key, w in sorted(newest.items(), key=lambda item: item[0][0]):
            if w.event.message.tp in owned:
                self._write(w)
        for group, events in groups:
            group.released()
            for event in events:
                if event.message.tp in owned:
                    event.ack()


class DeliveryEngine:
    """Feeds an agent's events to `process` in groups and finishes the groups in order."""

    def __init__(
        self,
        process: Callable[[list[Event]], Group],
        write: Callable[[StateWrite], None],
        owned: Callable[[], set[Hashable]],
        write_interval_s: float,
        on_acknowledged: Callable[[Group, list[Event], float], None] | None = None,
        group_max: int = GROUP_MAX,
    ) -> None:
        self.process = process
        self.write_interval_s = write_interval_s
        self.on_acknowledged = on_acknowledged
        self.group_max = group_max
        self.pending: list[Event] = []
        self.acknowledged = AcknowledgedGroups(write, owned)
        self.write_timer: asyncio.TimerHandle | None = None
        self.failed: Exception | None = None
        self.running: asyncio.Task[None] | None = None
        self.room = asyncio.Event()
        self.room.set()

    async def add(self, event: Event) -> None:
        """Queue an event; raises what made an earlier group fail (faust restarts the agent)."""
        if self.failed is not None:
            raise self.failed
        if self.running is not None and self.running.done():
            self.running.result()
        self.pending.append(event)
        if self.running is None or self.running.done():
            self.running = asyncio.ensure_future(self._drain())
        if len(self.pending) >= self.group_max:
            self.room.clear()
            await self.room.wait()

    def stop(self) -> None:
        """With the agent: groups not written yet are abandoned unacked (re-read later)."""
        if self.running is not None and not self.running.done():
            self.running.cancel()
        if self.write_timer is not None:
            self.write_timer.cancel()

    async def _drain(self) -> None:
        previous: Sent | None = None
        try:
            while self.pending or previous is not None:
                current = None
                if self.pending:
                    events, self.pending = self.pending, []
                    self.room.set()
                    started = time.perf_counter()
                    group = self.process(events)
                    current = Sent(group, events, started, await send_outputs(group))
                if previous is not None:
                    await self._finish(previous)
                previous = current
        except Exception:
            log.exception("event group failed; not acked, re-read after a restart")
            self.room.set()
            raise

    async def _finish(self, sent: Sent) -> None:
        await acknowledged(sent)
        if self.on_acknowledged is not None:
            self.on_acknowledged(sent.group, sent.events, sent.started)
        self.acknowledged.add(sent.group, sent.events)
        if self.write_timer is None:
            self.write_timer = asyncio.get_running_loop().call_later(
                self.write_interval_s, self._write
            )

    def _write(self) -> None:
        self.write_timer = None
        try:
            self.acknowledged.write()
        except Exception as exc:
            # Its events stay unacked (re-read after a restart); the agent's next event
            # raises this, so faust sees the agent fail instead of it silently stalling.
            log.exception("table write failed")
            self.failed = exc
