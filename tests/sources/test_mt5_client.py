"""The MT5 client against simulated terminals over the real RPyC classic bridge protocol.

Each terminal (devstack.mt5_terminal) is an rpyc ThreadedServer in this process on a free
port, usually on a manual clock so that the terminal's own tick record is fixed while the
client catches up; the client writes into a list sink (no Kafka).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime

import pytest

from app.sources.brokers.mt5 import Mt5BrokerSettings, Mt5Client
from app.wire import codec
from devstack.mt5_terminal import Terminal

PASSWORD_ENV = "MT5_TEST_PASSWORD"
PASSWORD = "s3cret-pw"
LOGIN = 51000001
SERVER = "ICMarketsSC-Demo"


class ManualClock:
    """True UTC for the terminal, moved by the test."""

    def __init__(self, start: datetime) -> None:
        self.now_ns = int(start.timestamp()) * 1_000_000_000

    def __call__(self) -> int:
        return self.now_ns

    def advance_ms(self, ms: int) -> None:
        self.now_ns += ms * 1_000_000


class ListSink:
    """A RecordSink keeping records (and each symbol's ticks, decoded once) in lists."""

    full = False

    def __init__(self) -> None:
        self.records: list[tuple[bytes, codec.RawRecord]] = []
        self.rejects: list[tuple[bytes, codec.Rejection]] = []
        self._ticks: dict[bytes, list[tuple[int, int, int, int]]] = {}

    def put(self, key: bytes, record: codec.RawRecord) -> None:
        self.records.append((key, record))
        t = record.tick
        assert t.event_time_ns % 1_000_000 == 0
        label = json.loads(record.payload)["time_msc"]
        row = (t.event_time_ns // 1_000_000, label, t.bid_e9, t.ask_e9)
        self._ticks.setdefault(key, []).append(row)

    def reject(self, key: bytes, rejection: bytes) -> None:
        self.rejects.append((key, codec.decode_rejection(rejection)))

    async def wait_for_room(self) -> None:
        return None

    def ticks(self, symbol: str) -> list[tuple[int, int, int, int]]:
        """(utc_ms, time_msc, bid_e9, ask_e9) of the symbol's records, in order."""
        return list(self._ticks.get(symbol.encode(), []))


def settings(port: int, **overrides: object) -> Mt5BrokerSettings:
    values: dict[str, object] = {
        "kind": "mt5",
        "host": "127.0.0.1",
        "port": port,
        "login": LOGIN,
        "password_env": PASSWORD_ENV,
        "server": SERVER,
        "server_timezone": "Europe/Athens",
        "symbols": ["EURUSD", "USDJPY"],
        "priority": 1,
        "poll_interval_ms": 10,
        "batch_ticks": 50,
        "health_interval_s": 0.3,
        "request_timeout_s": 3,
        "connect_timeout_s": 1,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "auth_backoff_s": 0.3,
    }
    values.update(overrides)
    return Mt5BrokerSettings.model_validate(values)


@pytest.fixture
def terminals() -> Iterator[Callable[..., Terminal]]:
    made: list[Terminal] = []

    def make(**kwargs: object) -> Terminal:
        values: dict[str, object] = {"server": SERVER, "login": LOGIN, "password": PASSWORD}
        values.update(kwargs)
        terminal = Terminal("sim", **values)  # type: ignore[arg-type]
        terminal.serve("127.0.0.1", 0)
        made.append(terminal)
        return terminal

    yield make
    for terminal in made:
        terminal.close()


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Mt5Client], None]]:
    clients: list[tuple[Mt5Client, asyncio.Task[None]]] = []

    def start(client: Mt5Client) -> None:
        clients.append((client, asyncio.create_task(client.run())))

    yield start
    for client, task in clients:
        await client.close()
        await asyncio.wait_for(task, 10)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def expected(terminal: Terminal, symbol: str, sink: ListSink) -> list[tuple[int, int, int, int]]:
    """The terminal's own record from the client's first tick on, in client units (e9)."""
    got = sink.ticks(symbol)
    if not got:
        return []
    first_label = got[0][1]
    scale = 10 ** (9 - (3 if symbol.endswith("JPY") else 5))
    return [
        (utc, label, bid * scale, ask * scale)
        for utc, label, bid, ask in terminal.ticks(symbol)
        if label >= first_label
    ]


def caught_up(terminal: Terminal, sink: ListSink, symbols: list[str]) -> Callable[[], bool]:
    def done() -> bool:
        counts = [(len(sink.ticks(s)), len(expected(terminal, s, sink))) for s in symbols]
        return all(got and got >= own for got, own in counts)

    return done


