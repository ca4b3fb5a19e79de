"""Source supervision: a source task that raises (or returns) inside its loop is shown on
/health, counted in /metrics, the service is `degraded`, and it runs again after its
backoff - for a bare coroutine and for the real OANDA client against the simulator.
And the assignment of sources to workers by partitions (without Kafka: the faust
signal is called as faust calls it)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from aiohttp.test_utils import TestServer
from faust.types import TP
from prometheus_client import REGISTRY, CollectorRegistry

from app.ops.health import HealthRegistry
from app.ops.metrics import LiveStateCollector
from app.sources.assignment import SourceAssignment, owned_sources
from app.sources.brokers.feeds import connections_problem
from app.sources.brokers.oanda import OandaPriceStream
from app.sources.contract import Backoff
from app.sources.supervisor import SourceSupervisor, Supervised, run_with_restarts
from devstack.simulator import Simulator
from tests.sources.test_oanda_client import CollectingSink, broker


def restarts(source: str, kind: str) -> float:
    value = REGISTRY.get_sample_value(
        "ingest_source_restarts_total", {"source": source, "kind": kind}
    )
    return value or 0.0


async def until(check: Callable[[], object], timeout: float = 10.0) -> float:
    """Seconds until `check()` is truthy (a deadline, not a timing assertion)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


class Flaky:
    """A polling loop that raises on its `crash_at`-th round, once."""

    def __init__(self, crash_at: int) -> None:
        self.rounds = 0
        self.runs = 0
        self.crash_at = crash_at

    async def run(self) -> None:
        self.runs += 1
        while True:
            self.rounds += 1
            if self.rounds == self.crash_at:
                raise RuntimeError("boom inside the loop")
            await asyncio.sleep(0.01)


def registry(supervisor: SourceSupervisor) -> HealthRegistry:
    health = HealthRegistry("test", "0")
    health.add_section("tasks", supervisor.report)
    health.add_check("tasks", supervisor.problem)
    return health


async def test_a_source_that_raises_is_reported_degraded_and_restarted() -> None:
    source = Flaky(crash_at=5)
    supervisor = SourceSupervisor()
    backoff = Backoff(0.3, 0.6, random.Random(1))
    supervised = supervisor.add(Supervised("flaky", "test", source.run, backoff))
    health = registry(supervisor)
    before = restarts("flaky", "test")
    supervised.start()
    try:
        await until(lambda: supervised.status == "crashed")
        crashed_at = time.monotonic()
        page = health.report()
        assert page["status"] == "degraded"
        assert "flaky: crashed (RuntimeError: boom inside the loop)" in page["problems"]["tasks"]
        assert page["tasks"]["flaky"]["status"] == "crashed"
        assert page["tasks"]["flaky"]["restarts"] == 1
        assert restarts("flaky", "test") == before + 1
        await until(lambda: source.runs == 2)
        # within its backoff: the first delay is drawn from [0.15, 0.3]
        assert time.monotonic() - crashed_at <= 0.3 + 0.2
        await until(lambda: source.rounds > 10)
        page = health.report()
        assert page["status"] == "healthy" and page["tasks"]["flaky"]["status"] == "running"
    finally:
        await supervisor.stop_all()
    assert supervised.status == "stopped" and not supervised.running


async def test_a_source_that_returns_is_restarted_and_stop_is_final() -> None:
    calls = 0

    async def returns_at_once() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)

    supervisor = SourceSupervisor()
    supervised = supervisor.add(
        Supervised("quiet", "test", returns_at_once, Backoff(0.01, 0.02, random.Random(2)))
    )
    supervised.start()
    await until(lambda: calls >= 3)
    assert supervised.last_error == "returned while it should be running"
    await supervised.stop()
    stopped_calls = calls
    await asyncio.sleep(0.1)
    assert calls == stopped_calls and supervised.status == "stopped"


async def test_restart_backoff_is_capped_and_never_overflows() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(3))
    for _ in range(10_000):  # far past 2**1024 (a float overflow without the cap)
        delay = backoff.next_delay()
    assert 15.0 <= delay <= 30.0


class CrashingSink(CollectingSink):
    """The writer raises once while the client is in its read loop (a bug, not a reject)."""

    def __init__(self, crash_after: int) -> None:
        super().__init__()
        self.crash_after = crash_after

    def put(self, key, record) -> None:  # type: ignore[no-untyped-def]
        if len(self.records) == self.crash_after:
            self.crash_after = -1
            raise ValueError("writer bug")
        super().put(key, record)


