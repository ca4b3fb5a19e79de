"""Broker price feeds inside the worker: one client per enabled broker in `settings.brokers`.

The client class is chosen by the broker's `kind` (app.sources.brokers.registry), so a
new kind of feed is one module plus one registry entry; the pipeline only sees RawBatch messages in
`raw.broker.ticks`. All clients share one batching RawWriter on faust's producer
(acks from all in-sync replicas, as configured on the app).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mode import Service

from app.ops.runtime import health
from app.pipeline.faust_app import app, settings
from app.pipeline.topics import (
    MARKET_DATA_REJECTS,
    RAW_BROKER_TICKS,
    market_data_rejects,
    raw_broker_ticks,
)
from app.sources.brokers.registry import BrokerClient, build_clients
from app.sources.raw_writer import RawWriter

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


@app.service
class BrokerFeeds(Service):
    """Starts the broker clients with the worker and stops them (then flushes) on shutdown."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clients: list[BrokerClient] = []
        self.writer: RawWriter | None = None
        self._runs: list[asyncio.Task[None]] = []
        disabled = sorted(n for n, b in settings.brokers.items() if not b.enabled)
        self._disabled = disabled
        health.add_section("broker_connections", self.report)
        health.add_check("broker_connections", lambda: connections_problem(self.clients))

    def report(self) -> dict[str, Any]:
        body: dict[str, Any] = {c.state.broker: c.state.snapshot() for c in self.clients}
        for name in self._disabled:
            body[name] = {"status": "disabled"}
        return body

    async def on_start(self) -> None:
        if not any(b.enabled for b in settings.brokers.values()):
            log.info("broker feeds: no enabled brokers")
            return
        producer = await app.maybe_start_producer()
        # The topics must exist before the first send (faust's own declare task may race).
        await raw_broker_ticks.maybe_declare()
        await market_data_rejects.maybe_declare()

        async def send(topic: str, key: bytes, value: bytes) -> Any:
            return await producer.send(
                topic, key, value, partition=None, timestamp=None, headers=None
            )

        self.writer = RawWriter(send, RAW_BROKER_TICKS, MARKET_DATA_REJECTS)
        health.add_section("broker_writer", self.writer.stats)
        self.clients = build_clients(settings.brokers, self.writer)
        for client in self.clients:
            log.info("broker feeds: starting %s (%s)", client.state.broker, client.state.kind)
            self._runs.append(asyncio.create_task(client.run()))

    async def on_stop(self) -> None:
        for client in self.clients:
            await client.close()
        for task in self._runs:
            task.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)
        if self.writer is not None:
            await self.writer.close()
            log.info("broker feeds: stopped; writer %s", self.writer.stats())
