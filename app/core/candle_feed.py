"""The candle books of one symbol inside a processing group, and the candle history rows.

Glue between the pure state machine (`app.core.candles`) and the agents, still without I/O:
`SymbolCandles` holds a symbol's books (one per source) as stored in its table value,
decodes a book the first time a group feeds it and encodes only the books it touched.
`late_rejections` turns the state machine's per-timeframe `CandleReject`s into one reject
per tick; `merge_history` keeps the last N closed candles per source for the /candles view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.core.candles import (
    Candle,
    CandleBook,
    CandleParams,
    CandleReject,
    advance,
    apply,
    decode_book,
    encode_book,
    new_book,
)
from app.core.models import Tick, format_price
from app.wire import codec

# A raw message of one record in this format moves a source's candle watermark to its
# receive_time_ns without a tick: the import sends one per symbol after its last hour.
CANDLE_FLUSH_FORMAT = "candle_flush"


def candle_flush_batch(source: str, watermark_ns: int) -> bytes:
    """The RawBatch that flushes `source`'s candles of the message's symbol up to watermark_ns."""
    return codec.encode_raw_batch(
        [codec.RawRecord(source=source, format=CANDLE_FLUSH_FORMAT, receive_time_ns=watermark_ns)]
    )


def flush_of(records: Sequence[codec.RawRecord]) -> tuple[str, int] | None:
    """(source, watermark_ns) when the batch is a candle flush marker, else None."""
    if len(records) == 1 and records[0].format == CANDLE_FLUSH_FORMAT:
        record = records[0]
        if not record.HasField("tick"):
            return record.source, record.receive_time_ns
    return None


class SymbolCandles:
    """A symbol's candle books, source -> book, as kept in its `SymbolStateValue.candles`."""

    __slots__ = ("books", "params", "stored", "symbol")

    def __init__(self, symbol: str, stored: dict[str, dict[str, Any]], params: CandleParams):
        self.symbol = symbol
        self.params = params
        self.stored = dict(stored)  # encoded books not touched since they were read
        self.books: dict[str, CandleBook] = {}

    def _book(self, source: str) -> CandleBook:
        book = self.books.get(source)
        if book is None:
            value = self.stored.pop(source, None)
            if value is None:
                book = new_book(source, self.symbol)
            else:
                book = decode_book(value, self.params)
            self.books[source] = book
        return book

    def feed(self, source: str, ticks: Sequence[Tick]) -> tuple[list[Candle], list[CandleReject]]:
        """Ticks of one source, in arrival order, into its book."""
        return apply(self._book(source), ticks, self.params)

    def advance(self, source: str, watermark_ns: int) -> list[Candle]:
        return advance(self._book(source), watermark_ns, self.params)

    def rejected(self) -> dict[str, dict[str, int]]:
        """Late ticks counted per source and timeframe (for views)."""
        out = {src: dict(v.get("rejected", {})) for src, v in self.stored.items()}
        out.update({src: dict(b.rejected) for src, b in self.books.items()})
        return {src: counts for src, counts in sorted(out.items()) if counts}

    def encode(self) -> dict[str, dict[str, Any]]:
        """The value to store: every book, touched ones re-encoded, in source order."""
        out = dict(self.stored)
        for source, book in self.books.items():
            out[source] = encode_book(book)
        return dict(sorted(out.items()))


@dataclass(slots=True, frozen=True)
class LateTick:
    """One tick refused by one or more timeframes of its book."""

    tick: Tick
    timeframes: tuple[str, ...]
    watermark_ns: int

    @property
    def detail(self) -> str:
        t = self.tick
        return (
            f"late_for_candle: {t.source} {t.symbol} bid={format_price(t.bid)}"
            f" ask={format_price(t.ask)} event_ns={t.event_time_ns} is before the final"
            f" {','.join(self.timeframes)} window(s) of book watermark_ns={self.watermark_ns}"
        )


def late_ticks(ticks: Sequence[Tick], rejects: Sequence[CandleReject]) -> list[LateTick]:
    """Group the per-timeframe rejects of one `feed` call by the tick they refused."""
    by_index: dict[int, list[CandleReject]] = {}
    for rej in rejects:
        by_index.setdefault(rej.index, []).append(rej)
    return [
        LateTick(ticks[i], tuple(r.timeframe for r in rs), rs[0].watermark_ns)
        for i, rs in sorted(by_index.items())
    ]


def candle_row(c: Candle) -> list[int]:
    """A candle as a compact row (history table); `row_json` names the fields again."""
    return [
        c.start_ns,
        c.end_ns,
        c.bid_open,
        c.bid_high,
        c.bid_low,
        c.bid_close,
        c.ask_open,
        c.ask_high,
        c.ask_low,
        c.ask_close,
        c.mid2_open,
        c.mid2_high,
        c.mid2_low,
        c.mid2_close,
        c.tick_count,
        c.first_event_ns,
        c.last_event_ns,
        c.revision,
    ]


def row_json(row: list[int]) -> dict[str, Any]:
    """A history row for the web view: prices as decimal strings, mid = mid2 / 2."""
    (start, end, bo, bh, bl, bc, ao, ah, al, ac, mo, mh, ml, mc, n, first, last, rev) = row
    price = format_price
    return {
        "start_ns": start,
        "end_ns": end,
        "bid": {"open": price(bo), "high": price(bh), "low": price(bl), "close": price(bc)},
        "ask": {"open": price(ao), "high": price(ah), "low": price(al), "close": price(ac)},
        "mid2": {"open": price(mo), "high": price(mh), "low": price(ml), "close": price(mc)},
        "tick_count": n,
        "first_event_time_ns": first,
        "last_event_time_ns": last,
        "revision": rev,
    }


def merge_history(
    rows: dict[str, list[list[int]]], candles: Sequence[Candle], keep: int
) -> dict[str, list[list[int]]]:
    """Add emitted candles (one symbol:timeframe) to the rows per source, in place.

    A revision replaces the row of its window, and a re-processed candle (after a crash)
    replaces its own copy, so merging is idempotent; only the newest `keep` windows stay.
    """
    for c in candles:
        source_rows = rows.setdefault(c.source, [])
        row = candle_row(c)
        if not source_rows or source_rows[-1][0] < c.start_ns:
            source_rows.append(row)
        else:
            for i in range(len(source_rows) - 1, -1, -1):
                if source_rows[i][0] == c.start_ns:
                    if source_rows[i][-1] <= c.revision:
                        source_rows[i] = row
                    break
                if source_rows[i][0] < c.start_ns:
                    source_rows.insert(i + 1, row)
                    break
            else:
                source_rows.insert(0, row)
        if len(source_rows) > keep:
            del source_rows[: len(source_rows) - keep]
    return rows
