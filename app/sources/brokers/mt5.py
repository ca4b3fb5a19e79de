"""MetaTrader 5 terminals over the mt5linux bridge (RPyC classic): broker kind `mt5`.

On Linux the terminal runs under Wine with a Windows Python next to it serving the
`MetaTrader5` package over an RPyC *classic* server (`python -m mt5linux ...`). This
client speaks that protocol with `rpyc` directly: it connects, runs
`import MetaTrader5 as mt5` remotely and evaluates calls there. The blocking RPyC calls
run in one thread per terminal (an RPyC connection is not thread-safe).

Flow: connect -> `initialize(login=, password=, server=)` (password from the environment)
-> `symbol_select` + `symbol_info` (digits) per symbol -> poll
`copy_ticks_from(symbol, from, n, COPY_TICKS_INFO)` every `poll_interval_ms`, continuing
from the last `time_msc` taken. MT5 returns ticks with `time_msc >= from`, and several ticks
can share one millisecond, so the cursor remembers how many ticks of its millisecond were
taken: nothing is skipped or read twice across polls and reconnects.

Prices are doubles: they are rounded to the symbol's `digits` as decimal text and parsed
exactly (1.0851199999999999 -> "1.08512"). Tick times are the trade server's wall clock
labelled as UTC; they are converted with the configured IANA zone (plus an optional
shift: "New York close" servers are America/New_York + 7 h), or with an offset derived
from the terminal's latest tick when no zone is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from rpyc.core.service import ClassicClient
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_stream

from app.core.models import Tick, parse_price
from app.core.reasons import STAGE_SOURCE
from app.settings import BrokerSettings
from app.sources.contract import Backoff, Closable, ConnectionState, RecordSink
from app.wire import codec

log = logging.getLogger(__name__)

KIND = "mt5"
FORMAT = "mt5"
NS_PER_MS = 1_000_000
MS_PER_QUARTER = 900_000  # UTC offsets change on quarter-hour marks

# MetaTrader5 last_error() codes that the client tells apart.
RES_E_AUTH_FAILED = -6
COPY_TICKS_INFO = 1
# Derived offsets: the latest tick must be this close to a quarter-hour offset from now.
OFFSET_TOLERANCE_MS = 120_000
# A terminal that keeps returning full batches of old ticks is not read forever.
MAX_BATCH_TICKS = 1_000_000


class Mt5BrokerSettings(BrokerSettings):
    """One MT5 terminal account reached through an mt5linux (RPyC classic) bridge."""

    kind: Literal["mt5"] = "mt5"
    host: str = "127.0.0.1"
    port: int = Field(18812, gt=0, lt=65536)
    login: int = Field(gt=0)
    password_env: str
    server: str = Field(min_length=1)
    # The trade server's clock: an IANA zone (+ shift in hours), or None = derive the
    # offset from the terminal's latest tick (re-derived on every health check).
    server_timezone: str | None = None
    server_time_shift_hours: float = Field(0.0, ge=-24, le=24)
    poll_interval_ms: float = Field(100.0, gt=0)
    batch_ticks: int = Field(1000, gt=0, le=100_000)
    health_interval_s: float = Field(30.0, gt=0)
    request_timeout_s: float = Field(10.0, gt=0)
    auth_backoff_s: float = Field(60.0, gt=0)

    @field_validator("server_timezone")
    @classmethod
    def _zone_exists(cls, zone: str | None) -> str | None:
        if zone is not None:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown IANA time zone {zone!r}") from exc
        return zone


# ---- pure parts: prices, server time, the tick cursor ------------------------------------


def price_units(value: float, digits: int) -> int:
    """A terminal double as exact fixed-point units, rounded to the symbol's digits."""
    return parse_price(f"{value:.{digits}f}")


