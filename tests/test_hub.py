"""Central Hub registration against a local fake hub."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from app.ops.hub import registration
from app.settings import DEFAULT_CONFIG, load_settings
from devstack.stack import StackConfig
from tests.support.worker import Worker, free_port


class FakeHub:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.fail = False
        app = web.Application()
        app.router.add_post("/services", self.register)
        app.router.add_delete("/services/{name}", self.deregister)
        self.runner = web.AppRunner(app)
        self.port = free_port()

    async def register(self, request: web.Request) -> web.Response:
        if self.fail:
            return web.Response(status=503, text="hub busy")
        self.calls.append(("POST", request.path, await request.json()))
        return web.json_response({"ok": True})

    async def deregister(self, request: web.Request) -> web.Response:
        self.calls.append(("DELETE", request.path, None))
        return web.Response(status=204)

    async def __aenter__(self) -> FakeHub:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def test_payload_is_the_design_documents() -> None:
    settings = load_settings(DEFAULT_CONFIG, environ={"INGEST__HUB__URL": "http://hub"})
    payload = registration(settings, "market")
    assert payload["name"] == "data-ingestion"
    assert payload["protocol"] == "nats+kafka"
    assert payload["health_endpoint"] == "/health"
    assert "market-data-stream" in payload["topics"]
    assert "market.*.ticks" in payload["subjects"]
    assert payload["port"] == 6066


async def _wait(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        await asyncio.sleep(0.2)
    assert predicate()


@pytest.mark.integration
async def test_worker_registers_retries_and_deregisters(
    stack: StackConfig, tmp_path: Path, app_id: str
) -> None:
    async with FakeHub() as hub:
        hub.fail = True  # the hub is not ready when the worker starts
        env = {
            "INGEST__HUB__URL": f"http://127.0.0.1:{hub.port}",
            "INGEST__HUB__REREGISTER_INTERVAL_S": "2",
        }
        worker = Worker(stack, tmp_path, app_id, env=env).start()
        try:
            await _wait(lambda: worker.health().get("central_hub", {}).get("last_error"))
            assert worker.health()["central_hub"]["registered"] is False
            hub.fail = False
            await _wait(lambda: any(c[0] == "POST" for c in hub.calls))
            posted = next(c[2] for c in hub.calls if c[0] == "POST")
            assert posted["name"] == "data-ingestion" and posted["subjects"][0] == "market.*.ticks"
            await _wait(lambda: worker.health()["central_hub"]["registered"] is True)
        finally:
            # stop from a thread: this loop must keep serving the hub while the worker leaves
            assert await asyncio.to_thread(worker.stop) == 0
        assert ("DELETE", "/services/data-ingestion", None) in hub.calls
