"""Runs the enabled collectors inside the worker and shows their state on /health.

A faust service: started with the app (after the producer is up). Each enabled collector
is polled by one worker of the group (app/sources/assignment.py), as a supervised task
(app/sources/supervisor.py): a crash is logged, counted and restarted; a worker stop
cancels the polls and closes the HTTP session.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp
from mode import Service

from app.ops.runtime import health
from app.pipeline.faust_app import app, settings
from app.pipeline.topics import market_data_rejects, raw_external_data
from app.sources.assignment import SourceAssignment
from app.sources.collectors.base import Collector
from app.sources.collectors.registry import COLLECTOR_CLASSES, provider_of
from app.sources.contract import Backoff
from app.sources.supervisor import SourceSupervisor, Supervised
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


def _enabled_collectors() -> list[str]:
    return sorted(name for name, cfg in settings.collectors.items() if cfg.enabled)


# One partition per enabled collector: each provider is polled by one worker of the group.
collector_assignment = (
    SourceAssignment("collectors", _enabled_collectors()) if _enabled_collectors() else None
)

# After a crash the polling loop restarts on this backoff (failed polls have their own).
RESTART_BACKOFF = (1.0, 60.0)


@app.service
class CollectorService(Service):
    """Owns the HTTP session and the supervised polling loops of the assigned collectors."""

    session: aiohttp.ClientSession | None = None
    collectors: dict[str, Collector] = {}  # noqa: RUF012 - replaced per instance at start

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supervisor = SourceSupervisor()

    async def on_start(self) -> None:
        self.session = aiohttp.ClientSession()
        self.collectors = build_collectors(self.session)
        health.add_section("collectors", self._section)
        health.add_section("collector_tasks", self.supervisor.report)
        health.add_check("collector_tasks", self.supervisor.problem)
        for name, collector in self.collectors.items():
            if collector.cfg.enabled:
                health.add_check(f"collector:{name}", self._problem_here(name))
            else:
                collector.health.status = "disabled"
        if collector_assignment is None:
            return
        health.add_section("collector_assignment", collector_assignment.report)
        await raw_external_data.maybe_declare()
        await market_data_rejects.maybe_declare()
        for name, collector in self.collectors.items():
            if collector.cfg.enabled:
                self.supervisor.add(
                    Supervised(
                        name,
                        collector.provider,
                        collector.run,
                        Backoff(*RESTART_BACKOFF),
                        mark_down=self._mark_down(collector),
                    )
                )
                collector.health.status = "elsewhere"
        await collector_assignment.bind(self._start_collector, self.supervisor.stop)

    def _problem_here(self, name: str) -> Callable[[], str | None]:
        """A collector's problem counts only while it runs in this worker."""

        def problem() -> str | None:
            if name not in self.supervisor.running():
                return None
            return self.collectors[name].health.problem()

        return problem

    @staticmethod
    def _mark_down(collector: Collector) -> Callable[[str], None]:
        def mark_down(error: str) -> None:
            collector.health.status = "crashed"
            collector.health.last_error = error
            collector.health.last_error_reason = "crashed"
            collector.health.last_error_at = time.time()

        return mark_down

    def _start_collector(self, name: str) -> None:
        self.collectors[name].health.status = "starting"
        self.supervisor.start(name)

    async def on_stop(self) -> None:
        if collector_assignment is not None:
            await collector_assignment.unbind()
        await self.supervisor.stop_all()
        if self.session is not None:
            await self.session.close()

    def _section(self) -> dict[str, dict]:
        return {name: c.health.as_json() for name, c in self.collectors.items()}
