"""Runs the enabled collectors inside the worker and shows their state on /health.

A faust service: started with the app (after the producer is up), each collector is a
future of the service, so a worker stop cancels the polls and closes the HTTP session.
"""

from __future__ import annotations

import aiohttp
from mode import Service

from app.ops.runtime import health
from app.pipeline.faust_app import app, settings
from app.pipeline.topics import market_data_rejects, raw_external_data
from app.sources.collectors.base import Collector
from app.sources.collectors.registry import COLLECTOR_CLASSES, provider_of
from app.wire import codec


class KafkaSink:
    """Raw bodies to `raw.external.data`, refusals to `market-data-rejects`.

    Each write returns once Kafka acknowledged it (or raises): `send` only queues, the
    awaited future is the delivery, as in the broker writer and the context agent.
    """

    async def raw(self, key: str, record: codec.RawRecord) -> None:
        value = codec.encode_raw_batch([record])
        delivered = await raw_external_data.send(key=key.encode(), value=value)
        await delivered

    async def reject(self, key: str, rejection: bytes) -> None:
        delivered = await market_data_rejects.send(key=key.encode(), value=rejection)
        await delivered


def build_collectors(session: aiohttp.ClientSession) -> dict[str, Collector]:
    """One collector per enabled config entry; an unknown provider stops the worker."""
    sink = KafkaSink()
    out: dict[str, Collector] = {}
    for name, cfg in settings.collectors.items():
        provider = provider_of(name, cfg.params)
        cls = COLLECTOR_CLASSES.get(provider)
        if cls is None:
            known = ", ".join(sorted(COLLECTOR_CLASSES))
            raise SystemExit(f"collectors.{name}: unknown provider {provider!r} (known: {known})")
        out[name] = cls(name, cfg, sink, session)
    return out


@app.service
class CollectorService(Service):
    """Owns the HTTP session and one polling future per enabled collector."""

    session: aiohttp.ClientSession | None = None
    collectors: dict[str, Collector] = {}  # noqa: RUF012 - replaced per instance at start

    async def on_start(self) -> None:
        self.session = aiohttp.ClientSession()
        self.collectors = build_collectors(self.session)
        health.add_section("collectors", self._section)
        for name, collector in self.collectors.items():
            if collector.cfg.enabled:
                health.add_check(f"collector:{name}", collector.health.problem)
        if any(c.cfg.enabled for c in self.collectors.values()):
            await raw_external_data.maybe_declare()
            await market_data_rejects.maybe_declare()
        for collector in self.collectors.values():
            if collector.cfg.enabled:
                self.add_future(collector.run())
            else:
                collector.health.status = "disabled"

    async def on_stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    def _section(self) -> dict[str, dict]:
        return {name: c.health.as_json() for name, c in self.collectors.items()}
