"""OANDA v20 pricing stream: the wire format (this part) and the streaming client.

A line is one JSON object: PRICE or HEARTBEAT. Prices are decimal strings parsed exactly;
the best bid is the highest bid bucket and the best ask the lowest ask bucket, which are
not necessarily the first ones in the line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import Field

from app.core.errors import ParseError, ProviderError
from app.core.models import Tick, normalise_symbol, parse_price, parse_rfc3339_ns
from app.core.reasons import NOT_A_TICK, STAGE_SOURCE
from app.settings import BrokerSettings
from app.sources.contract import Backoff, Closable, ConnectionState, RecordSink
from app.wire import codec

log = logging.getLogger(__name__)

FORMAT = "oanda_v20"
MAX_LINE_BYTES = 64 * 1024
# Above any real book depth, and below float's range: float(liquidity) cannot overflow.
MAX_LIQUIDITY = 1e18


class OandaSettings(BrokerSettings):
    """An OANDA v20 account's pricing stream (the token comes from `token_env`)."""

    kind: Literal["oanda_v20"] = "oanda_v20"
    stream_url: str
    account: str
    token_env: str
    heartbeat_timeout_s: float = Field(10.0, gt=0)
    auth_backoff_s: float = Field(60.0, gt=0)


@dataclass(slots=True, frozen=True)
class Heartbeat:
    time_ns: int


def _best(buckets: Any, side: str, pick_max: bool) -> tuple[int, float]:
    if not isinstance(buckets, list):
        raise ParseError("missing_field", f"{side} is not a list")
    if not buckets:
        raise ParseError("empty_book", f"no {side}")
    best_price = -1
    best_liquidity = 0.0
    for bucket in buckets:
        if not isinstance(bucket, dict) or "price" not in bucket:
            raise ParseError("missing_field", f"{side} bucket without price: {bucket!r:.80}")
        try:
            price = parse_price(bucket["price"])
        except ValueError as exc:
            raise ParseError("bad_price", str(exc)) from None
        liquidity = bucket.get("liquidity", 0)
        if (
            isinstance(liquidity, bool)
            or not isinstance(liquidity, int | float)
            or not 0 <= liquidity < MAX_LIQUIDITY  # also NaN; an int too big for a float
        ):
            raise ParseError("bad_liquidity", f"{side} liquidity {liquidity!r:.40}")
        if best_price < 0 or (price > best_price if pick_max else price < best_price):
            best_price, best_liquidity = price, float(liquidity)
    return best_price, best_liquidity


def parse_oanda_line(line: bytes, source: str, receive_time_ns: int) -> Tick | Heartbeat:
    """Parse one stream line; raise ParseError with a reason code for anything not a tick.

    A PRICE with `tradeable: false` or an empty side is a well-formed line that is still
    not a tradable tick: it raises ParseError("not_tradeable" / "empty_book") so that the
    caller records why instead of dropping it. Total: whatever the bytes, the result is a
    Tick, a Heartbeat or a ParseError (a reader bug becomes `unreadable`, never a crash).
    """
    try:
        return _parse_line(line, source, receive_time_ns)
    except ParseError:
        raise
    except Exception as exc:  # the safety net of a total parser: the line is rejected
        raise ParseError("unreadable", f"{type(exc).__name__}: {exc}"[:200]) from None


def load_json(line: bytes) -> Any:
    """orjson: rejects NaN/Infinity, nesting over 1024, invalid UTF-8 and numbers that do
    not fit a double by itself (ValueError), and is 2-3x faster than json on a PRICE line."""
    try:
        return orjson.loads(line)
    except (ValueError, RecursionError) as exc:
        raise ParseError("malformed_json", str(exc)[:200]) from None


def _parse_line(line: bytes, source: str, receive_time_ns: int) -> Tick | Heartbeat:
    if len(line) > MAX_LINE_BYTES:
        raise ParseError("oversized_line", f"{len(line)} bytes")
    msg = load_json(line)
    if not isinstance(msg, dict):
        raise ParseError("not_an_object", f"line is a {type(msg).__name__}")
    kind = msg.get("type")
    if kind == "HEARTBEAT":
        return Heartbeat(_time(msg))
    if kind != "PRICE":
        raise ParseError("unknown_type", f"type {kind!r:.40}")
    instrument = msg.get("instrument")
    if not isinstance(instrument, str) or not instrument:
        raise ParseError("missing_field", "instrument")
    symbol = normalise_symbol(instrument)
    if not symbol.isalnum() or not symbol.isascii() or len(symbol) > 32:
        raise ParseError("bad_instrument", f"instrument {instrument!r:.40}")
    time_ns = _time(msg)
    bid, bid_volume = _best(msg.get("bids"), "bids", pick_max=True)
    ask, ask_volume = _best(msg.get("asks"), "asks", pick_max=False)
    tradeable = msg.get("tradeable", msg.get("status", "tradeable") == "tradeable")
    if tradeable is not True:
        raise ParseError("not_tradeable", f"{symbol} tradeable={tradeable!r:.20}")
    return Tick(symbol, source, bid, ask, bid_volume, ask_volume, time_ns, receive_time_ns)


