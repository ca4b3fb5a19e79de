"""Broker price feeds inside the worker: one client per enabled broker in `settings.brokers`.

The client class is chosen by the broker's `kind` (app.sources.brokers.registry), so a
new kind of feed is one module plus one registry entry; the pipeline only sees RawBatch messages in
`raw.broker.ticks`. All clients share one batching RawWriter on faust's producer
(acks from all in-sync replicas, as configured on the app).
"""

from __future__ import annotations

import logging
from typing import Any

from mode import Service

from app.ops.runtime import health
from app.pipeline.faust_app import app, settings
from app.pipeline.kafka_clients import topic_partitions
from app.pipeline.topics import (
    MARKET_DATA_REJECTS,
    RAW_BROKER_TICKS,
    market_data_rejects,
    raw_broker_ticks,
)
from app.sources.assignment import SourceAssignment
from app.sources.brokers.registry import BrokerClient, build_clients
from app.sources.contract import Backoff, ConnectionState
from app.sources.raw_writer import RawWriter
from app.sources.supervisor import SourceSupervisor, Supervised

log = logging.getLogger(__name__)


def connections_problem(clients: list[BrokerClient]) -> str | None:
    """A /health problem naming every broker that is not streaming, with its last error."""
    down = []
    for client in clients:
        state = client.state
        if state.status != "connected":
            error = f" ({state.last_error})" if state.last_error else ""
            down.append(f"{state.broker}: {state.status}{error}")
    return "; ".join(down) or None


def _enabled_brokers() -> list[str]:
    return sorted(name for name, cfg in settings.brokers.items() if cfg.enabled)


async def raw_partition_count() -> int:
    """Partitions of the raw topic as Kafka has it (the writer partitions by this count;
    a topic created earlier with another count than `kafka.partitions` keeps its own)."""
    found = await topic_partitions(settings.kafka.bootstrap_servers, RAW_BROKER_TICKS)
    if not found:
        raise RuntimeError(f"topic {RAW_BROKER_TICKS} has no partitions after its declaration")
    if len(found) != settings.kafka.partitions:
        log.warning(
            "%s has %d partitions, kafka.partitions says %d: partitioning by the topic's",
            RAW_BROKER_TICKS,
            len(found),
            settings.kafka.partitions,
        )
    return len(found)


# One partition per enabled broker: the group decides which worker streams which broker.
broker_assignment = SourceAssignment("brokers", _enabled_brokers()) if _enabled_brokers() else None

# After a crash the client restarts on this backoff (its own reconnects have their own).
RESTART_BACKOFF = (1.0, 30.0)


@app.service
class BrokerFeeds(Service):
    """Runs, supervised, the broker clients assigned to this worker; flushes on shutdown."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clients: list[BrokerClient] = []
        self.writer: RawWriter | None = None
        self.supervisor = SourceSupervisor()
        disabled = sorted(n for n, b in settings.brokers.items() if not b.enabled)
        self._disabled = disabled
        health.add_section("broker_connections", self.report)
        health.add_check("broker_connections", lambda: connections_problem(self._here()))
        health.add_section("broker_tasks", self.supervisor.report)
        health.add_check("broker_tasks", self.supervisor.problem)
        if broker_assignment is not None:
            health.add_section("broker_assignment", broker_assignment.report)

    def _here(self) -> list[BrokerClient]:
        """The clients this worker runs now (the others stream in other workers)."""
        running = self.supervisor.running()
        return [c for c in self.clients if c.state.broker in running]

    def report(self) -> dict[str, Any]:
        running = self.supervisor.running()
        body: dict[str, Any] = {}
        for client in self.clients:
            name = client.state.broker
            if name in running:
                body[name] = client.state.snapshot()
            else:
                body[name] = {"status": "elsewhere", "kind": client.state.kind}
        for name in self._disabled:
            body[name] = {"status": "disabled"}
        return body

    async def on_start(self) -> None:
        if broker_assignment is None:
            log.info("broker feeds: no enabled brokers")
            return
        producer = await app.maybe_start_producer()
        # The topics must exist before the first send (faust's own declare task may race).
        await raw_broker_ticks.maybe_declare()
        await market_data_rejects.maybe_declare()

        partitions = await raw_partition_count()

        async def send(topic: str, key: bytes, value: bytes, partition: int | None) -> Any:
            return await producer.send(
                topic, key, value, partition=partition, timestamp=None, headers=None
            )

        cfg = settings.raw_writer
        self.writer = RawWriter(
            send,
            RAW_BROKER_TICKS,
            MARKET_DATA_REJECTS,
            partitions,
            max_records=cfg.max_records,
            max_bytes=cfg.max_bytes,
            max_buffered=cfg.max_buffered,
            linger_s=cfg.linger_ms / 1000,
        )
        health.add_section("broker_writer", self.writer.stats)
        self.clients = build_clients(settings.brokers, self.writer)
        for client in self.clients:
            state = client.state

            def mark_down(error: str, state: ConnectionState = state) -> None:
                state.set_error("crashed", error)

            self.supervisor.add(
                Supervised(
                    state.broker,
                    state.kind,
                    client.run,
                    Backoff(*RESTART_BACKOFF),
                    close=client.close,
                    mark_down=mark_down,
                )
            )
        await broker_assignment.bind(self._start_client, self._stop_client)

    def _start_client(self, name: str) -> None:
        client = next(c for c in self.clients if c.state.broker == name)
        log.info("broker feeds: starting %s (%s)", name, client.state.kind)
        client.state.set_status("starting")
        self.supervisor.start(name)

    async def _stop_client(self, name: str) -> None:
        log.info("broker feeds: stopping %s", name)
        await self.supervisor.stop(name)

    async def on_stop(self) -> None:
        if broker_assignment is not None:
            await broker_assignment.unbind()
        await self.supervisor.stop_all()
        if self.writer is not None:
            await self.writer.close()
            log.info("broker feeds: stopped; writer %s", self.writer.stats())
