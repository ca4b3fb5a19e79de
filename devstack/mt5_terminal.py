"""Simulated MetaTrader 5 terminals behind the mt5linux bridge protocol (RPyC classic).

A real Linux deployment runs the terminal under Wine next to a Windows Python that serves
`MetaTrader5` over an RPyC classic server (`python -m mt5linux ...`). This module serves
the same protocol: a `rpyc.utils.server.ThreadedServer` with a classic (Slave) service,
whose `import MetaTrader5` gives a fake module bound to one `Terminal`:

- `initialize(login=, password=, server=)`/`login`/`shutdown`, `last_error()` with MT5's
  codes ((1, 'Success'), (-6, 'Terminal: Authorization failed'), (-10004, 'No IPC connection'));
- `terminal_info`, `symbol_info` (digits, visible), `symbol_select`, `symbol_info_tick`;
- `copy_ticks_from(symbol, date_from, count, flags)` returning numpy structured arrays
  with MT5's tick dtype, times in the trade server's clock labelled as UTC (an IANA zone,
  optionally shifted: NY-close brokers are America/New_York + 7 h);
- symbols are not in Market Watch until selected; a terminal drops and comes back
  (`Terminal.drop()` / `restore()` in-process, or `mt5._sim_drop(seconds)` over the bridge).

Prices come from the OANDA simulator's shared `Market`, so best price across OANDA and
MT5 brokers compares like with like. The tick history is kept (like the terminal's
own database) so a client can catch up after a drop; `Terminal.ticks(symbol)` is the
terminal's own count to test against.

`python -m devstack.mt5_terminal --port 18812` runs the three demo terminals on ports
18812..18814; `python -m devstack.simulator --mt5-port 18812` does the same inside the
OANDA simulator process (one market for both kinds).
"""

from __future__ import annotations

import argparse
import bisect
import builtins
import logging
import math
import random
import threading
import time
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from rpyc.core.service import SlaveService
from rpyc.utils.helpers import classpartial
from rpyc.utils.server import ThreadedServer

from devstack.simulator import INSTRUMENTS, Market

log = logging.getLogger("mt5_terminal")

# MetaTrader5's tick record (numpy structured array returned by copy_ticks_*).
TICK_DTYPE = np.dtype(
    [
        ("time", "<i8"),
        ("bid", "<f8"),
        ("ask", "<f8"),
        ("last", "<f8"),
        ("volume", "<u8"),
        ("time_msc", "<i8"),
        ("flags", "<u4"),
        ("volume_real", "<f8"),
    ]
)

# MetaTrader5 constants (values as in the official package).
COPY_TICKS_ALL = -1
COPY_TICKS_INFO = 1
COPY_TICKS_TRADE = 2
TICK_FLAG_BID = 2
TICK_FLAG_ASK = 4
TICK_FLAG_LAST = 8
TICK_FLAG_VOLUME = 16
TICK_FLAG_BUY = 32
TICK_FLAG_SELL = 64

# last_error() codes of the MetaTrader5 package.
RES_S_OK = 1
RES_E_FAIL = -1
RES_E_INVALID_PARAMS = -2
RES_E_NOT_FOUND = -4
RES_E_AUTH_FAILED = -6
RES_E_INTERNAL_FAIL_INIT = -10003
RES_E_INTERNAL_FAIL_CONNECT = -10004
OK = (RES_S_OK, "Success")
AUTH_FAILED = (RES_E_AUTH_FAILED, "Terminal: Authorization failed")
NO_IPC = (RES_E_INTERNAL_FAIL_CONNECT, "No IPC connection")
CALL_FAILED = (RES_E_FAIL, "Terminal: Call failed")
INVALID_PARAMS = (RES_E_INVALID_PARAMS, "Terminal: Invalid params")