class ServerTime:
    """The trade server's `time_msc` (its wall clock labelled as UTC) -> UTC nanoseconds.

    With a zone, each label is read as wall time in that zone (after removing the shift).
    In the repeated hour after a fall-back the earlier reading is taken unless it would
    put the tick before the previous tick of the symbol. Without a zone, a fixed offset
    (set by `set_offset`) is subtracted.
    """

    def __init__(self, zone: str | None, shift_hours: float = 0.0) -> None:
        self.zone = ZoneInfo(zone) if zone else None
        self.shift_ms = round(shift_hours * 3_600_000)
        self.offset_ms: int | None = None  # derived, when there is no zone
        self._cache: dict[int, tuple[int, int]] = {}

    @property
    def known(self) -> bool:
        return self.zone is not None or self.offset_ms is not None

    def set_offset(self, offset_ms: int) -> None:
        self.offset_ms = offset_ms

    def _offsets(self, local_ms: int) -> tuple[int, int]:
        quarter = local_ms // MS_PER_QUARTER
        offsets = self._cache.get(quarter)
        if offsets is None:
            naive = datetime(1970, 1, 1) + timedelta(milliseconds=quarter * MS_PER_QUARTER)
            pair = []
            for fold in (0, 1):
                delta = naive.replace(tzinfo=self.zone, fold=fold).utcoffset()
                pair.append((delta or timedelta(0)) // timedelta(milliseconds=1))
            offsets = self._cache[quarter] = (pair[0], pair[1])
        return offsets

    def to_utc_ns(self, label_ms: int, previous_ns: int = 0) -> int:
        if self.zone is None:
            if self.offset_ms is None:
                raise ValueError("server time offset unknown")
            return (label_ms - self.offset_ms) * NS_PER_MS
        local_ms = label_ms - self.shift_ms
        first, second = self._offsets(local_ms)
        utc_ms = local_ms - first
        if first != second and utc_ms * NS_PER_MS < previous_ns:
            utc_ms = local_ms - second  # the second pass through a repeated hour
        return utc_ms * NS_PER_MS


def derive_offset_ms(latest_label_ms: int, now_ms: int) -> int | None:
    """The server's UTC offset from its latest tick, if that tick is fresh enough to tell."""
    diff = latest_label_ms - now_ms
    offset = round(diff / MS_PER_QUARTER) * MS_PER_QUARTER
    if abs(diff - offset) > OFFSET_TOLERANCE_MS or not -12 * 3_600_000 <= offset <= 14 * 3_600_000:
        return None
    return offset


@dataclass
class TickCursor:
    """Where a symbol's reading stands: the last `time_msc` taken and how many ticks of
    that very millisecond were taken (MT5 returns `time_msc >= from`, ties included)."""

    last_msc: int
    taken_at_last: int = 0

    def fresh(self, times: Sequence[int]) -> list[int]:
        """Indices of the ticks (times in terminal order) not taken before; advances."""
        out: list[int] = []
        seen_at_last = 0
        for i, msc in enumerate(times):
            if msc < self.last_msc:
                continue  # before the cursor (a terminal that rounds `from` down)
            if msc == self.last_msc:
                seen_at_last += 1
                if seen_at_last <= self.taken_at_last:
                    continue
                self.taken_at_last += 1
            else:
                self.last_msc = msc
                self.taken_at_last = 1
                seen_at_last = 1
            out.append(i)
        return out


# ---- the blocking bridge, run in one thread ----------------------------------------------


class BridgeError(Exception):
    """The terminal answered, but not usefully (None from a call that must work)."""


class Mt5Bridge:
    """Typed async calls into `MetaTrader5` on the far side of an RPyC classic connection.

    Every call runs in this bridge's single thread. Only plain values cross the wire
    (RPyC's brine: tuples of numbers and strings), so no pickling and no numpy version
    coupling with the Windows side: tick arrays are turned into tuples over there.
    """

    def __init__(self, host: str, port: int, connect_timeout_s: float, request_timeout_s: float):
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"mt5-{host}:{port}")
        self._conn: Any = None
        self._mt5: Any = None

    async def _call(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _connect(self) -> None:
        stream = SocketStream.connect(
            self.host, self.port, timeout=self.connect_timeout_s, attempts=1, keepalive=True
        )
        # ClassicClient: we drive the terminal's side; it gets no access to ours.
        conn = connect_stream(
            stream, ClassicClient, config={"sync_request_timeout": self.request_timeout_s}
        )
        conn.execute("import MetaTrader5 as mt5\nimport datetime as _dt")
        conn.execute(
            "_utc0 = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)\n"
            "def _ticks(a):\n"
            "    return None if a is None else (tuple(a.dtype.names), tuple(a.tolist()))\n"
            "def _asdict(x):\n"
            "    return None if x is None else tuple(x._asdict().items())\n"
        )
        self._conn = conn
        self._mt5 = conn.eval("mt5")

    async def connect(self) -> None:
        await self._call(self._connect)

    async def initialize(self, login: int, password: str, server: str) -> bool:
        mt5 = self._mt5
        return bool(
            await self._call(lambda: mt5.initialize(login=login, password=password, server=server))
        )

    async def last_error(self) -> tuple[int, str]:
        code, message = await self._call(lambda: tuple(self._mt5.last_error()))
        return int(code), str(message)

    async def _record(self, expr: str) -> dict[str, Any] | None:
        items = await self._call(self._conn.eval, f"_asdict({expr})")
        return None if items is None else dict(items)

    async def terminal_info(self) -> dict[str, Any] | None:
        return await self._record("mt5.terminal_info()")

    async def symbol_info(self, symbol: str) -> dict[str, Any] | None:
        return await self._record(f"mt5.symbol_info({symbol!r})")

    async def symbol_info_tick(self, symbol: str) -> dict[str, Any] | None:
        return await self._record(f"mt5.symbol_info_tick({symbol!r})")

    async def symbol_select(self, symbol: str) -> bool:
        mt5 = self._mt5
        return bool(await self._call(lambda: mt5.symbol_select(symbol, True)))

    async def copy_ticks_from(
        self, symbol: str, from_msc: int, count: int
    ) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]] | None:
        """(field names, rows) of the ticks with time_msc >= from_msc, or None (an error)."""
        expr = (
            f"_ticks(mt5.copy_ticks_from({symbol!r}, "
            f"_utc0 + _dt.timedelta(milliseconds={int(from_msc)}), {int(count)}, "
            f"mt5.COPY_TICKS_INFO))"
        )
        return await self._call(self._conn.eval, expr)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._call(self._close), self.request_timeout_s)
        except (TimeoutError, RuntimeError):
            pass
        finally:
            self._executor.shutdown(wait=False)