def _time(msg: dict[str, Any]) -> int:
    if "time" not in msg:
        raise ParseError("missing_field", "time")
    try:
        return parse_rfc3339_ns(msg["time"])
    except ValueError as exc:
        raise ParseError("bad_time", str(exc)) from None


# Instruments whose OANDA name is not "first three letters _ rest" of the symbol.
OANDA_INSTRUMENTS: dict[str, str] = {
    "XAUUSD": "XAU_USD",
    "XAGUSD": "XAG_USD",
    "BCOUSD": "BCO_USD",
    "WTICOUSD": "WTICO_USD",
    "SPX500USD": "SPX500_USD",
    "NAS100USD": "NAS100_USD",
    "US30USD": "US30_USD",
    "DE30EUR": "DE30_EUR",
    "UK100GBP": "UK100_GBP",
    "JP225USD": "JP225_USD",
}


def oanda_instrument(symbol: str) -> str:
    """Service symbol -> OANDA instrument name: EURUSD -> EUR_USD, XAUUSD -> XAU_USD."""
    if symbol in OANDA_INSTRUMENTS:
        return OANDA_INSTRUMENTS[symbol]
    if len(symbol) == 6 and symbol.isalpha():
        return f"{symbol[:3]}_{symbol[3:]}"
    raise ValueError(f"no OANDA instrument name known for {symbol!r}: add it to OANDA_INSTRUMENTS")


def error_message(body: bytes) -> str:
    """OANDA's `errorMessage` from an error body, else the start of the body."""
    try:
        msg = orjson.loads(body)
    except (ValueError, RecursionError):
        msg = None
    if isinstance(msg, dict) and isinstance(msg.get("errorMessage"), str):
        return msg["errorMessage"]
    return body[:200].decode("utf-8", "replace").strip() or "(empty body)"


def _reject_key(line: bytes, fallback: str) -> bytes:
    """The symbol of a rejected line when it can still be read, else the broker name."""
    try:
        msg = orjson.loads(line) if len(line) <= MAX_LINE_BYTES else None
        instrument = msg.get("instrument") if isinstance(msg, dict) else None
    except (ValueError, RecursionError):  # a line deeper than the stack (1,000 "[") too
        instrument = None
    if isinstance(instrument, str) and 0 < len(instrument) <= 32:
        return normalise_symbol(instrument).encode()
    return fallback.encode()


def parse_oanda_record(payload: bytes, source: str, receive_time_ns: int) -> Tick:
    """A raw record's payload (one PRICE line) as a tick; a heartbeat is not one."""
    parsed = parse_oanda_line(payload, source, receive_time_ns)
    if isinstance(parsed, Heartbeat):
        raise ParseError(NOT_A_TICK, "heartbeat in a raw topic")
    return parsed


class StreamEnded(Exception):
    """The server closed the stream (or it went silent) while it should be streaming."""


