"""The tick rules, one by one, on exact integers; limits from layered config."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.models import NS_PER_MS, Tick, parse_price
from app.core.reasons import (
    CROSSED_QUOTE,
    DUPLICATE,
    FUTURE_DATED,
    NON_POSITIVE_PRICE,
    OUT_OF_ORDER,
    PRICE_JUMP,
    SPREAD_TOO_WIDE,
    STALE,
    TOO_FREQUENT,
)
from app.core.state import Quote
from app.core.validation import (
    Limits,
    LimitsBook,
    resolve_limits,
    validate_tick,
)
from app.settings import Settings, load_settings

T0 = 1_796_029_200_000_000_000
EURUSD = Limits(
    pip=100_000,
    max_spread=500_000,  # 5 pips
    max_move_ppm=20_000,  # 2 %
    min_interval_ns=0,
    max_stale_ns=5000 * NS_PER_MS,
    max_future_ns=2000 * NS_PER_MS,
)


def tick(bid: str, ask: str, event: int = T0, receive: int | None = None) -> Tick:
    return Tick(
        "EURUSD",
        "ic_markets",
        parse_price(bid),
        parse_price(ask),
        1e6,
        1e6,
        event,
        event + 5 * NS_PER_MS if receive is None else receive,
    )


def last(t: Tick) -> Quote:
    return Quote.of(t)


def test_a_normal_tick_passes():
    assert validate_tick(tick("1.10000", "1.10010"), None, 0, EURUSD) == []


def test_spread_limit_is_in_pips_and_inclusive():
    assert validate_tick(tick("1.10000", "1.10050"), None, 0, EURUSD) == []
    assert validate_tick(tick("1.10000", "1.100501"), None, 0, EURUSD) == [SPREAD_TOO_WIDE]


@pytest.mark.parametrize(("bid", "ask"), [("1.10010", "1.10000"), ("1.10000", "1.10000")])
def test_crossed_or_locked_quote(bid: str, ask: str):
    assert validate_tick(tick(bid, ask), None, 0, EURUSD) == [CROSSED_QUOTE]


def test_zero_price():
    assert NON_POSITIVE_PRICE in validate_tick(tick("0", "1.1"), None, 0, EURUSD)


def test_price_jump_against_last_valid_price():
    prev = tick("1.10000", "1.10010")
    up_1_9 = tick("1.12090", "1.12100", T0 + NS_PER_MS)
    up_2_1 = tick("1.12320", "1.12330", T0 + NS_PER_MS)
    assert validate_tick(up_1_9, last(prev), 0, EURUSD) == []
    assert validate_tick(up_2_1, last(prev), 0, EURUSD) == [PRICE_JUMP]
    down = tick("1.07600", "1.07610", T0 + NS_PER_MS)
    assert validate_tick(down, last(prev), 0, EURUSD) == [PRICE_JUMP]


def test_duplicate_same_event_time_and_prices():
    prev = tick("1.10000", "1.10010")
    assert validate_tick(tick("1.10000", "1.10010"), last(prev), 0, EURUSD) == [DUPLICATE]
    # same time, other prices: an update, not a duplicate
    assert validate_tick(tick("1.10001", "1.10010"), last(prev), 0, EURUSD) == []


def test_out_of_order():
    prev = tick("1.10000", "1.10010", T0 + 10)
    assert validate_tick(tick("1.10001", "1.10011", T0), last(prev), 0, EURUSD) == [OUT_OF_ORDER]


def test_too_frequent_only_when_configured():
    prev = tick("1.10000", "1.10010")
    soon = tick("1.10001", "1.10011", T0 + 40 * NS_PER_MS)
    assert validate_tick(soon, last(prev), 0, EURUSD) == []
    limits = Limits(**{**_fields(EURUSD), "min_interval_ns": 50 * NS_PER_MS})
    assert validate_tick(soon, last(prev), 0, limits) == [TOO_FREQUENT]
    later = tick("1.10001", "1.10011", T0 + 50 * NS_PER_MS)
    assert validate_tick(later, last(prev), 0, limits) == []


def _fields(limits: Limits) -> dict:
    return {name: getattr(limits, name) for name in Limits.__slots__}


def test_stale_against_broker_newest_event_time():
    newest = T0 + 5000 * NS_PER_MS
    assert validate_tick(tick("1.1", "1.1001", T0), None, newest, EURUSD) == []
    assert validate_tick(tick("1.1", "1.1001", T0 - 1), None, newest, EURUSD) == [STALE]


def test_future_dated_against_receive_time():
    ok = tick("1.1", "1.1001", T0 + 2000 * NS_PER_MS, receive=T0)
    bad = tick("1.1", "1.1001", T0 + 2000 * NS_PER_MS + 1, receive=T0)
    assert validate_tick(ok, None, 0, EURUSD) == []
    assert validate_tick(bad, None, 0, EURUSD) == [FUTURE_DATED]


def test_all_reasons_are_reported_together():
    prev = tick("1.10000", "1.10010", T0 + 10)
    bad = tick("1.30000", "1.20000", T0, receive=T0 - 10_000 * NS_PER_MS)
    reasons = validate_tick(bad, last(prev), T0 + 10_000 * NS_PER_MS, EURUSD)
    assert reasons == [CROSSED_QUOTE, FUTURE_DATED, STALE, OUT_OF_ORDER, PRICE_JUMP]


@given(
    bid=st.integers(1, 10**12),
    spread=st.integers(1, 2_000_000),
    move=st.integers(-(10**9), 10**9),
)
def test_spread_and_jump_match_exact_arithmetic(bid: int, spread: int, move: int):
    base = Tick("EURUSD", "b", bid, bid + spread, 0.0, 0.0, T0, T0)
    new = Tick("EURUSD", "b", bid + move, bid + move + spread, 0.0, 0.0, T0 + 1, T0 + 1)
    reasons = validate_tick(
        new, Quote(T0, base.bid, base.ask, 0.0, 0.0, T0, "", -1, -1, 0), 0, EURUSD
    )
    assert (SPREAD_TOO_WIDE in reasons) == (spread > 500_000)
    if bid + move > 0:
        # |mid move| / mid > 2 %, in exact rationals
        jump = abs(2 * move) * 100 > 2 * (2 * bid + spread)
        assert (PRICE_JUMP in reasons) == jump


def test_limits_are_layered_and_pip_aware():
    settings = load_settings()
    eur = resolve_limits(settings, "EURUSD")
    jpy = resolve_limits(settings, "USDJPY")
    gbpjpy = resolve_limits(settings, "GBPJPY")
    gold = resolve_limits(settings, "XAUUSD")
    assert eur is not None and jpy is not None and gbpjpy is not None and gold is not None
    assert eur.pip == 100_000 and eur.max_spread == 500_000  # 5 pips of 0.0001
    assert jpy.pip == 10_000_000 and jpy.max_spread == 80_000_000  # fx_jpy: 8 pips of 0.01
    assert gbpjpy.max_spread == 120_000_000  # symbol layer: 12 pips
    assert gold.max_move_ppm == 30_000  # metal: 3 %
    assert eur.max_stale_ns == 5000 * NS_PER_MS


def test_unknown_instrument_has_no_limits():
    book = LimitsBook(load_settings())
    assert book.get("FOOBAR") is None
    assert book.get("EURUSD") is book.get("EURUSD")  # resolved once


def test_missing_default_limit_is_an_error():
    settings = Settings.model_validate(
        {
            "instruments": {"EURUSD": {"asset_class": "fx_major", "pip": "0.0001", "decimals": 5}},
            "validation": {"defaults": {"max_spread_pips": 5}},
        }
    )
    with pytest.raises(ValueError, match="max_move_pct"):
        resolve_limits(settings, "EURUSD")