async def test_prices_exact_to_the_digit_and_times_utc(terminals, running) -> None:
    clock = ManualClock(datetime(2026, 6, 10, 12, 0, tzinfo=UTC))
    terminal = terminals(clock=clock, rate=200, ulp_noise=3, zone="Europe/Athens")
    sink = ListSink()
    client = Mt5Client("ic_markets_mt5", settings(terminal.port), sink, {PASSWORD_ENV: PASSWORD})
    running(client)
    await wait_until(lambda: client.state.status == "connected")
    for _ in range(20):
        clock.advance_ms(50)
        await asyncio.sleep(0.01)
    await wait_until(caught_up(terminal, sink, ["EURUSD", "USDJPY"]))
    for symbol in ("EURUSD", "USDJPY"):
        assert sink.ticks(symbol) == expected(terminal, symbol, sink)
        assert len(sink.ticks(symbol)) > 100
    # The doubles on the wire were not the decimal prices (the rounding was exercised).
    series = terminal.series["EURUSD"]
    off = sum(b != u / 10**5 for b, u in zip(series.bid, series.bid_units, strict=True))
    assert off > len(series.bid) // 3
    # Summer in Athens: server clock = UTC + 3 h.
    utc, label, _, _ = sink.ticks("EURUSD")[-1]
    assert label - utc == 3 * 3_600_000
    record = sink.records[-1][1]
    assert record.format == "mt5" and record.tick.source == "ic_markets_mt5"
    assert record.tick.symbol == record.tick.symbol.upper()
    assert client.state.ticks_total == len(sink.records)
    assert sink.rejects == []
    snap = client.state.snapshot()
    assert snap["status"] == "connected" and snap["terminal"]["connected"] is True
    assert snap["terminal"]["last_error"] == [1, "Success"]


DST_CASES = {
    # zone, shift (h), a UTC instant, UTC to skip to after it (market closed) or None,
    # server offset before and after (hours)
    "athens_spring": ("Europe/Athens", 0, datetime(2026, 3, 29, 1, 0, tzinfo=UTC), None, 2, 3),
    "athens_autumn": (
        "Europe/Athens",
        0,
        datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
        datetime(2026, 10, 25, 2, 0, 0, tzinfo=UTC),
        3,
        2,
    ),
    "ny_close_spring": ("America/New_York", 7, datetime(2026, 3, 8, 7, 0, tzinfo=UTC), None, 2, 3),
    "ny_close_autumn": (
        "America/New_York",
        7,
        datetime(2026, 11, 1, 6, 0, tzinfo=UTC),
        datetime(2026, 11, 1, 7, 0, 0, tzinfo=UTC),
        3,
        2,
    ),
}


@pytest.mark.parametrize("case", DST_CASES, ids=list(DST_CASES))
async def test_utc_on_both_sides_of_a_dst_change(case, terminals, running) -> None:
    zone, shift, change, skip_to, before_h, after_h = DST_CASES[case]
    clock = ManualClock(change)
    clock.advance_ms(-3000)
    terminal = terminals(clock=clock, rate=100, zone=zone, shift_hours=shift)
    sink = ListSink()
    cfg = settings(terminal.port, server_timezone=zone, server_time_shift_hours=shift)
    client = Mt5Client("fxcm_mt5", cfg, sink, {PASSWORD_ENV: PASSWORD})
    running(client)
    await wait_until(lambda: client.state.status == "connected")
    for _ in range(30):
        clock.advance_ms(100)  # 3 s up to the change
        await asyncio.sleep(0.005)
    if skip_to is not None:
        # The repeated hour after a fall-back is weekend for FX: no ticks in it.
        terminal.skip_to(int(skip_to.timestamp()) * 1_000_000_000)
        clock.now_ns = int(skip_to.timestamp()) * 1_000_000_000
    for _ in range(30):
        clock.advance_ms(100)
        await asyncio.sleep(0.005)
    await wait_until(caught_up(terminal, sink, ["EURUSD", "USDJPY"]))
    change_ms = int(change.timestamp()) * 1000
    for symbol in ("EURUSD", "USDJPY"):
        got = sink.ticks(symbol)
        assert got == expected(terminal, symbol, sink)
        offsets_before = {label - utc for utc, label, _, _ in got if utc < change_ms}
        offsets_after = {label - utc for utc, label, _, _ in got if utc >= change_ms}
        assert offsets_before == {before_h * 3_600_000}
        assert offsets_after == {after_h * 3_600_000}


