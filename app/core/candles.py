"""Event-time OHLC candles as an explicit, serialisable state machine (no I/O, no clock).

One `CandleBook` per (source, symbol) holds that stream's open windows for every timeframe
and its watermark. `apply(book, ticks, params)` feeds ticks in arrival order and returns the
candles to emit and the late ticks it refused; `encode_book` / `decode_book` turn the book
into one compact JSON value (one table value per key, written once per batch).

Rules (`CandleParams`):

- windows are tumbling and aligned to the Unix epoch: [start, start + size);
- watermark = newest event time seen by this book minus `delay_ns` (never goes back; a
  caller may also push it forward with `advance`, e.g. from the source's clock when a
  symbol goes quiet);
- a window is emitted (revision 0) once, at the tick that moves the watermark to or past
  its end; an empty window is never emitted;
- after that the window is kept for `lateness_ns` more watermark time: a tick that falls
  into it updates it and re-emits it at once with revision + 1;
- a tick whose window (of one timeframe) ended `lateness_ns` or more before the watermark
  is refused for that timeframe with reason `late_for_candle` and counted in the book.

Open/close are the first/last tick in event-time order; ties on event time keep arrival
order (the open is the earliest arrival, the close the latest). The mid is kept as mid2 =
bid + ask (twice the mid, exact in integers, like `Tick.mid2`): the OHLC of mid2 halves to
the OHLC of the exact mid, and floor-halving is monotone, so consumers that want integer
mids may floor each field without re-ordering anything.

Outputs depend only on the tick sequence: feeding it in one call, in many calls, or with
the book encoded and decoded between calls gives the same candles in the same order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.core.models import NS_PER_MS, NS_PER_SECOND

LATE_FOR_CANDLE = "late_for_candle"
STATE_VERSION = 1

_UNITS_NS = {
    "s": NS_PER_SECOND,
    "m": 60 * NS_PER_SECOND,
    "h": 3600 * NS_PER_SECOND,
    "d": 86400 * NS_PER_SECOND,
}
_TIMEFRAME = re.compile(r"^([1-9][0-9]*)([smhd])$")


def timeframe_ns(name: str) -> int:
    """Length of a timeframe name such as "1s", "5m", "1h", "1d" in nanoseconds."""
    match = _TIMEFRAME.match(name)
    if not match:
        raise ValueError(f"timeframe must look like 1s, 5m, 1h or 1d, got {name!r}")
    return int(match.group(1)) * _UNITS_NS[match.group(2)]


class CandleSettings(BaseModel):
    """`candles:` section of the service config (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Off: no books, no market-candles output (e.g. a deployment that only wants ticks).
    enabled: bool = True
    timeframes: list[str] = ["1s", "1m", "5m", "1h"]
    # Watermark = newest event time - watermark_delay_ms: how long a window waits for
    # out-of-order ticks before its first emission.
    watermark_delay_ms: int = Field(0, ge=0)
    # After emission a window still accepts ticks (and is re-emitted with revision + 1)
    # until the watermark is this far past its end; later ticks are refused.
    allowed_lateness_ms: int = Field(2000, ge=0)
    # Closed candles kept per symbol:timeframe and source for the /candles view (0: none),
    # for these timeframes only: a key is rewritten whole each time one of its candles
    # closes, so 1 s history would cost a ~100 KB changelog write per symbol per second.
    history: int = Field(100, ge=0)
    # None: every configured timeframe of 1 min or longer
    history_timeframes: list[str] | None = None

    @field_validator("timeframes")
    @classmethod
    def _valid_timeframes(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError("at least one timeframe is needed")
        for name in names:
            timeframe_ns(name)
        if len(set(names)) != len(names):
            raise ValueError(f"timeframes repeat: {names}")
        return names

    @model_validator(mode="after")
    def _history_of_known_timeframes(self) -> CandleSettings:
        unknown = sorted(set(self.history_timeframes or ()) - set(self.timeframes))
        if unknown:
            raise ValueError(f"history_timeframes not in timeframes: {unknown}")
        return self

    def kept_history(self) -> list[str]:
        """The timeframes whose closed candles the history table keeps."""
        if not self.history:
            return []
        if self.history_timeframes is not None:
            return list(self.history_timeframes)
        return [tf for tf in self.timeframes if timeframe_ns(tf) >= 60 * NS_PER_SECOND]


@dataclass(slots=True, frozen=True)
class CandleParams:
    """The rules in nanoseconds; build once from `CandleSettings`."""

    timeframes: tuple[tuple[str, int], ...] = (
        ("1s", NS_PER_SECOND),
        ("1m", 60 * NS_PER_SECOND),
        ("5m", 300 * NS_PER_SECOND),
        ("1h", 3600 * NS_PER_SECOND),
    )
    delay_ns: int = 0
    lateness_ns: int = 2000 * NS_PER_MS

    @classmethod
    def from_settings(cls, settings: CandleSettings) -> CandleParams:
        return cls(
            timeframes=tuple((name, timeframe_ns(name)) for name in settings.timeframes),
            delay_ns=settings.watermark_delay_ms * NS_PER_MS,
            lateness_ns=settings.allowed_lateness_ms * NS_PER_MS,
        )


class TickLike(Protocol):
    """What a candle needs of a tick (`app.core.models.Tick` fits)."""

    symbol: str
    bid: int
    ask: int
    event_time_ns: int


@dataclass(slots=True, frozen=True)
class Candle:
    """One emitted candle; a later revision of the same window replaces it."""

    symbol: str
    source: str
    timeframe: str
    start_ns: int  # window [start_ns, end_ns) in event time
    end_ns: int
    bid_open: int
    bid_high: int
    bid_low: int
    bid_close: int
    ask_open: int
    ask_high: int
    ask_low: int
    ask_close: int
    mid2_open: int  # bid + ask: twice the mid, exact
    mid2_high: int
    mid2_low: int
    mid2_close: int
    tick_count: int
    first_event_ns: int
    last_event_ns: int
    revision: int  # 0 at the first emission, + 1 per late update

    @property
    def key(self) -> str:
        """Kafka key of `market-candles`."""
        return f"{self.symbol}:{self.timeframe}"


@dataclass(slots=True, frozen=True)
class CandleReject:
    """A tick refused for one timeframe because its window is already final."""

    symbol: str
    source: str
    timeframe: str
    event_time_ns: int
    watermark_ns: int
    reason: str = LATE_FOR_CANDLE
    # position of the tick in the sequence given to this `apply` call (not part of equality:
    # the same reject from a split feed has another index)
    index: int = field(default=-1, compare=False)


@dataclass(slots=True)
class WindowState:
    """Aggregate of one open (or emitted but still revisable) window."""

    start_ns: int
    revision: int  # -1 until first emitted
    tick_count: int
    first_event_ns: int
    last_event_ns: int
    bid_open: int
    bid_high: int
    bid_low: int
    bid_close: int
    ask_open: int
    ask_high: int
    ask_low: int
    ask_close: int
    mid2_open: int
    mid2_high: int
    mid2_low: int
    mid2_close: int

    @classmethod
    def first(cls, start_ns: int, t: int, bid: int, ask: int) -> WindowState:
        m = bid + ask
        return cls(start_ns, -1, 1, t, t, bid, bid, bid, bid, ask, ask, ask, ask, m, m, m, m)

    def add(self, t: int, bid: int, ask: int) -> None:
        m = bid + ask
        self.tick_count += 1
        if t < self.first_event_ns:  # tie: the earlier arrival stays the open
            self.first_event_ns = t
            self.bid_open, self.ask_open, self.mid2_open = bid, ask, m
        if t >= self.last_event_ns:  # tie: the later arrival becomes the close
            self.last_event_ns = t
            self.bid_close, self.ask_close, self.mid2_close = bid, ask, m
        # comparisons rather than max()/min(): this is the per-tick hot path
        if bid > self.bid_high:
            self.bid_high = bid
        elif bid < self.bid_low:
            self.bid_low = bid
        if ask > self.ask_high:
            self.ask_high = ask
        elif ask < self.ask_low:
            self.ask_low = ask
        if m > self.mid2_high:
            self.mid2_high = m
        elif m < self.mid2_low:
            self.mid2_low = m

    def to_list(self) -> list[int]:
        return [
            self.start_ns,
            self.revision,
            self.tick_count,
            self.first_event_ns,
            self.last_event_ns,
            self.bid_open,
            self.bid_high,
            self.bid_low,
            self.bid_close,
            self.ask_open,
            self.ask_high,
            self.ask_low,
            self.ask_close,
            self.mid2_open,
            self.mid2_high,
            self.mid2_low,
            self.mid2_close,
        ]

    def candle(self, symbol: str, source: str, timeframe: str, size_ns: int) -> Candle:
        return Candle(
            symbol=symbol,
            source=source,
            timeframe=timeframe,
            start_ns=self.start_ns,
            end_ns=self.start_ns + size_ns,
            bid_open=self.bid_open,
            bid_high=self.bid_high,
            bid_low=self.bid_low,
            bid_close=self.bid_close,
            ask_open=self.ask_open,
            ask_high=self.ask_high,
            ask_low=self.ask_low,
            ask_close=self.ask_close,
            mid2_open=self.mid2_open,
            mid2_high=self.mid2_high,
            mid2_low=self.mid2_low,
            mid2_close=self.mid2_close,
            tick_count=self.tick_count,
            first_event_ns=self.first_event_ns,
            last_event_ns=self.last_event_ns,
            revision=self.revision,
        )


@dataclass(slots=True)
class CandleBook:
    """All candle state of one (source, symbol) stream: one table value.

    `watermark_ns` is None until the first tick. `windows[timeframe]` maps window start to
    its aggregate; `rejected[timeframe]` counts ticks refused as too late.
    """

    source: str
    symbol: str
    watermark_ns: int | None = None
    windows: dict[str, dict[int, WindowState]] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)


def new_book(source: str, symbol: str) -> CandleBook:
    return CandleBook(source=source, symbol=symbol)


def apply(
    book: CandleBook, ticks: Iterable[TickLike], params: CandleParams
) -> tuple[list[Candle], list[CandleReject]]:
    """Feed ticks (arrival order) into the book, in place; return emitted candles and rejects.

    Per tick: each timeframe's window takes the tick unless it is final (reject); a window
    already past the watermark is (re-)emitted at once; then the watermark moves to the
    tick's time minus the delay, which emits the windows it passes and drops the ones past
    their lateness.
    """
    emitted: list[Candle] = []
    rejects: list[CandleReject] = []
    lateness = params.lateness_ns
    # Smallest watermark at which moving it does anything (emit or drop a window): below it
    # the watermark is just set, so the per-tick path skips the scan of every window.
    due = _due(book, params)
    for index, tick in enumerate(ticks):
        if tick.symbol != book.symbol:
            raise ValueError(f"tick of {tick.symbol} fed to the candle book of {book.symbol}")
        t, bid, ask = tick.event_time_ns, tick.bid, tick.ask
        wm = book.watermark_ns
        for name, size in params.timeframes:
            start = t - t % size
            windows = book.windows.setdefault(name, {})
            window = windows.get(start)
            if window is None:
                if wm is not None and start + size + params.lateness_ns <= wm:
                    book.rejected[name] = book.rejected.get(name, 0) + 1
                    rejects.append(CandleReject(book.symbol, book.source, name, t, wm, index=index))
                    continue
                window = windows[start] = WindowState.first(start, t, bid, ask)
                end = start + size
                # a new window is due at its end, or (emitted below) at its end + lateness
                window_due = end if wm is None or end > wm else end + lateness
                if due is None or window_due < due:
                    due = window_due
            else:
                window.add(t, bid, ask)
            if wm is not None and start + size <= wm:
                window.revision += 1
                emitted.append(window.candle(book.symbol, book.source, name, size))
        candidate = t - params.delay_ns
        if wm is None or candidate > wm:
            if due is not None and candidate >= due:
                _move_watermark(book, candidate, params, emitted)
                due = _due(book, params)
            else:
                book.watermark_ns = candidate
    return emitted, rejects


def _due(book: CandleBook, params: CandleParams) -> int | None:
    """The watermark at which the next window is emitted (its end) or dropped (end + lateness)."""
    due = None
    for name, size in params.timeframes:
        for start, window in book.windows.get(name, {}).items():
            d = start + size if window.revision < 0 else start + size + params.lateness_ns
            if due is None or d < due:
                due = d
    return due


def advance(book: CandleBook, watermark_ns: int, params: CandleParams) -> list[Candle]:
    """Raise the watermark without a tick (a quiet symbol, the end of an import).

    The caller supplies the time (e.g. the source's newest event time), never a wall clock.
    """
    emitted: list[Candle] = []
    if book.watermark_ns is None or watermark_ns > book.watermark_ns:
        _move_watermark(book, watermark_ns, params, emitted)
    return emitted


def _move_watermark(
    book: CandleBook, watermark_ns: int, params: CandleParams, emitted: list[Candle]
) -> None:
    book.watermark_ns = watermark_ns
    for name, size in params.timeframes:
        windows = book.windows.get(name)
        if not windows or min(windows) + size > watermark_ns:
            continue
        for start in sorted(windows):
            end = start + size
            if end > watermark_ns:
                break
            window = windows[start]
            if window.revision < 0:
                window.revision = 0
                emitted.append(window.candle(book.symbol, book.source, name, size))
            if end + params.lateness_ns <= watermark_ns:
                del windows[start]


def encode_book(book: CandleBook) -> dict[str, Any]:
    """The book as one compact JSON-able value (ints stay exact in JSON)."""
    return {
        "v": STATE_VERSION,
        "source": book.source,
        "symbol": book.symbol,
        "wm": book.watermark_ns,
        "windows": {
            name: [windows[start].to_list() for start in sorted(windows)]
            for name, windows in sorted(book.windows.items())
            if windows
        },
        "rejected": dict(sorted(book.rejected.items())),
    }


def decode_book(value: dict[str, Any], params: CandleParams | None = None) -> CandleBook:
    """Inverse of `encode_book`; with params, windows of timeframes no longer configured
    are dropped (a changed config must not resurrect them)."""
    if value.get("v") != STATE_VERSION:
        raise ValueError(f"unknown candle state version {value.get('v')!r}")
    keep = None if params is None else {name for name, _ in params.timeframes}
    windows: dict[str, dict[int, WindowState]] = {}
    for name, rows in value["windows"].items():
        if keep is not None and name not in keep:
            continue
        windows[name] = {row[0]: WindowState(*row) for row in rows}
    return CandleBook(
        source=value["source"],
        symbol=value["symbol"],
        watermark_ns=value["wm"],
        windows=windows,
        rejected=dict(value["rejected"]),
    )
