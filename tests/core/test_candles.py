"""Event-time candles: against a from-scratch computation, lateness, determinism, state."""

from __future__ import annotations

import json
from dataclasses import astuple, dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.candles import (
    LATE_FOR_CANDLE,
    Candle,
    CandleParams,
    CandleSettings,
    advance,
    apply,
    decode_book,
    encode_book,
    new_book,
    timeframe_ns,
)
from app.wire.codec import decode_candle, encode_candle

S = 1_000_000_000
MS = 1_000_000
BASE = 1_764_547_200 * S  # 2025-12-01 00:00:00 UTC, a multiple of every timeframe used


@dataclass
class T:
    """Minimal tick (the book needs symbol, bid, ask, event time)."""

    event_time_ns: int
    bid: int
    ask: int
    symbol: str = "EURUSD"


def params(delay_ms: int = 0, lateness_ms: int = 2000, tfs=("1s", "3s", "1m")) -> CandleParams:
    return CandleParams.from_settings(
        CandleSettings(
            timeframes=list(tfs), watermark_delay_ms=delay_ms, allowed_lateness_ms=lateness_ms
        )
    )


# --- the independent computation ---------------------------------------------------------


def aggregate(name: str, size: int, start: int, rows: list[tuple[int, int, T]], rev: int):
    """OHLC of a window's ticks by sorting them: (event time, arrival) order."""
    rows = sorted(rows)
    ticks = [tk for _, _, tk in rows]
    mids = [tk.bid + tk.ask for tk in ticks]
    return Candle(
        symbol="EURUSD",
        source="src",
        timeframe=name,
        start_ns=start,
        end_ns=start + size,
        bid_open=ticks[0].bid,
        bid_high=max(tk.bid for tk in ticks),
        bid_low=min(tk.bid for tk in ticks),
        bid_close=ticks[-1].bid,
        ask_open=ticks[0].ask,
        ask_high=max(tk.ask for tk in ticks),
        ask_low=min(tk.ask for tk in ticks),
        ask_close=ticks[-1].ask,
        mid2_open=mids[0],
        mid2_high=max(mids),
        mid2_low=min(mids),
        mid2_close=mids[-1],
        tick_count=len(ticks),
        first_event_ns=ticks[0].event_time_ns,
        last_event_ns=ticks[-1].event_time_ns,
        revision=rev,
    )