async def test_no_tick_lost_or_doubled_across_polls_and_a_terminal_restart(
    terminals, running
) -> None:
    clock = ManualClock(datetime(2026, 2, 2, 9, 0, tzinfo=UTC))
    # Many ticks share a millisecond, and batches of 7 split such groups.
    terminal = terminals(clock=clock, rate=300, same_ms_prob=0.5, zone="Europe/Athens")
    sink = ListSink()
    client = Mt5Client(
        "pepperstone_mt5", settings(terminal.port, batch_ticks=7), sink, {PASSWORD_ENV: PASSWORD}
    )
    running(client)
    await wait_until(lambda: client.state.status == "connected")
    for _ in range(20):
        clock.advance_ms(37)
        await asyncio.sleep(0.01)
    terminal.drop()
    await wait_until(lambda: client.state.status == "disconnected")
    down_from = clock() // 1_000_000
    for _ in range(10):
        clock.advance_ms(53)  # the trade server keeps quoting while the terminal is away
        await asyncio.sleep(0.01)
    down_to = clock() // 1_000_000
    terminal.restore()
    await wait_until(lambda: client.state.status == "connected")
    for _ in range(20):
        clock.advance_ms(29)
        await asyncio.sleep(0.01)
    await wait_until(caught_up(terminal, sink, ["EURUSD", "USDJPY"]))
    await asyncio.sleep(0.1)  # a few more polls: nothing may be read twice
    for symbol in ("EURUSD", "USDJPY"):
        got = sink.ticks(symbol)
        own = expected(terminal, symbol, sink)
        assert len(got) == len(own)  # the terminal's own count: none lost, none twice
        assert got == own
        assert sum(down_from < utc <= down_to for utc, *_ in own) > 20
        labels = [label for _, label, _, _ in own]
        assert len(labels) - len(set(labels)) > 50  # ticks sharing a millisecond
    assert terminal.restarts == 1
    assert client.state.reconnects >= 1
    assert terminal.calls["initialize"] >= 2


async def test_wrong_password_is_shown_with_the_terminal_error(terminals, running) -> None:
    terminal = terminals()
    sink = ListSink()
    client = Mt5Client("fxcm_mt5", settings(terminal.port), sink, {PASSWORD_ENV: "wrong-pw"})
    running(client)
    await wait_until(lambda: client.state.status == "auth_failed")
    snap = client.state.snapshot()
    assert "(-6, 'Terminal: Authorization failed')" in snap["last_error"]
    assert f"login={LOGIN}" in snap["last_error"]
    assert "wrong-pw" not in json.dumps(snap, default=str)
    assert sink.records == []
    # What /health reports for the brokers (registry.connections_problem) names it.
    from app.sources.brokers.feeds import connections_problem

    problem = connections_problem([client])
    assert problem is not None and problem.startswith("fxcm_mt5: auth_failed (initialize(")
    # Retried on the slow auth backoff; a fixed password is picked up.
    terminal.password = "wrong-pw"
    await wait_until(lambda: client.state.status == "connected")
    assert connections_problem([client]) is None


async def test_missing_password_variable(terminals, running) -> None:
    terminal = terminals()
    client = Mt5Client("fxcm_mt5", settings(terminal.port), ListSink(), {})
    running(client)
    await wait_until(lambda: client.state.status == "no_password")
    assert PASSWORD_ENV in (client.state.last_error or "")
    assert terminal.calls.get("initialize", 0) == 0


async def test_bridge_down_and_back(terminals, running) -> None:
    terminal = terminals(rate=50)  # wall clock
    sink = ListSink()
    client = Mt5Client("ic_markets_mt5", settings(terminal.port), sink, {PASSWORD_ENV: PASSWORD})
    running(client)
    await wait_until(lambda: client.state.status == "connected" and len(sink.records) > 5)
    terminal.close()
    await wait_until(lambda: client.state.status == "disconnected")
    assert f"bridge 127.0.0.1:{terminal.port}" in (client.state.last_error or "")
    await asyncio.sleep(0.5)  # connection refused meanwhile: retried with backoff
    attempts = client.state.connect_attempts
    assert attempts >= 3
    before = len(sink.records)
    terminal.restore()
    await wait_until(lambda: client.state.status == "connected" and len(sink.records) > before)
    assert client.state.reconnects >= 2
    for symbol in ("EURUSD", "USDJPY"):
        got = sink.ticks(symbol)
        assert got == expected(terminal, symbol, sink)[: len(got)]


async def test_offset_derived_from_the_terminal_without_a_zone(terminals, running) -> None:
    terminal = terminals(rate=50, zone="Etc/GMT-3")  # UTC+3, wall clock
    sink = ListSink()
    cfg = settings(terminal.port, server_timezone=None)
    client = Mt5Client("fxcm_mt5", cfg, sink, {PASSWORD_ENV: PASSWORD})
    running(client)
    await wait_until(lambda: len(sink.ticks("EURUSD")) > 10)
    assert client.state.snapshot()["terminal"]["utc_offset_ms"] == 3 * 3_600_000
    got = sink.ticks("EURUSD")
    assert got == expected(terminal, "EURUSD", sink)[: len(got)]


async def test_symbol_the_terminal_does_not_have(terminals, running) -> None:
    terminal = terminals()
    cfg = settings(terminal.port, symbols=["EURUSD", "BTCEUR"])
    client = Mt5Client("fxcm_mt5", cfg, ListSink(), {PASSWORD_ENV: PASSWORD})
    running(client)
    await wait_until(lambda: client.state.status == "request_rejected")
    assert "symbol_select('BTCEUR'): (-1, 'Terminal: Call failed')" in client.state.last_error
