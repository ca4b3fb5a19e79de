"""Which worker of the group runs which source: Kafka's group membership decides.

Each kind of source (brokers, collectors) has a small internal topic with one partition
per enabled source; nothing is ever written to it. Every worker subscribes to it (an
idle agent), so the group's partition assignor spreads its partitions over the workers
like any other topic, and a worker runs exactly the sources whose partitions it was
assigned. A rebalance (a worker joins, leaves or dies: after the session timeout) moves
the partitions, and with them the sources.

A source keeps running through a rebalance that leaves it where it is (faust's assignor
is sticky: the survivors of a dead worker keep their partitions), so a rebalance does not
interrupt the sources it does not move. A source that moves is stopped by its old owner
as soon as that worker gets its new assignment, and started by its new owner
`HANDOVER_S` after the new owner got its own (both come from the same SyncGroup round),
so that the two streams do not overlap. (Stopping everything on revocation, Kafka's
eager protocol, would restart every source of the group on every rebalance and lose
the lines in flight on each closed stream.) When the owner dies, its sources start in
another worker after the session timeout plus `HANDOVER_S`. A worker cut off from Kafka
but still alive (a zombie) keeps streaming until it notices; group membership without
fencing cannot exclude that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust
from faust.types import TP

from app.pipeline.faust_app import app, settings

log = logging.getLogger(__name__)

StartFn = Callable[[str], None]
# A moved source starts this long after its new owner got the assignment: the old owner
# stops it as soon as it gets its own assignment of the same rebalance.
HANDOVER_S = 1.0
StopFn = Callable[[str], Awaitable[None]]


def owned_sources(names: list[str], partitions: Iterable[int], count: int) -> set[str]:
    """The sources mapped to `partitions`: the i-th of the sorted names is on i % count."""
    mine = set(partitions)
    return {name for i, name in enumerate(sorted(names)) if i % max(count, 1) in mine}


class SourceAssignment:
    """The sources of one kind this worker owns, kept in step with the group assignment.

    The service that runs the sources `bind`s its start/stop functions once it is ready;
    an assignment that arrives earlier is applied at that moment.
    """

    def __init__(
        self,
        kind: str,
        names: Iterable[str],
        faust_app: faust.App = app,
        handover_s: float = HANDOVER_S,
    ) -> None:
        self.kind = kind
        self.names = sorted(names)
        self.app = faust_app
        self.handover_s = handover_s
        self.topic_name = f"{settings.service.app_id}-source-assignments-{kind}"
        self.topic = faust_app.topic(
            self.topic_name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=max(1, len(self.names)),
            replicas=settings.kafka.replication_factor,
            internal=True,  # declared before the consumer subscribes
        )
        self.owned: set[str] = set()
        self.generation = 0
        self._start: StartFn | None = None
        self._stop: StopFn | None = None
        self._running: set[str] = set()
        self._pending: dict[str, asyncio.TimerHandle] = {}
        faust_app.agent(self.topic, name=f"source-assignments-{kind}")(_hold)
        faust_app.on_partitions_assigned.connect(self._on_assigned)

    def report(self) -> dict[str, Any]:
        return {
            "topic": self.topic_name,
            "owned": sorted(self.owned),
            "running": sorted(self._running),
            "starting": sorted(self._pending),
            "not_here": sorted(set(self.names) - self.owned),
            "rebalances": self.generation,
        }

    async def bind(self, start: StartFn, stop: StopFn) -> None:
        self._start, self._stop = start, stop
        await self._apply()

    async def unbind(self) -> None:
        """The service stops: stop what runs here and forget the callbacks."""
        self.owned = set()
        await self._apply()
        self._start = self._stop = None

    def _partition_count(self) -> int:
        try:
            found = self.app.consumer.topic_partitions(self.topic_name)
        except Exception:  # no consumer yet: the declared count
            found = None
        return found or max(1, len(self.names))

    def _mine(self, tps: Iterable[TP]) -> set[str]:
        partitions = [tp.partition for tp in tps if tp.topic == self.topic_name]
        return owned_sources(self.names, partitions, self._partition_count())

    async def _on_assigned(self, _app: Any, assigned: set[TP], **_: Any) -> None:
        self.generation += 1
        self.owned = self._mine(assigned)
        log.info(
            "%s sources assigned to this worker: %s",
            self.kind,
            ", ".join(sorted(self.owned)) or "none",
        )
        await self._apply()

    async def _apply(self) -> None:
        if self._start is None or self._stop is None:
            return
        for name in sorted(set(self._pending) - self.owned):
            self._pending.pop(name).cancel()
        for name in sorted(self._running - self.owned):
            log.info("%s source %s: stopping (assigned elsewhere)", self.kind, name)
            self._running.discard(name)
            await self._stop(name)
        loop = asyncio.get_running_loop()
        for name in sorted(self.owned - self._running - set(self._pending)):
            log.info(
                "%s source %s: starting in %.1fs (assigned here)", self.kind, name, self.handover_s
            )
            self._pending[name] = loop.call_later(self.handover_s, self._start_now, name)

    def _start_now(self, name: str) -> None:
        self._pending.pop(name, None)
        if name not in self.owned or name in self._running or self._start is None:
            return
        log.info("%s source %s: starting", self.kind, name)
        self._running.add(name)
        self._start(name)


async def _hold(stream: faust.StreamT) -> None:
    """Subscribes the worker to an assignment topic; no message is ever written to it."""
    async for _ in stream:
        pass
