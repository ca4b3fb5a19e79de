"""A local stand-in for the providers: aiohttp serving recorded-style payloads by path.

Each route answers a queue of (status, body, headers); the last answer repeats, so a
test scripts "first a 429, then the data" and every later poll sees the data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def fixture(provider: str, name: str) -> bytes:
    return (FIXTURES / provider / name).read_bytes()


@dataclass
class Answer:
    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class ProviderServer:
    """Routes by path; `requests` records (path, query) of every request served."""

    routes: dict[str, list[Answer]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def serve(self, path: str, *answers: Answer) -> None:
        self.routes[path] = list(answers)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query)))
        queue = self.routes.get(request.path)
        if not queue:
            return web.Response(status=404, text=f"no route {request.path}")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return web.Response(
            status=answer.status,
            body=answer.body,
            headers=answer.headers,
            content_type=answer.content_type,
        )

    def hits(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)


async def start_provider_server() -> AsyncIterator[ProviderServer]:
    """Serve on 127.0.0.1, port chosen by the OS; yields the server, cleans up after."""
    server = ProviderServer()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()
