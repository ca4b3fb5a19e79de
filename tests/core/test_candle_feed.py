"""The agents' candle glue without Kafka: books in the symbol value, late ticks, history rows."""

from __future__ import annotations

import json

from app.core.candle_feed import (
    SymbolCandles,
    candle_flush_batch,
    flush_of,
    late_ticks,
    merge_history,
)
from app.core.candles import CandleParams, apply, new_book
from app.core.models import Tick
from app.wire import codec

S = 1_000_000_000
T0 = 1_796_029_200 * S
PARAMS = CandleParams(timeframes=(("1s", S), ("1m", 60 * S)), lateness_ns=2 * S)


def tick(source: str, at_ms: int, bid: int = 1_100_000_000, index: int = 0) -> Tick:
    t = T0 + at_ms * 1_000_000
    return Tick("EURUSD", source, bid, bid + 100_000, 1.0, 1.0, t, t, "raw", 0, 9, index)


def test_books_survive_the_table_value_and_match_one_uninterrupted_book():
    ticks = [tick("ic", ms, 1_100_000_000 + ms) for ms in range(0, 9000, 137)]
    whole = new_book("ic", "EURUSD")
    want, _ = apply(whole, ticks, PARAMS)
    stored: dict = {}
    got = []
    for i in range(0, len(ticks), 7):  # one group per 7 ticks, through JSON like the table
        candles = SymbolCandles("EURUSD", stored, PARAMS)
        emitted, rejects = candles.feed("ic", ticks[i : i + 7])
        assert rejects == []
        got += emitted
        stored = json.loads(json.dumps(candles.encode()))
    assert got == want and len(want) == 8  # 1 s windows 0..7 closed by the 8.9 s tick


def test_only_touched_books_are_re_encoded_and_others_kept_as_stored():
    first = SymbolCandles("EURUSD", {}, PARAMS)
    first.feed("ic", [tick("ic", 0)])
    first.feed("fxcm", [tick("fxcm", 0)])
    stored = first.encode()
    second = SymbolCandles("EURUSD", stored, PARAMS)
    second.feed("ic", [tick("ic", 1500)])
    value = second.encode()
    assert value["fxcm"] is stored["fxcm"]  # untouched: not decoded, the same object
    assert value["ic"]["wm"] == T0 + 1500 * 1_000_000
    assert list(value) == ["fxcm", "ic"]


def test_late_ticks_are_grouped_per_tick_with_their_timeframes():
    candles = SymbolCandles("EURUSD", {}, PARAMS)
    candles.feed("ic", [tick("ic", 10_000)])
    late = [tick("ic", 5000, index=1), tick("ic", 9000, index=2), tick("ic", 7500, index=3)]
    _, rejects = candles.feed("ic", late)
    grouped = late_ticks(late, rejects)
    # 1s windows of 5.0 s and 7.5 s ended >= 2 s before the 10 s watermark; 1m still open
    assert [(g.tick.index, g.timeframes) for g in grouped] == [(1, ("1s",)), (3, ("1s",))]
    assert "late_for_candle" in grouped[0].detail
    assert candles.rejected() == {"ic": {"1s": 2}}


def test_history_keeps_the_newest_windows_and_revisions_replace_their_row():
    book = new_book("ic", "EURUSD")
    emitted, _ = apply(book, [tick("ic", ms) for ms in range(0, 6000, 250)], PARAMS)
    rows: dict = {}
    merge_history(rows, emitted, keep=3)
    assert [r[0] for r in rows["ic"]] == [T0 + k * S for k in (2, 3, 4)]
    # a late tick into 4 s re-emits it with revision 1; a re-processed copy changes nothing
    revised, _ = apply(book, [tick("ic", 4100, 1_000_000_000)], PARAMS)
    merge_history(rows, revised, keep=3)
    merge_history(rows, revised, keep=3)
    assert [(r[0], r[-1]) for r in rows["ic"]] == [
        (T0 + 2 * S, 0),
        (T0 + 3 * S, 0),
        (T0 + 4 * S, 1),
    ]
    assert rows["ic"][-1][4] == 1_000_000_000  # the new low
    merge_history(rows, emitted[:1], keep=3)  # an old window re-sent: kept in order
    assert [r[0] for r in rows["ic"]] == [T0 + k * S for k in (2, 3, 4)]


def test_flush_marker_round_trip():
    batch = codec.decode_raw_batch(candle_flush_batch("dukascopy", T0))
    assert flush_of(list(batch.records)) == ("dukascopy", T0)
    normal = codec.RawRecord(source="dukascopy", format="tick", tick=codec.MarketTick())
    assert flush_of([normal]) is None