TerminalInfo = namedtuple(
    "TerminalInfo",
    "community_account community_connection connected dlls_allowed trade_allowed "
    "tradeapi_disabled email_enabled ftp_enabled notifications_enabled mqid build "
    "maxbars codepage ping_last community_balance retransmission company name language "
    "path data_path commondata_path",
)
SymbolInfo = namedtuple(
    "SymbolInfo", "name description path digits point spread visible select bid ask time"
)
MtTick = namedtuple("Tick", "time bid ask last volume time_msc flags volume_real")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = 1_000_000


def mt5_symbol(instrument: str) -> str:
    """Simulator instrument -> MT5 symbol name: EUR_USD -> EURUSD."""
    return instrument.replace("_", "")


SYMBOLS: dict[str, str] = {mt5_symbol(i): i for i in INSTRUMENTS}


class ServerClock:
    """UTC <-> the trade server's wall clock (IANA zone plus a fixed shift in hours)."""

    def __init__(self, zone: str, shift_hours: float = 0.0) -> None:
        self.zone = ZoneInfo(zone)
        self.shift_ms = round(shift_hours * 3_600_000)
        self._cache: dict[int, int] = {}

    def label_ms(self, utc_ms: int) -> int:
        """The server's time_msc for a true UTC instant (offsets change on 15-minute marks)."""
        quarter = utc_ms // 900_000
        offset = self._cache.get(quarter)
        if offset is None:
            at = EPOCH + timedelta(milliseconds=quarter * 900_000)
            delta = at.astimezone(self.zone).utcoffset() or timedelta(0)
            offset = self._cache[quarter] = delta // timedelta(milliseconds=1)
        return utc_ms + offset + self.shift_ms


@dataclass
class _Series:
    """One symbol's tick history and generator state."""

    instrument: str
    digits: int
    rng: random.Random
    next_ms: int
    label_ms: list[int] = field(default_factory=list)
    utc_ms: list[int] = field(default_factory=list)
    bid: list[float] = field(default_factory=list)
    ask: list[float] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    bid_units: list[int] = field(default_factory=list)
    ask_units: list[int] = field(default_factory=list)


