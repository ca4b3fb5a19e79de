"""Which worker of the group runs which source: Kafka's group membership decides.

Each kind of source (brokers, collectors) has a small internal topic with one partition
per enabled source; nothing is ever written to it. Every worker subscribes to it (an
idle agent), so the group's partition assignor spreads its partitions over the workers
like any other topic, and a worker runs exactly the sources whose partitions it was
assigned. A rebalance (a worker joins, leaves or dies: after the session timeout) moves
the partitions, and with them the sources.

Kafka's eager rebalance protocol revokes every partition from every member before any
member gets its new assignment, and the sources are stopped on revocation: so two
workers never stream the same source at once (OANDA limits streams per account), at
the cost of a short pause of every source of the group during a rebalance. A worker
that is cut off from Kafka but still alive (a zombie) keeps its sources until it learns
of the rebalance; that is the limit of group membership without fencing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust
from faust.types import TP

from app.pipeline.faust_app import app, settings

log = logging.getLogger(__name__)

StartFn = Callable[[str], None]
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

    def __init__(self, kind: str, names: Iterable[str], faust_app: faust.App = app) -> None:
        self.kind = kind
        self.names = sorted(names)
        self.app = faust_app
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
        faust_app.agent(self.topic, name=f"source-assignments-{kind}")(_hold)
        faust_app.on_partitions_revoked.connect(self._on_revoked)
        faust_app.on_partitions_assigned.connect(self._on_assigned)

    def report(self) -> dict[str, Any]:
        return {
            "topic": self.topic_name,
            "owned": sorted(self.owned),
            "running": sorted(self._running),
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

    async def _on_revoked(self, _app: Any, revoked: set[TP], **_: Any) -> None:
        lost = self._mine(revoked)
        if lost & self.owned:
            log.info("%s sources revoked: %s", self.kind, ", ".join(sorted(lost)))
        self.owned -= lost
        await self._apply()

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
        for name in sorted(self._running - self.owned):
            log.info("%s source %s: stopping (not assigned here)", self.kind, name)
            await self._stop(name)
            self._running.discard(name)
        for name in sorted(self.owned - self._running):
            log.info("%s source %s: starting (assigned here)", self.kind, name)
            self._start(name)
            self._running.add(name)


async def _hold(stream: faust.StreamT) -> None:
    """Subscribes the worker to an assignment topic; no message is ever written to it."""
    async for _ in stream:
        pass