def reference(ticks: list[T], p: CandleParams):
    """The rules of the module docstring, recomputing every candle from its tick list."""
    wm = None
    members: dict[tuple[str, int], list[tuple[int, int, T]]] = {}
    revision: dict[tuple[str, int], int] = {}
    out: list[Candle] = []
    rejects: list[tuple[int, str]] = []
    sizes = dict(p.timeframes)
    for i, tk in enumerate(ticks):
        t = tk.event_time_ns
        for name, size in p.timeframes:
            start = (t // size) * size
            if wm is not None and start + size + p.lateness_ns <= wm:
                rejects.append((i, name))
                continue
            members.setdefault((name, start), []).append((t, i, tk))
            if wm is not None and start + size <= wm:
                revision[(name, start)] = revision.get((name, start), -1) + 1
                out.append(
                    aggregate(name, size, start, members[(name, start)], revision[(name, start)])
                )
        if wm is None or t - p.delay_ns > wm:
            wm = t - p.delay_ns
            for name, _ in p.timeframes:
                for key in sorted(k for k in members if k[0] == name):
                    start = key[1]
                    if start + sizes[name] <= wm and key not in revision:
                        revision[key] = 0
                        out.append(aggregate(name, sizes[name], start, members[key], 0))
    return out, rejects


# --- strategies ----------------------------------------------------------------------------

ticks_st = st.lists(
    st.tuples(
        st.integers(-3000 * MS, 1500 * MS),  # step from the previous tick: jitter backwards too
        st.integers(1_000_000_000, 1_000_100_000),
        st.integers(0, 30_000),
    ),
    min_size=1,
    max_size=120,
).map(
    lambda rows: _build(rows),
)


def _build(rows) -> list[T]:
    out, t = [], BASE + 5 * S
    for step, bid, spread in rows:
        t = max(BASE, t + step)
        out.append(T(t, bid, bid + spread))
    return out


params_st = st.builds(
    params,
    delay_ms=st.sampled_from([0, 300, 2000]),
    lateness_ms=st.sampled_from([0, 1000, 5000]),
)


def run(ticks, p, book=None):
    book = book or new_book("src", "EURUSD")
    candles, rejects = apply(book, ticks, p)
    return book, candles, rejects


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(ticks=ticks_st, p=params_st)
def test_emissions_match_a_from_scratch_computation(ticks, p):
    book, candles, rejects = run(ticks, p)
    want, want_rejects = reference(ticks, p)
    assert candles == want
    assert [(r.event_time_ns, r.timeframe) for r in rejects] == [
        (ticks[i].event_time_ns, name) for i, name in want_rejects
    ]
    assert all(r.reason == LATE_FOR_CANDLE for r in rejects)
    for name, _ in p.timeframes:
        assert book.rejected.get(name, 0) == sum(1 for _, n in want_rejects if n == name)


@settings(max_examples=100, deadline=None)
@given(ticks=ticks_st)
def test_without_late_ticks_final_candles_are_plain_groupby(ticks):
    """Nothing is late when the lateness exceeds the whole span: after a flush the last
    revision of every window is the OHLC of all its ticks (the Dukascopy import check)."""
    p = params(delay_ms=0, lateness_ms=10**9)
    book, candles, rejects = run(ticks, p)
    candles += advance(book, 2**62, p)
    assert rejects == []
    last: dict[tuple[str, int], Candle] = {}
    for c in candles:
        prev = last.get((c.timeframe, c.start_ns))
        assert c.revision == (prev.revision + 1 if prev else 0)  # revisions count up by one
        last[(c.timeframe, c.start_ns)] = c
    groups: dict[tuple[str, int], list] = {}
    for i, tk in enumerate(ticks):
        for name, size in p.timeframes:
            start = tk.event_time_ns - tk.event_time_ns % size
            groups.setdefault((name, start), []).append((tk.event_time_ns, i, tk))
    sizes = dict(p.timeframes)
    assert set(last) == set(groups)
    for key, rows in groups.items():
        want = aggregate(key[0], sizes[key[0]], key[1], rows, last[key].revision)
        assert last[key] == want
    assert book.windows == {name: {} for name, _ in p.timeframes}


@settings(max_examples=100, deadline=None)
@given(ticks=ticks_st, p=params_st, data=st.data())
def test_split_and_restored_state_gives_the_same_output(ticks, p, data):
    cut = data.draw(st.integers(0, len(ticks)))
    _, whole, whole_rejects = run(ticks, p)
    book, first, first_rejects = run(ticks[:cut], p)
    stored = json.dumps(encode_book(book))
    restored = decode_book(json.loads(stored), p)
    assert encode_book(restored) == encode_book(book)
    _, second, second_rejects = run(ticks[cut:], p, restored)
    assert first + second == whole
    assert first_rejects + second_rejects == whole_rejects


@settings(max_examples=50, deadline=None)
@given(ticks=ticks_st, p=params_st)
def test_replay_gives_byte_identical_candles(ticks, p):
    def wire(ts):
        book, candles, _ = run(ts, p)
        candles += advance(book, 2**62, p)
        return b"".join(encode_candle(c) for c in candles), json.dumps(encode_book(book))

    copies = [T(tk.event_time_ns, tk.bid, tk.ask) for tk in ticks]
    assert wire(ticks) == wire(copies)


# --- explicit behaviour --------------------------------------------------------------------


def test_emit_once_revise_late_then_reject():
    p = params(delay_ms=0, lateness_ms=2000, tfs=("1s",))
    book = new_book("src", "EURUSD")

    def feed(sec: float, bid: int):
        return apply(book, [T(BASE + round(sec * S), bid, bid + 10)], p)

    assert feed(0.1, 100) == ([], [])
    assert feed(0.5, 105) == ([], [])
    (c,), _ = feed(1.2, 101)  # watermark 1.2 passes [0, 1): emitted once
    assert (c.start_ns - BASE, c.revision, c.tick_count, c.bid_open, c.bid_close) == (
        0,
        0,
        2,
        100,
        105,
    )
    assert (c.bid_high, c.bid_low, c.mid2_open) == (105, 100, 210)
    (c,), _ = feed(0.7, 99)  # late but inside the lateness: revision 1, new low and close
    assert (c.revision, c.tick_count, c.bid_low, c.bid_close, c.bid_open) == (1, 3, 99, 99, 100)
    (c,), _ = feed(3.5, 110)  # [1, 2) emitted; [0, 1) is final (1 + 2 <= 3.5) and dropped
    assert (c.start_ns - BASE, c.revision) == (S, 0)
    assert sorted(book.windows["1s"]) == [BASE + S, BASE + 3 * S]
    candles, (rej,) = feed(0.9, 98)  # too late for [0, 1)
    assert candles == []
    assert (rej.reason, rej.timeframe, rej.watermark_ns) == (
        LATE_FOR_CANDLE,
        "1s",
        BASE + 3500 * MS,
    )
    assert book.rejected == {"1s": 1}
    (c,), _ = feed(1.9, 120)  # [1, 2) still revisable (2 + 2 > 3.5)
    assert (c.start_ns - BASE, c.revision, c.tick_count, c.bid_close) == (S, 1, 2, 120)
    (c,), _ = feed(2.5, 130)  # an empty window already past the watermark: first emission
    assert (c.start_ns - BASE, c.revision, c.tick_count) == (2 * S, 0, 1)


def test_watermark_delay_holds_the_first_emission():
    p = params(delay_ms=1000, lateness_ms=0, tfs=("1s",))
    book = new_book("src", "EURUSD")
    assert apply(book, [T(BASE + 1200 * MS, 1, 2)], p) == ([], [])  # watermark 0.2 s
    candles, _ = apply(book, [T(BASE + 300 * MS, 1, 2)], p)  # out of order but not late
    assert candles == []
    candles, _ = apply(book, [T(BASE + 2000 * MS, 1, 2)], p)  # watermark 1.0 s
    assert [(c.start_ns - BASE, c.tick_count) for c in candles] == [(0, 1)]
    _, rejects = apply(book, [T(BASE + 900 * MS, 1, 2)], p)  # lateness 0: final at once
    assert [r.timeframe for r in rejects] == ["1s"]


def test_rejects_are_per_timeframe():
    """A tick too late for its 1 s candle still belongs to the open 1 m candle."""
    p = params(delay_ms=0, lateness_ms=0, tfs=("1s", "1m"))
    book = new_book("src", "EURUSD")
    apply(book, [T(BASE + 5 * S, 1, 2)], p)
    candles, rejects = apply(book, [T(BASE + 1 * S, 3, 4)], p)
    assert [r.timeframe for r in rejects] == ["1s"]
    assert candles == []
    one_s, one_m = advance(book, BASE + 60 * S, p)
    assert (one_s.start_ns, one_s.tick_count) == (BASE + 5 * S, 1)
    assert (one_m.timeframe, one_m.tick_count, one_m.bid_open, one_m.bid_close) == ("1m", 2, 3, 1)


def test_ties_on_event_time_keep_arrival_order():
    p = params(tfs=("1s",))
    book = new_book("src", "EURUSD")
    apply(book, [T(BASE, 5, 6), T(BASE, 7, 8), T(BASE, 1, 2)], p)
    (c,) = advance(book, BASE + S, p)
    assert (c.bid_open, c.bid_close, c.tick_count) == (5, 1, 3)


def test_book_refuses_another_symbol():
    with pytest.raises(ValueError, match="GBPUSD"):
        apply(new_book("src", "EURUSD"), [T(BASE, 1, 2, symbol="GBPUSD")], params())


def test_decode_drops_timeframes_no_longer_configured():
    p = params(tfs=("1s", "1m"))
    book = new_book("src", "EURUSD")
    apply(book, [T(BASE, 1, 2)], p)
    restored = decode_book(encode_book(book), params(tfs=("1m",)))
    assert set(restored.windows) == {"1m"}
    with pytest.raises(ValueError, match="version"):
        decode_book({**encode_book(book), "v": 99})


def test_settings_and_timeframes():
    assert timeframe_ns("5m") == 300 * S
    assert CandleParams.from_settings(CandleSettings()) == CandleParams()
    for bad in (["1x"], [], ["1s", "1s"], ["0s"]):
        with pytest.raises(ValueError):
            CandleSettings(timeframes=bad)
    with pytest.raises(ValueError):
        CandleSettings(unknown=1)


def test_candle_protobuf_round_trip():
    p = params(tfs=("1m",))
    book = new_book("ic_markets", "EURUSD")
    apply(book, [T(BASE + S, 1_085_000_000, 1_085_020_000), T(BASE + 2 * S, 1, 3)], p)
    (c,) = advance(book, BASE + 60 * S, p)
    assert decode_candle(encode_candle(c)) == c
    assert c.key == "EURUSD:1m"
    assert astuple(c)[:3] == ("EURUSD", "ic_markets", "1m")


@settings(max_examples=20, deadline=None)
@given(
    records=st.lists(
        st.tuples(
            # minute edges and repeated times as well as anywhere in the hour
            st.one_of(st.integers(0, 3_599_999), st.sampled_from([0, 59_999, 60_000, 3_599_999])),
            st.integers(108_000, 108_100),
            st.integers(0, 30),
        ),
        min_size=1,
        max_size=300,
    )
)
def test_dukascopy_hour_candles_match_the_records(records):
    """A .bi5 hour through the importer's decoder and the candles, against OHLC computed
    straight from the file's integer records (points; EURUSD: 1 point = 1e-5)."""
    from datetime import UTC, datetime

    from app.sources.dukascopy.bi5 import decode_bi5, encode_bi5

    records = sorted(records, key=lambda r: r[0])  # a .bi5 file is in time order
    rows = [(ms, bid + spread, bid, 1.0, 1.0) for ms, bid, spread in records]
    hour = datetime(2025, 12, 1, 0, tzinfo=UTC)
    ticks = decode_bi5(encode_bi5(rows), "EURUSD", hour)
    p = params(lateness_ms=0, tfs=("1m", "1h"))
    book = new_book("dukascopy", "EURUSD")
    candles, rejects = apply(book, ticks, p)
    candles += advance(book, BASE + 2 * 3600 * S, p)  # end of the import: flush
    assert rejects == []
    assert all(c.revision == 0 for c in candles)
    got = {(c.timeframe, (c.start_ns - BASE) // (60 * S)): c for c in candles}
    minutes: dict[tuple[str, int], list] = {}
    for ms, ask, bid, _, _ in rows:
        minutes.setdefault(("1m", ms // 60_000), []).append((ms, bid, ask))
        minutes.setdefault(("1h", 0), []).append((ms, bid, ask))
    assert set(got) == set(minutes)
    point = 10_000  # 1e9 / 1e5
    for key, group in minutes.items():
        c = got[key]
        bids = [b * point for _, b, _ in group]
        asks = [a * point for _, _, a in group]
        assert (c.bid_open, c.bid_high, c.bid_low, c.bid_close) == (
            bids[0],
            max(bids),
            min(bids),
            bids[-1],
        )
        assert (c.ask_open, c.ask_high, c.ask_low, c.ask_close) == (
            asks[0],
            max(asks),
            min(asks),
            asks[-1],
        )
        assert c.mid2_high == max(b + a for b, a in zip(bids, asks, strict=True))
        assert c.tick_count == len(group)
        assert c.first_event_ns == BASE + group[0][0] * MS
        assert c.last_event_ns == BASE + group[-1][0] * MS