# ---- the broker client -------------------------------------------------------------------


@dataclass
class Mt5ConnectionState(ConnectionState):
    """ConnectionState plus what the terminal said on its last health check."""

    terminal: dict[str, Any] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        body = super().snapshot()
        body["terminal"] = dict(self.terminal)
        return body


class SessionEnded(Exception):
    """Leave the session and reconnect after `delay` (status and error already set)."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


class Mt5Client(Closable):
    """One MT5 terminal account, polled until `close()`; reconnects with backoff.

    A refused login (last_error -6) shows as `auth_failed` with the terminal's error and
    is retried every `auth_backoff_s`; a lost bridge as `disconnected`, retried with the
    shared capped, jittered backoff. Cursors survive reconnects, so a terminal that comes
    back is read on from where the client stopped.
    """

    kind = KIND

    def __init__(
        self,
        name: str,
        cfg: Mt5BrokerSettings,
        sink: RecordSink,
        environ: Mapping[str, str] = os.environ,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.sink = sink
        self.environ = environ
        self.state = Mt5ConnectionState(name, self.kind, cfg.priority, list(cfg.symbols))
        self.state.terminal = {"server": cfg.server, "login": cfg.login}
        self.server_time = ServerTime(cfg.server_timezone, cfg.server_time_shift_hours)
        self.cursors: dict[str, TickCursor] = {}
        self.digits: dict[str, int] = {}
        self._last_utc_ns: dict[str, int] = {}
        self._backoff = Backoff(cfg.backoff_initial_s, cfg.backoff_max_s, rng)
        self._closing = asyncio.Event()

    async def run(self) -> None:
        """Connect, poll, and reconnect until closed (a closed client may run again: a
        broker that moves back to this worker)."""
        self._closing.clear()
        while not self._closing.is_set():
            delay = await self._session()
            if self._closing.is_set():
                break
            self.state.reconnects += 1
            log.info("%s: reconnecting in %.2fs", self.name, delay)
            await self._sleep(delay)
        self.state.set_status("stopped")

    def _fail(self, status: str, error: str, retry_in: float) -> float:
        self.state.set_error(status, error)
        log.error("%s: %s: %s; retry in %.1fs", self.name, status, error, retry_in)
        return retry_in

    async def _session(self) -> float:
        """One connection to the bridge; returns how long to wait before the next."""
        cfg = self.cfg
        password = self.environ.get(cfg.password_env)
        if not password:
            error = f"environment variable {cfg.password_env} (the MT5 password) is not set"
            return self._fail("no_password", error, cfg.auth_backoff_s)
        self.state.set_status("connecting")
        self.state.connect_attempts += 1
        bridge = Mt5Bridge(cfg.host, cfg.port, cfg.connect_timeout_s, cfg.request_timeout_s)
        try:
            await bridge.connect()
            await self._login(bridge, password)
            await self._prepare_symbols(bridge)
            await self._poll_loop(bridge)
            return 0.0
        except asyncio.CancelledError:
            raise
        except SessionEnded as ended:
            return ended.delay
        except Exception as exc:  # the bridge is gone: EOFError, OSError, timeouts, ...
            delay = self._backoff.next_delay()
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return self._fail("disconnected", f"bridge {cfg.host}:{cfg.port}: {detail}", delay)
        finally:
            await bridge.close()

    async def _login(self, bridge: Mt5Bridge, password: str) -> None:
        cfg = self.cfg
        if await bridge.initialize(cfg.login, password, cfg.server):
            return
        code, message = await bridge.last_error()
        error = f"initialize(login={cfg.login}, server={cfg.server!r}): ({code}, {message!r})"
        if code == RES_E_AUTH_FAILED:
            raise SessionEnded(self._fail("auth_failed", error, cfg.auth_backoff_s))
        raise SessionEnded(self._fail("init_failed", error, self._backoff.next_delay()))

    async def _prepare_symbols(self, bridge: Mt5Bridge) -> None:
        for symbol in self.cfg.symbols:
            if not await bridge.symbol_select(symbol):
                code, message = await bridge.last_error()
                error = f"symbol_select({symbol!r}): ({code}, {message!r})"
                raise SessionEnded(self._fail("request_rejected", error, self.cfg.auth_backoff_s))
            info = await bridge.symbol_info(symbol)
            if info is None or not isinstance(info.get("digits"), int):
                raise BridgeError(f"symbol_info({symbol!r}) gave {info!r:.80}")
            self.digits[symbol] = info["digits"]

    async def _start_cursors(self, bridge: Mt5Bridge) -> bool:
        """Cursors for symbols read for the first time: from their latest tick on."""
        for symbol in self.cfg.symbols:
            if symbol in self.cursors:
                continue
            tick = await bridge.symbol_info_tick(symbol)
            if tick is None or not tick.get("time_msc"):
                continue  # no tick yet: try again on the next poll
            self.cursors[symbol] = TickCursor(int(tick["time_msc"]))
        return bool(self.cursors)

    async def _derive_offset(self, bridge: Mt5Bridge) -> None:
        if self.server_time.zone is not None:
            return
        latest = 0
        for symbol in self.cfg.symbols:
            tick = await bridge.symbol_info_tick(symbol)
            if tick is not None:
                latest = max(latest, int(tick.get("time_msc") or 0))
        offset = derive_offset_ms(latest, time.time_ns() // NS_PER_MS) if latest else None
        if offset is not None:
            if offset != self.server_time.offset_ms:
                log.info("%s: server time is UTC%+.2fh", self.name, offset / 3_600_000)
            self.server_time.set_offset(offset)
        self.state.terminal["utc_offset_ms"] = self.server_time.offset_ms

    async def _health(self, bridge: Mt5Bridge) -> None:
        info = await bridge.terminal_info()
        code, message = await bridge.last_error()
        if info is None:
            raise BridgeError(f"terminal_info() gave None: ({code}, {message!r})")
        self.state.terminal.update(
            connected=bool(info.get("connected")),
            ping_last_us=info.get("ping_last"),
            company=info.get("company"),
            build=info.get("build"),
            last_error=[code, message],
            checked_at=time.time(),
        )
        await self._derive_offset(bridge)

    async def _poll_loop(self, bridge: Mt5Bridge) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        next_health = 0.0
        interval = cfg.poll_interval_ms / 1000
        while not self._closing.is_set():
            if loop.time() >= next_health:
                await self._health(bridge)
                next_health = loop.time() + cfg.health_interval_s
            problem = None
            if not self.state.terminal.get("connected", True):
                problem = "terminal not connected to its trade server"
            elif not self.server_time.known:
                await self._derive_offset(bridge)
                if not self.server_time.known:
                    problem = "server time offset unknown (no fresh tick): set server_timezone"
            if problem is None and await self._start_cursors(bridge):
                for symbol, cursor in list(self.cursors.items()):
                    await self._poll_symbol(bridge, symbol, cursor)
                if self.state.status != "connected":
                    self.state.set_status("connected")
                    log.info("%s: polling %s:%d (%s)", self.name, cfg.host, cfg.port, cfg.server)
                self._backoff.reset()
            elif problem is not None and self.state.status != "degraded":
                self._fail("degraded", problem, interval)
            await self._sleep(interval)

    async def _poll_symbol(self, bridge: Mt5Bridge, symbol: str, cursor: TickCursor) -> None:
        count = self.cfg.batch_ticks
        while True:
            result = await bridge.copy_ticks_from(symbol, cursor.last_msc, count)
            if result is None:
                code, message = await bridge.last_error()
                raise BridgeError(f"copy_ticks_from({symbol!r}) gave None: ({code}, {message!r})")
            names, rows = result
            col = {n: i for i, n in enumerate(names)}
            t_msc = col["time_msc"]
            fresh = cursor.fresh([row[t_msc] for row in rows])
            if fresh:
                self._emit(symbol, [rows[i] for i in fresh], col)
                if self.sink.full:
                    await self.sink.wait_for_room()
            if len(rows) < count:
                return
            # A full batch: more is waiting. If it was all ticks taken before (more ticks
            # in one millisecond than a batch), ask for a bigger batch.
            count = self.cfg.batch_ticks if fresh else count * 2
            if count > MAX_BATCH_TICKS:
                raise BridgeError(f"copy_ticks_from({symbol!r}): full batches, no new tick")

    def _emit(self, symbol: str, rows: list[tuple[Any, ...]], col: dict[str, int]) -> None:
        now_ns = time.time_ns()
        state = self.state
        state.last_message_time = now_ns / 1e9
        digits = self.digits[symbol]
        i_bid, i_ask, i_msc, i_flags = col["bid"], col["ask"], col["time_msc"], col["flags"]
        previous = self._last_utc_ns.get(symbol, 0)
        ticks = 0
        latency_ns = 0
        key = symbol.encode()
        for row in rows:
            msc = row[i_msc]
            payload = (
                f'{{"symbol":"{symbol}","time_msc":{msc},"bid":{row[i_bid]!r},'
                f'"ask":{row[i_ask]!r},"flags":{row[i_flags]},"digits":{digits}}}'
            ).encode()
            record = codec.RawRecord(
                source=self.name, format=FORMAT, payload=payload, receive_time_ns=now_ns
            )
            try:
                bid = price_units(row[i_bid], digits)
                ask = price_units(row[i_ask], digits)
                if bid <= 0 or ask <= 0:
                    raise ValueError("no bid or no ask")
            except ValueError as exc:
                state.rejects_total += 1
                rejection = codec.encode_rejection(["bad_price"], str(exc), record, STAGE_SOURCE)
                self.sink.reject(key, rejection)
                continue
            event_ns = self.server_time.to_utc_ns(msc, previous)
            previous = max(previous, event_ns)
            tick = Tick(symbol, self.name, bid, ask, 0.0, 0.0, event_ns, now_ns)
            codec.fill_tick(record.tick, tick)
            self.sink.put(key, record)
            ticks += 1
            latency_ns += now_ns - event_ns
        self._last_utc_ns[symbol] = previous
        if ticks:
            state.active_symbols.add(symbol)
        state.on_ticks(ticks, latency_ns, now_ns)


__all__ = [
    "Mt5Bridge",
    "Mt5BrokerSettings",
    "Mt5Client",
    "ServerTime",
    "TickCursor",
    "derive_offset_ms",
    "price_units",
]