class OandaPriceStream(Closable):
    """One OANDA v20 pricing-stream connection of one broker, kept alive until `close()`.

    Reconnects with capped, jittered backoff on network errors, 5xx, end of stream and
    heartbeat timeouts; a rejected token (401/403) or a missing token variable is shown
    on /health and retried only every `auth_backoff_s`.
    """

    kind = "oanda_v20"

    def __init__(
        self,
        name: str,
        cfg: OandaSettings,
        sink: RecordSink,
        environ: Mapping[str, str] = os.environ,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.sink = sink
        self.environ = environ
        self.instruments = ",".join(oanda_instrument(s) for s in cfg.symbols)
        self.url = f"{cfg.stream_url.rstrip('/')}/v3/accounts/{cfg.account}/pricing/stream"
        self.state = ConnectionState(name, self.kind, cfg.priority, list(cfg.symbols))
        self._backoff = Backoff(cfg.backoff_initial_s, cfg.backoff_max_s, rng)
        self._closing = asyncio.Event()
        self._name_key = name.encode()

    async def run(self) -> None:
        """Connect, stream, and reconnect until closed (a closed client may run again)."""
        self._closing.clear()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.cfg.connect_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._closing.is_set():
                delay = await self._connect_once(session)
                if self._closing.is_set():
                    break
                self.state.reconnects += 1
                log.info("%s: reconnecting in %.2fs", self.name, delay)
                await self._sleep(delay)
        self.state.set_status("stopped")

    async def _connect_once(self, session: aiohttp.ClientSession) -> float:
        """One connection attempt and its stream; returns how long to wait before the next."""
        token = self.environ.get(self.cfg.token_env)
        if not token:
            error = f"environment variable {self.cfg.token_env} (the API token) is not set"
            self._fail("no_token", error, self.cfg.auth_backoff_s)
            return self.cfg.auth_backoff_s
        self.state.set_status("connecting")
        self.state.connect_attempts += 1
        try:
            await self._stream(session, token)
        except asyncio.CancelledError:
            raise
        except ProviderError as exc:
            if exc.status in (401, 403):
                self._fail("auth_failed", str(exc), self.cfg.auth_backoff_s)
                return self.cfg.auth_backoff_s
            if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                # A request the server will keep refusing (account, instruments): go slow.
                self._fail("request_rejected", str(exc), self.cfg.auth_backoff_s)
                return self.cfg.auth_backoff_s
            delay = self._backoff.next_delay()
            self._fail("disconnected", str(exc), delay)
            return delay
        except (TimeoutError, StreamEnded, aiohttp.ClientError, OSError) as exc:
            delay = self._backoff.next_delay()
            detail = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                detail = f"no message for {self.cfg.heartbeat_timeout_s}s (heartbeat timeout)"
            self._fail("disconnected", detail, delay)
            return delay
        return 0.0  # closed while streaming

    def _fail(self, status: str, error: str, retry_in: float) -> None:
        self.state.set_error(status, error)
        log.error("%s: %s: %s; retry in %.1fs", self.name, status, error, retry_in)

    async def _stream(self, session: aiohttp.ClientSession, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "Accept-Datetime-Format": "RFC3339"}
        params = {"instruments": self.instruments}
        async with session.get(self.url, params=params, headers=headers) as resp:
            if resp.status != 200:
                body = await resp.content.read(4096)
                raise ProviderError(self.name, error_message(body), resp.status)
            self.state.set_status("connected")
            log.info("%s: connected to %s (%s)", self.name, self.url, self.instruments)
            await self._read(resp)

    async def _read(self, resp: aiohttp.ClientResponse) -> None:
        """Split chunks into lines; one receive time per chunk; no await per line."""
        loop = asyncio.get_running_loop()
        hb_timeout = self.cfg.heartbeat_timeout_s
        content = resp.content
        pending = b""
        skipping = False  # inside the rest of an oversized line, already rejected
        first = True
        async with asyncio.timeout(loop.time() + hb_timeout) as deadline:
            while not self._closing.is_set():
                chunk = await content.readany()
                if not chunk:
                    if pending:
                        self._handle_lines([pending], time.time_ns())
                    raise StreamEnded("stream closed by the server")
                deadline.reschedule(loop.time() + hb_timeout)
                now_ns = time.time_ns()
                self.state.last_message_time = now_ns / 1e9
                if first:
                    self._backoff.reset()
                    first = False
                if skipping:
                    end = chunk.find(b"\n")
                    if end < 0:
                        continue
                    chunk, skipping = chunk[end + 1 :], False
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                if len(pending) > MAX_LINE_BYTES:
                    # rejected once as oversized_line; its rest, up to the next newline, is
                    # dropped rather than read as a line of its own
                    lines.append(pending)
                    pending, skipping = b"", True
                self._handle_lines(lines, now_ns)
                if self.sink.full:
                    await self.sink.wait_for_room()

    def _handle_lines(self, lines: list[bytes], now_ns: int) -> None:
        name = self.name
        sink = self.sink
        state = self.state
        ticks = 0
        latency_ns = 0
        for line in lines:
            if not line.strip() and len(line) <= MAX_LINE_BYTES:
                continue  # keep-alive newline: carries nothing (64 KiB of blanks is no keep-alive)
            try:
                item = parse_oanda_line(line, name, now_ns)
            except ParseError as exc:
                self._reject(line, exc, now_ns)
                continue
            if type(item) is Heartbeat:
                state.heartbeats_total += 1
                continue
            record = codec.RawRecord(
                source=name, format=FORMAT, payload=line, receive_time_ns=now_ns
            )
            codec.fill_tick(record.tick, item)
            sink.put(item.symbol.encode(), record)
            state.active_symbols.add(item.symbol)
            ticks += 1
            latency_ns += now_ns - item.event_time_ns
        state.on_ticks(ticks, latency_ns, now_ns)

    def _reject(self, line: bytes, exc: ParseError, now_ns: int) -> None:
        self.state.rejects_total += 1
        log.warning("%s: rejected line (%s): %s", self.name, exc.reason, exc.detail)
        record = codec.RawRecord(
            source=self.name, format=FORMAT, payload=line, receive_time_ns=now_ns
        )
        rejection = codec.encode_rejection([exc.reason], exc.detail, record, stage=STAGE_SOURCE)
        self.sink.reject(_reject_key(line, self.name), rejection)
