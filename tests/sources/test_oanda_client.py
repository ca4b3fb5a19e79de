"""The OANDA stream client against local aiohttp servers, writing into a collecting sink.

The servers are the price simulator (in this process) and a server replaying the
recorded-style fixture lines; no Kafka is involved (the sink is a list).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.sources.brokers.oanda import OandaPriceStream, OandaSettings
from app.wire import codec
from devstack.simulator import Simulator

FIXTURE = Path(__file__).parent.parent / "fixtures" / "oanda" / "stream.jsonl"


class CollectingSink:
    """A RecordSink that keeps everything in lists."""

    full = False

    def __init__(self) -> None:
        self.records: list[tuple[bytes, codec.RawRecord]] = []
        self.rejects: list[tuple[bytes, codec.Rejection]] = []

    def put(self, key: bytes, record: codec.RawRecord) -> None:
        self.records.append((key, record))

    def reject(self, key: bytes, rejection: bytes) -> None:
        self.rejects.append((key, codec.decode_rejection(rejection)))

    async def wait_for_room(self) -> None:
        return None


def broker(url: str, **overrides: object) -> OandaSettings:
    values: dict[str, object] = {
        "stream_url": url,
        "account": "101-004-0000001-001",
        "token_env": "TEST_TOKEN",
        "symbols": ["EURUSD", "USDJPY"],
        "priority": 1,
        "heartbeat_timeout_s": 2.0,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "auth_backoff_s": 0.6,
    }
    values.update(overrides)
    return OandaSettings.model_validate(values)


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[Simulator, str]]:
    sim = Simulator(seed=7, defaults={"rate": 50.0, "heartbeat_s": 0.2})
    server = TestServer(sim.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield sim, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


class Running:
    """A client running as a task for the duration of a `async with`."""

    def __init__(self, client: OandaPriceStream) -> None:
        self.client = client
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OandaPriceStream:
        self.task = asyncio.create_task(self.client.run())
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


def start(url: str, sink: CollectingSink, env: dict[str, str] | None = None, **cfg: object):
    environ = {"TEST_TOKEN": "secret"} if env is None else env
    return Running(OandaPriceStream("fxcm", broker(url, **cfg), sink, environ=environ))


async def test_fixture_lines_become_records_rejects_and_liveness() -> None:
    lines = FIXTURE.read_bytes().splitlines()

    async def stream(request: web.Request) -> web.StreamResponse:
        assert request.headers["Authorization"] == "Bearer secret"
        assert request.query["instruments"] == "EUR_USD,USD_JPY"
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        # split mid-line across chunks, as TCP may
        body = b"\n".join(lines) + b"\n"
        for i in range(0, len(body), 97):
            await resp.write(body[i : i + 97])
        await asyncio.sleep(10)
        return resp

    app = web.Application()
    app.router.add_get("/v3/accounts/{account}/pricing/stream", stream)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    sink = CollectingSink()
    try:
        async with start(str(server.make_url("")), sink) as client:
            await eventually(lambda: len(sink.records) + len(sink.rejects) == 4)
            await eventually(lambda: client.state.heartbeats_total == 1)
            assert client.state.status == "connected"
    finally:
        await server.close()
    assert [(k, r.payload) for k, r in sink.records] == [
        (b"EURUSD", lines[0]),
        (b"USDJPY", lines[2]),
    ]
    eurusd = sink.records[0][1]
    assert (eurusd.source, eurusd.format) == ("fxcm", "oanda_v20")
    assert eurusd.tick.bid_e9 == 1_191_970_000 and eurusd.tick.ask_e9 == 1_192_160_000
    assert eurusd.tick.event_time_ns == 1_506_291_639_888_097_022
    assert eurusd.receive_time_ns > eurusd.tick.event_time_ns
    assert [(k, r.reasons[0], r.stage, r.record.payload) for k, r in sink.rejects] == [
        (b"GBPUSD", "empty_book", "source", lines[3]),
        (b"EURUSD", "not_tradeable", "source", lines[4]),
    ]


async def test_reconnects_after_drops_and_loses_no_line(simulator) -> None:
    sim, url = simulator
    sim.profile("fxcm", drop_after=12)
    sink = CollectingSink()
    async with start(f"{url}/fxcm", sink) as client:
        await eventually(lambda: sim.stats["fxcm"].drops >= 3)
        sim.profile("fxcm", paused=True)
        await asyncio.sleep(0.1)
        await eventually(lambda: len(sink.records) == sim.stats["fxcm"].price_lines)
        assert client.state.reconnects >= 3
        assert client.state.connect_attempts == sim.stats["fxcm"].connections
        assert "closed by the server" in (client.state.last_error or "")
    assert sink.rejects == []
    assert {k for k, _ in sink.records} == {b"EURUSD", b"USDJPY"}


async def test_heartbeat_timeout_reconnects(simulator) -> None:
    sim, url = simulator
    sink = CollectingSink()
    async with start(f"{url}/fxcm", sink, heartbeat_timeout_s=0.5) as client:
        await eventually(lambda: len(sink.records) > 5)
        sim.profile("fxcm", stall=True)
        await eventually(lambda: client.state.status != "connected", timeout=3)
        assert "heartbeat timeout" in (client.state.last_error or "")
        sim.profile("fxcm", stall=False)
        await eventually(
            lambda: client.state.status == "connected" and client.state.reconnects >= 1
        )
        before = len(sink.records)
        await eventually(lambda: len(sink.records) > before)
    assert sim.stats["fxcm"].connections >= 2


async def test_bad_token_is_reported_and_retried_slowly(simulator) -> None:
    sim, url = simulator
    sim.profile("fxcm", token="the-right-one")
    sink = CollectingSink()
    async with start(f"{url}/fxcm", sink, auth_backoff_s=0.6) as client:
        await eventually(lambda: client.state.status == "auth_failed")
        assert "Insufficient authorization to perform request." in client.state.last_error
        assert "401" in client.state.last_error
        await asyncio.sleep(1.5)
        # 2.1 s at one attempt per 0.6 s: at most 4 attempts, never a tight loop
        assert 2 <= sim.stats["fxcm"].requests <= 4
        assert client.state.status == "auth_failed"
    assert sink.records == []


async def test_missing_token_variable_is_reported_without_connecting(simulator) -> None:
    sim, url = simulator
    sink = CollectingSink()
    async with start(f"{url}/fxcm", sink, env={}) as client:
        await eventually(lambda: client.state.status == "no_token")
        assert "TEST_TOKEN" in client.state.last_error
        await asyncio.sleep(0.3)
    assert sim.stats["fxcm"].requests == 0


async def test_malformed_lines_are_rejected_and_the_stream_goes_on(simulator) -> None:
    sim, url = simulator
    sim.profile("fxcm", malformed_every=4)
    sink = CollectingSink()
    async with start(f"{url}/fxcm", sink):
        await eventually(lambda: len(sink.rejects) >= 4 and len(sink.records) >= 12)
        sim.profile("fxcm", paused=True)
        await asyncio.sleep(0.1)
        stats = sim.stats["fxcm"]
        await eventually(
            lambda: (
                (len(sink.records), len(sink.rejects)) == (stats.price_lines, stats.malformed_lines)
            )
        )
    reasons = {r.reasons[0] for _, r in sink.rejects}
    assert reasons == {"malformed_json", "bad_price"}
    for key, rejection in sink.rejects:
        assert rejection.stage == "source" and rejection.record.payload
        assert rejection.record.source == "fxcm" and rejection.detail
        if rejection.reasons[0] == "malformed_json":
            assert key == b"fxcm", "an unreadable line is keyed by the broker name"
        else:
            assert key in (b"EURUSD", b"USDJPY"), "a readable instrument keys the reject"


async def test_server_errors_are_retried_with_backoff() -> None:
    calls = 0

    async def flaky(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response({"errorMessage": "Service unavailable"}, status=503)

    app = web.Application()
    app.router.add_get("/v3/accounts/{account}/pricing/stream", flaky)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    sink = CollectingSink()
    try:
        async with start(str(server.make_url("")), sink, backoff_max_s=0.2) as client:
            await eventually(lambda: calls >= 4)
            assert client.state.status == "disconnected"
            assert "Service unavailable (HTTP 503)" in client.state.last_error
    finally:
        await server.close()