async def test_the_oanda_client_raising_in_its_read_loop_is_down_then_streams_again() -> None:
    sim = Simulator(seed=7, defaults={"rate": 50.0, "heartbeat_s": 0.2})
    server = TestServer(sim.app(), host="127.0.0.1")
    await server.start_server()
    sink = CrashingSink(crash_after=20)
    client = OandaPriceStream(
        "fxcm",
        broker(str(server.make_url("")).rstrip("/") + "/fxcm"),
        sink,
        environ={"TEST_TOKEN": "secret"},
    )

    def mark_down(error: str) -> None:
        client.state.set_error("crashed", error)

    supervisor = SourceSupervisor()
    supervised = supervisor.add(
        Supervised(
            "fxcm",
            "oanda_v20",
            client.run,
            Backoff(0.3, 0.6, random.Random(4)),
            close=client.close,
            mark_down=mark_down,
        )
    )
    health = registry(supervisor)
    health.add_check("broker_connections", lambda: connections_problem([client]))
    try:
        supervised.start()
        await until(lambda: supervised.status == "crashed")
        page = health.report()
        assert client.state.status == "crashed"
        assert page["status"] == "degraded"
        assert "fxcm: crashed" in page["problems"]["broker_connections"]
        assert "ValueError: writer bug" in page["problems"]["tasks"]
        restart_s = await until(lambda: client.state.status == "connected", timeout=5)
        assert restart_s <= 0.3 + 0.5  # the first restart delay is at most 0.3 s
        got = len(sink.records)
        await until(lambda: len(sink.records) > got + 20)
        assert health.report()["status"] == "healthy"
        assert sim.stats["fxcm"].connections == 2
    finally:
        await supervisor.stop_all()
        await server.close()
    assert client.state.status == "stopped"


async def test_an_import_step_is_rerun_after_a_crash_and_the_last_crash_is_raised() -> None:
    calls: list[int] = []

    async def step() -> str:
        calls.append(len(calls))
        if len(calls) < 3:
            raise OSError("disk hiccup")
        return "done"

    before = restarts("dukascopy:EURUSD", "dukascopy")
    backoff = Backoff(0.01, 0.02, random.Random(5))
    assert await run_with_restarts("dukascopy:EURUSD", "dukascopy", step, backoff, 3) == "done"
    assert len(calls) == 3
    assert restarts("dukascopy:EURUSD", "dukascopy") == before + 2
    calls.clear()
    with pytest.raises(OSError):
        await run_with_restarts("dukascopy:EURUSD", "dukascopy", step, backoff, 2)
    assert len(calls) == 2


class FakeApp:
    """What SourceAssignment needs of faust: a topic, an agent, the assignment signal."""

    def __init__(self, partitions: int) -> None:
        self.consumer = SimpleNamespace(topic_partitions=lambda _name: partitions)
        self.on_partitions_assigned = SimpleNamespace(connect=lambda fun: fun)

    def topic(self, *_: object, **__: object) -> object:
        return object()

    def agent(self, *_: object, **__: object) -> Callable[[object], object]:
        return lambda fun: fun


async def test_sources_follow_their_partitions_with_a_handover_delay() -> None:
    assert owned_sources(["c", "a", "b"], [0, 2], 3) == {"a", "c"}
    assert owned_sources(["a", "b", "c", "d"], [1], 2) == {"b", "d"}
    assignment = SourceAssignment("brokers", ["a", "b", "c"], FakeApp(3), handover_s=0.05)
    topic = assignment.topic_name
    log: list[str] = []

    async def stop(name: str) -> None:
        log.append(f"stop {name}")

    await assignment.bind(lambda name: log.append(f"start {name}"), stop)
    await assignment._on_assigned(None, {TP(topic, 0), TP(topic, 2), TP("other", 1)})
    assert log == []  # not before the handover delay
    await asyncio.sleep(0.1)
    assert sorted(log) == ["start a", "start c"]
    log.clear()
    # A rebalance that leaves c here and moves a away: a stops at once, c runs on.
    await assignment._on_assigned(None, {TP(topic, 2)})
    assert log == ["stop a"]
    # b assigned, then moved away again within its handover: it never starts.
    await assignment._on_assigned(None, {TP(topic, 1), TP(topic, 2)})
    await assignment._on_assigned(None, {TP(topic, 2)})
    await asyncio.sleep(0.1)
    assert log == ["stop a"]
    assert assignment.report()["running"] == ["c"]
    await assignment.unbind()
    assert log == ["stop a", "stop c"]


def test_a_broker_streamed_by_another_worker_is_no_series_here() -> None:
    health = HealthRegistry("test", "0")
    health.add_section(
        "broker_connections",
        lambda: {
            "fxcm": {"status": "elsewhere", "kind": "oanda_v20"},
            "ic_markets": {"status": "connected", "reconnects": 2},
        },
    )
    registry = CollectorRegistry()
    registry.register(LiveStateCollector(health))
    connected = registry.get_sample_value
    assert connected("ingest_source_connected", {"source": "ic_markets"}) == 1.0
    # No "disconnected" series (and no enabled one) where another worker streams it.
    assert connected("ingest_source_connected", {"source": "fxcm"}) is None
    assert connected("ingest_source_enabled", {"source": "fxcm"}) is None
