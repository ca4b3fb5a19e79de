"""An independent OHLC computation for the candle tests (no code shared with app.core.candles).

Windows are [start, start + size) with start = t - t % size; the open is the tick with the
smallest event time (the first to arrive among equal times), the close the one with the
largest (the last to arrive among equal times).
"""

from __future__ import annotations

from collections.abc import Iterable

from app.core.candles import Candle

TF_NS = {"1s": 10**9, "1m": 60 * 10**9, "5m": 300 * 10**9, "1h": 3600 * 10**9}
TickTuple = tuple[int, int, int]  # event time, bid, ask (arrival order)
Fields = tuple[int, ...]


def independent(ticks: Iterable[TickTuple], timeframes: dict[str, int] = TF_NS) -> dict:
    """(timeframe, start) -> (bid o,h,l,c, ask o,h,l,c, mid2 o,h,l,c, count, first, last)."""
    ticks = list(ticks)
    out: dict[tuple[str, int], Fields] = {}
    for tf, size in timeframes.items():
        windows: dict[int, list[tuple[int, int, int, int]]] = {}
        for arrival, (t, bid, ask) in enumerate(ticks):
            windows.setdefault(t - t % size, []).append((t, arrival, bid, ask))
        for start, rows in windows.items():
            ordered = sorted(rows)  # by event time, then arrival
            first, last = ordered[0], ordered[-1]
            bids = [r[2] for r in rows]
            asks = [r[3] for r in rows]
            mids = [r[2] + r[3] for r in rows]
            out[(tf, start)] = (
                first[2], max(bids), min(bids), last[2],
                first[3], max(asks), min(asks), last[3],
                first[2] + first[3], max(mids), min(mids), last[2] + last[3],
                len(rows), first[0], last[0],
            )  # fmt: skip
    return out


def fields(c: Candle) -> Fields:
    return (
        c.bid_open, c.bid_high, c.bid_low, c.bid_close,
        c.ask_open, c.ask_high, c.ask_low, c.ask_close,
        c.mid2_open, c.mid2_high, c.mid2_low, c.mid2_close,
        c.tick_count, c.first_event_ns, c.last_event_ns,
    )  # fmt: skip


def final_revisions(candles: Iterable[Candle]) -> dict[tuple[str, str, str, int], Candle]:
    """(source, symbol, timeframe, start) -> the highest revision emitted."""
    out: dict[tuple[str, str, str, int], Candle] = {}
    for c in candles:
        key = (c.source, c.symbol, c.timeframe, c.start_ns)
        if key not in out or out[key].revision < c.revision:
            out[key] = c
    return out


def closed_windows(expected: dict, newest_event_ns: int, timeframes: dict[str, int] = TF_NS):
    """The windows a watermark at `newest_event_ns` (delay 0) has closed."""
    return {k: v for k, v in expected.items() if k[1] + timeframes[k[0]] <= newest_event_ns}