class Terminal:
    """One simulated MT5 terminal (account, server clock, Market Watch, tick history).

    Thread-safe: the RPyC server serves each connection in its own thread.
    `clock` gives true UTC in ns (tests pass a manual clock); ticks are generated lazily
    up to it, at random intervals (several per millisecond at times, like real feeds).
    `ulp_noise` makes the doubles a few ulps off the decimal price, as a broker's own
    arithmetic does (1.0851199999999999 for 1.08512); clients must round to `digits`.
    """

    def __init__(
        self,
        name: str,
        *,
        server: str,
        login: int,
        password: str | None = None,
        zone: str = "Europe/Athens",
        shift_hours: float = 0.0,
        market: Market | None = None,
        spread_mult: float = 1.0,
        rate: float = 10.0,
        same_ms_prob: float = 0.15,
        ulp_noise: int = 2,
        seed: int = 1,
        clock: Callable[[], int] = time.time_ns,
        company: str = "Simulated MetaQuotes terminal",
    ) -> None:
        self.name = name
        self.server = server
        self.login = login
        self.password = password
        self.server_clock = ServerClock(zone, shift_hours)
        self.market = market or Market(f"{seed}:{name}")
        self.spread_mult = spread_mult
        self.rate = rate
        self.same_ms_prob = same_ms_prob
        self.ulp_noise = ulp_noise
        self.seed = seed
        self.clock = clock
        self.company = company
        self.lock = threading.RLock()
        self.initialized = False
        self.trade_server_connected = True
        self.market_watch: set[str] = set()
        self.error: tuple[int, str] = OK
        self.series: dict[str, _Series] = {}
        self.calls: dict[str, int] = {}
        self.module = FakeMetaTrader5(self)
        self.restarts = 0
        self._server: ThreadedServer | None = None
        self._thread: threading.Thread | None = None
        self.host = "127.0.0.1"
        self.port = 0

    # ---- tick generation -------------------------------------------------------------

    def _series(self, symbol: str) -> _Series:
        series = self.series.get(symbol)
        if series is None:
            instrument = SYMBOLS[symbol]
            now_ms = self.clock() // MS
            series = self.series[symbol] = _Series(
                instrument,
                INSTRUMENTS[instrument].decimals,
                random.Random(f"{self.seed}:{self.name}:{symbol}"),
                now_ms,
            )
        return series

    def _generate(self, series: _Series, until_ms: int) -> None:
        spec = INSTRUMENTS[series.instrument]
        unit = 10.0**-spec.decimals
        scale = 10**spec.decimals
        rng = series.rng
        while series.next_ms <= until_ms:
            at_ms = series.next_ms
            mid = self.market.mid(series.instrument, at_ms * MS) + rng.gauss(0.0, 0.1) * spec.pip
            spread = max(unit, spec.spread_pips * spec.pip * self.spread_mult)
            spread *= rng.uniform(0.8, 1.3)
            bid = round((mid - spread / 2) / unit)
            ask = max(bid + 1, round((mid + spread / 2) / unit))
            flags = 0
            if not series.bid_units or series.bid_units[-1] != bid:
                flags |= TICK_FLAG_BID
            if not series.ask_units or series.ask_units[-1] != ask:
                flags |= TICK_FLAG_ASK
            series.label_ms.append(self.server_clock.label_ms(at_ms))
            series.utc_ms.append(at_ms)
            series.bid_units.append(bid)
            series.ask_units.append(ask)
            series.bid.append(self._double(bid, scale, rng))
            series.ask.append(self._double(ask, scale, rng))
            series.flags.append(flags or TICK_FLAG_BID | TICK_FLAG_ASK)
            if rng.random() < self.same_ms_prob:
                gap = 0
            else:
                gap = max(1, int(rng.expovariate(self.rate) * 1000))
            series.next_ms = at_ms + gap

    def _double(self, units: int, scale: int, rng: random.Random) -> float:
        value = units / scale  # the double nearest to the decimal price
        for _ in range(rng.randint(0, self.ulp_noise)):
            value = math.nextafter(value, math.inf if rng.random() < 0.5 else -math.inf)
        return value

    def catch_up(self) -> None:
        """Generate the ticks of every symbol ever selected up to the clock: the terminal
        keeps receiving them whether or not a client asks (and while its bridge is down)."""
        with self.lock:
            now_ms = self.clock() // MS
            for series in self.series.values():
                self._generate(series, now_ms)

    def skip_to(self, utc_ns: int) -> None:
        """No ticks until `utc_ns` (market closed, e.g. over a weekend DST change)."""
        with self.lock:
            self.catch_up()
            for series in self.series.values():
                series.next_ms = max(series.next_ms, utc_ns // MS)

    def ticks(self, symbol: str) -> list[tuple[int, int, int, int]]:
        """The terminal's own record of `symbol`: (utc_ms, time_msc, bid_units, ask_units)."""
        with self.lock:
            self.catch_up()
            s = self.series.get(symbol)
            if s is None:
                return []
            return list(zip(s.utc_ms, s.label_ms, s.bid_units, s.ask_units, strict=True))

    # ---- bridge (RPyC classic server) ---------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start the bridge in a thread; returns the port (a free one when 0)."""
        with self.lock:
            self.host = host
            server = ThreadedServer(
                classpartial(TerminalService, self),
                hostname=host,
                port=port,
                reuse_addr=True,
                protocol_config={"allow_all_attrs": True, "allow_pickle": True},
                logger=logging.getLogger(f"mt5_terminal.{self.name}.rpyc"),
            )
            server._listen()  # listening before serve() returns: no refused first connect
            self.port = server.port
            self._server = server
            self._thread = threading.Thread(
                target=server.start, name=f"mt5-{self.name}", daemon=True
            )
            self._thread.start()
            log.info("%s: MT5 bridge on %s:%d (%s)", self.name, host, self.port, self.server)
            return self.port

    def drop(self) -> None:
        """The terminal (and its bridge) goes away: connections closed, login forgotten,
        Market Watch emptied. The tick history stays and grows, as in the terminal's
        database (the trade server keeps quoting)."""
        with self.lock:
            server, self._server = self._server, None
            self.initialized = False
            self.market_watch = set()
            self.restarts += 1
        if server is not None:
            server.close()
        if self._thread is not None:
            self._thread.join(5)
        log.info("%s: terminal dropped", self.name)

    def restore(self) -> None:
        """The terminal is back on the same port."""
        self.serve(self.host, self.port)

    def close(self) -> None:
        with self.lock:
            server, self._server = self._server, None
        if server is not None:
            server.close()

    def drop_for(self, seconds: float) -> None:
        """Drop now (from another thread, so a request can still be answered), come back."""

        def cycle() -> None:
            time.sleep(0.05)
            self.drop()
            time.sleep(seconds)
            self.restore()

        threading.Thread(target=cycle, daemon=True).start()


class FakeMetaTrader5:
    """The `MetaTrader5` module as seen through the bridge, bound to one terminal."""

    COPY_TICKS_ALL = COPY_TICKS_ALL
    COPY_TICKS_INFO = COPY_TICKS_INFO
    COPY_TICKS_TRADE = COPY_TICKS_TRADE
    TICK_FLAG_BID = TICK_FLAG_BID
    TICK_FLAG_ASK = TICK_FLAG_ASK
    TICK_FLAG_LAST = TICK_FLAG_LAST
    TICK_FLAG_VOLUME = TICK_FLAG_VOLUME
    TICK_FLAG_BUY = TICK_FLAG_BUY
    TICK_FLAG_SELL = TICK_FLAG_SELL
    RES_S_OK = RES_S_OK
    RES_E_FAIL = RES_E_FAIL
    RES_E_INVALID_PARAMS = RES_E_INVALID_PARAMS
    RES_E_NOT_FOUND = RES_E_NOT_FOUND
    RES_E_AUTH_FAILED = RES_E_AUTH_FAILED
    RES_E_INTERNAL_FAIL_CONNECT = RES_E_INTERNAL_FAIL_CONNECT
    __name__ = "MetaTrader5"
    __version__ = "5.0.4874"
    __author__ = "devstack.mt5_terminal (simulated)"

    def __init__(self, terminal: Terminal) -> None:
        self._t = terminal

    def _count(self, name: str) -> None:
        self._t.calls[name] = self._t.calls.get(name, 0) + 1

    def _ready(self) -> bool:
        if not self._t.initialized:
            self._t.error = NO_IPC
            return False
        return True

    def version(self) -> tuple[int, int, str] | None:
        return (500, 4874, "1 Nov 2026")

    def initialize(
        self,
        path: str | None = None,
        *,
        login: int | None = None,
        password: str | None = None,
        server: str | None = None,
        timeout: int | None = None,
        portable: bool = False,
    ) -> bool:
        t = self._t
        with t.lock:
            self._count("initialize")
            if login is not None and not self._authorised(login, password, server):
                t.initialized = False
                t.error = AUTH_FAILED
                return False
            t.initialized = True
            t.error = OK
            return True

    def login(
        self, login: int, password: str | None = None, server: str | None = None, timeout=None
    ) -> bool:
        t = self._t
        with t.lock:
            if not self._ready():
                return False
            if not self._authorised(login, password, server):
                t.error = AUTH_FAILED
                return False
            t.error = OK
            return True

    def _authorised(self, login: int, password: str | None, server: str | None) -> bool:
        t = self._t
        if login != t.login or (server is not None and server != t.server):
            return False
        if t.password is None:
            return bool(password)
        return password == t.password

    def shutdown(self) -> None:
        with self._t.lock:
            self._t.initialized = False

    def last_error(self) -> tuple[int, str]:
        return self._t.error

    def terminal_info(self) -> TerminalInfo | None:
        t = self._t
        with t.lock:
            self._count("terminal_info")
            if not self._ready():
                return None
            t.error = OK
            return TerminalInfo(
                False, False, t.trade_server_connected, False, False, False, False, False,
                False, False, 4874, 100000, 0, 12 if t.trade_server_connected else 0, 0.0,
                False, t.company, f"MetaTrader 5 ({t.name})", "English",
                r"C:\Program Files\MetaTrader 5", r"C:\users\sim\MetaTrader 5",
                r"C:\users\sim\Common",
            )  # fmt: skip

    def symbol_info(self, symbol: str) -> SymbolInfo | None:
        t = self._t
        with t.lock:
            if not self._ready():
                return None
            instrument = SYMBOLS.get(symbol)
            if instrument is None:
                t.error = CALL_FAILED
                return None
            spec = INSTRUMENTS[instrument]
            visible = symbol in t.market_watch
            tick = self._last_tick(symbol) if visible else None
            t.error = OK
            return SymbolInfo(
                symbol,
                instrument.replace("_", "/"),
                f"Forex\\{symbol}",
                spec.decimals,
                10.0**-spec.decimals,
                0,
                visible,
                visible,
                tick.bid if tick else 0.0,
                tick.ask if tick else 0.0,
                tick.time if tick else 0,
            )

    def symbol_select(self, symbol: str, enable: bool = True) -> bool:
        t = self._t
        with t.lock:
            if not self._ready():
                return False
            if symbol not in SYMBOLS:
                t.error = CALL_FAILED
                return False
            if enable:
                t.market_watch.add(symbol)
                t._series(symbol)
            else:
                t.market_watch.discard(symbol)
            t.error = OK
            return True

    def _last_tick(self, symbol: str) -> MtTick | None:
        t = self._t
        s = t._series(symbol)
        t._generate(s, t.clock() // MS)
        if not s.label_ms:
            return None
        i = len(s.label_ms) - 1
        return MtTick(
            s.label_ms[i] // 1000, s.bid[i], s.ask[i], 0.0, 0, s.label_ms[i], s.flags[i], 0.0
        )

    def symbol_info_tick(self, symbol: str) -> MtTick | None:
        t = self._t
        with t.lock:
            if not self._ready():
                return None
            if symbol not in t.market_watch:
                t.error = CALL_FAILED
                return None
            t.error = OK
            return self._last_tick(symbol)

    def copy_ticks_from(self, symbol: str, date_from: Any, count: int, flags: int) -> Any:
        """Ticks with time_msc >= date_from (server clock), oldest first, at most `count`."""
        t = self._t
        with t.lock:
            self._count("copy_ticks_from")
            if not self._ready():
                return None
            if symbol not in t.market_watch or not t.trade_server_connected:
                t.error = CALL_FAILED
                return None
            if isinstance(date_from, datetime):
                aware = date_from if date_from.tzinfo else date_from.replace(tzinfo=UTC)
                from_ms = (aware - EPOCH) // timedelta(milliseconds=1)
            elif isinstance(date_from, int | float) and not isinstance(date_from, bool):
                from_ms = int(date_from) * 1000
            else:
                t.error = INVALID_PARAMS
                return None
            if not isinstance(count, int) or count <= 0:
                t.error = INVALID_PARAMS
                return None
            s = t._series(symbol)
            t._generate(s, t.clock() // MS)
            start = bisect.bisect_left(s.label_ms, from_ms)
            stop = min(len(s.label_ms), start + count)
            n = stop - start
            out = np.zeros(n, dtype=TICK_DTYPE)
            if n:
                labels = np.asarray(s.label_ms[start:stop], dtype=np.int64)
                out["time_msc"] = labels
                out["time"] = labels // 1000
                out["bid"] = s.bid[start:stop]
                out["ask"] = s.ask[start:stop]
                out["flags"] = s.flags[start:stop]
            t.error = OK
            return out

    # ---- simulation control over the bridge (not part of MetaTrader5) --------------------

    def _sim_drop(self, seconds: float) -> bool:
        """Drop the terminal for `seconds`, then bring it back (for demos and tests)."""
        self._t.drop_for(float(seconds))
        return True

    def _sim_set(self, **changes: Any) -> bool:
        """Change password, trade_server_connected, rate, spread_mult on the fly."""
        allowed = {"password", "trade_server_connected", "rate", "spread_mult"}
        with self._t.lock:
            for key, value in changes.items():
                if key not in allowed:
                    raise ValueError(f"unknown setting {key!r}; known: {sorted(allowed)}")
                setattr(self._t, key, value)
        return True


class TerminalService(SlaveService):
    """RPyC classic service whose `import MetaTrader5` is this terminal's fake module.

    The import hook lives in the connection's namespace (its `__builtins__`), so one
    process can serve several terminals, each with its own module.
    """

    def __init__(self, terminal: Terminal) -> None:
        super().__init__()
        self.terminal = terminal
        real_import = builtins.__import__

        def hook(name: str, *args: Any, **kwargs: Any) -> Any:
            if name == "MetaTrader5":
                return terminal.module
            return real_import(name, *args, **kwargs)

        self.namespace = {"__builtins__": {**vars(builtins), "__import__": hook}}

    def getmodule(self, name: Any) -> Any:
        if name in ("MetaTrader5", ("MetaTrader5",)):
            return self.terminal.module
        return super().getmodule(name)


# The demo terminals: the design document's three brokers, as MT5 accounts.
# IC Markets and Pepperstone run on "New York close" server time (UTC+2/+3 on US dates).
DEMO_TERMINALS: dict[str, dict[str, Any]] = {
    "ic_markets_mt5": {
        "server": "ICMarketsSC-Demo",
        "login": 51000001,
        "zone": "America/New_York",
        "shift_hours": 7,
        "spread_mult": 0.7,
    },
    "pepperstone_mt5": {
        "server": "Pepperstone-Demo",
        "login": 61000002,
        "zone": "America/New_York",
        "shift_hours": 7,
        "spread_mult": 0.9,
    },
    "fxcm_mt5": {
        "server": "FXCM-USDDemo01",
        "login": 71000003,
        "zone": "Europe/Athens",
        "spread_mult": 1.4,
    },
}


def start_demo_terminals(
    market: Market, host: str, base_port: int, seed: int = 1, rate: float = 8.0
) -> list[Terminal]:
    """The demo terminals on base_port, base_port+1, ... over one shared market.

    Passwords: any non-empty one is accepted (like the OANDA simulator's tokens);
    a background thread keeps every selected symbol's history growing.
    """
    terminals = []
    for offset, (name, values) in enumerate(DEMO_TERMINALS.items()):
        terminal = Terminal(name, market=market, seed=seed, rate=rate, **values)
        terminal.serve(host, base_port + offset)
        terminals.append(terminal)

    def tick_all() -> None:
        while True:
            for terminal in terminals:
                terminal.catch_up()
            time.sleep(0.05)

    threading.Thread(target=tick_all, name="mt5-ticks", daemon=True).start()
    return terminals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18812, help="first terminal's port")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=8.0, help="ticks/s per symbol (mean)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    terminals = start_demo_terminals(Market(str(args.seed)), args.host, args.port, args.seed)
    for t in terminals:
        log.info("%s: %s login %d on %s:%d", t.name, t.server, t.login, args.host, t.port)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        for t in terminals:
            t.close()


if __name__ == "__main__":
    main()
