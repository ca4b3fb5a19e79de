"""The MT5 client's pure parts: price rounding, server time, the tick cursor, settings."""

from __future__ import annotations

import bisect
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.settings import ConfigError, Settings, load_settings
from app.sources.brokers.mt5 import (
    Mt5BrokerSettings,
    ServerTime,
    TickCursor,
    derive_offset_ms,
    price_units,
)

H = 3_600_000


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("value", "digits", "units"),
    [
        (1.0851199999999999, 5, 1_085_120_000),
        (1.08512, 5, 1_085_120_000),
        (1.0851200000000001, 5, 1_085_120_000),
        (157.31199999999998, 3, 157_312_000_000),
        (2650.1499999999996, 2, 2_650_150_000_000),
        (0.6, 5, 600_000_000),
    ],
)
def test_prices_round_to_digits_before_fixed_point(value: float, digits: int, units: int) -> None:
    assert price_units(value, digits) == units


@given(st.integers(1, 10**7), st.sampled_from([2, 3, 5]), st.integers(-4, 4))
def test_any_decimal_price_survives_a_few_ulps_of_noise(units: int, digits: int, ulps: int) -> None:
    value = units / 10**digits
    for _ in range(abs(ulps)):
        value = math.nextafter(value, math.inf if ulps > 0 else -math.inf)
    assert price_units(value, digits) == units * 10 ** (9 - digits)


def test_nan_is_not_a_price() -> None:
    with pytest.raises(ValueError):
        price_units(math.nan, 5)


def test_server_time_athens_both_dst_changes() -> None:
    st_ = ServerTime("Europe/Athens")
    # 29 March 2026: 03:00 EET -> 04:00 EEST at 01:00 UTC.
    assert (
        st_.to_utc_ns(ms(2026, 3, 29, 2, 59, 59) + 999)
        == (ms(2026, 3, 29, 0, 59, 59) + 999) * 10**6
    )
    assert st_.to_utc_ns(ms(2026, 3, 29, 4, 0, 0)) == ms(2026, 3, 29, 1, 0, 0) * 10**6
    # 25 October 2026: 04:00 EEST -> 03:00 EET at 01:00 UTC; 03:30 happens twice.
    first = st_.to_utc_ns(ms(2026, 10, 25, 3, 30))
    assert first == ms(2026, 10, 25, 0, 30) * 10**6
    after_first = st_.to_utc_ns(ms(2026, 10, 25, 3, 59, 59), first)
    assert after_first == ms(2026, 10, 25, 0, 59, 59) * 10**6
    # The second 03:30, read after a tick at the first pass's 03:59:59: one hour later.
    second = st_.to_utc_ns(ms(2026, 10, 25, 3, 30), after_first)
    assert second == ms(2026, 10, 25, 1, 30) * 10**6
    assert st_.to_utc_ns(ms(2026, 10, 25, 4, 0, 1)) == ms(2026, 10, 25, 2, 0, 1) * 10**6


def test_server_time_new_york_close() -> None:
    st_ = ServerTime("America/New_York", 7)
    # US DST from 8 March 2026 07:00 UTC: UTC+2 before, UTC+3 after.
    assert st_.to_utc_ns(ms(2026, 3, 8, 8, 59, 59)) == ms(2026, 3, 8, 6, 59, 59) * 10**6
    assert st_.to_utc_ns(ms(2026, 3, 8, 10, 0, 0)) == ms(2026, 3, 8, 7, 0, 0) * 10**6
    # EU already on summer time, US not yet (the weeks a Europe/Athens setting is wrong).
    assert st_.to_utc_ns(ms(2026, 3, 6, 12)) == ms(2026, 3, 6, 10) * 10**6


def test_derived_offset() -> None:
    now = ms(2026, 6, 1, 12)
    assert derive_offset_ms(now + 3 * H + 1500, now) == 3 * H
    assert derive_offset_ms(now + 2 * H - 40_000, now) == 2 * H
    assert derive_offset_ms(now + 3 * H - 7 * 60_000, now) is None  # a stale tick
    st_ = ServerTime(None)
    with pytest.raises(ValueError):
        st_.to_utc_ns(now)
    st_.set_offset(3 * H)
    assert st_.to_utc_ns(now + 3 * H) == now * 10**6


def copy_ticks_from(history: list[int], from_msc: int, count: int) -> list[int]:
    """MT5's contract: ticks with time_msc >= from, oldest first, at most `count`."""
    start = bisect.bisect_left(history, from_msc)
    return history[start : start + count]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=30), min_size=1, max_size=8),
    st.integers(1, 6),
)
def test_cursor_takes_every_tick_once(arrivals: list[list[int]], batch: int) -> None:
    """Ticks arrive in bursts (gaps of 0 ms are ticks in the same millisecond); after each
    burst the client polls in batches. Ids tell equal times apart."""
    history: list[int] = [1000]
    ids: list[int] = [0]
    cursor = TickCursor(1000)
    taken: list[int] = []
    for burst in arrivals:
        for gap in burst:
            history.append(history[-1] + gap)
            ids.append(len(ids))
        count = batch
        for _ in range(1000):
            start = bisect.bisect_left(history, cursor.last_msc)
            rows = copy_ticks_from(history, cursor.last_msc, count)
            fresh = cursor.fresh(rows)
            taken.extend(ids[start + i] for i in fresh)
            if len(rows) < count:
                break
            count = batch if fresh else count * 2
        else:
            raise AssertionError("polling makes no progress")
    assert taken == ids


def test_cursor_with_a_terminal_that_rounds_from_down_to_seconds() -> None:
    history = [1_000, 1_500, 1_999, 1_999, 2_000, 2_400]
    cursor = TickCursor(1_999, taken_at_last=1)
    rows = copy_ticks_from(history, 1_000, 10)  # from rounded down to the second
    assert [rows[i] for i in cursor.fresh(rows)] == [1_999, 2_000, 2_400]


def test_mt5_settings_in_the_service_config(tmp_path) -> None:
    path = tmp_path / "service.yaml"
    path.write_text(
        "brokers:\n"
        "  ic_markets_mt5:\n"
        "    kind: mt5\n"
        "    login: 51000001\n"
        "    password_env: MT5_PASSWORD_IC_MARKETS\n"
        "    server: ICMarketsSC-Demo\n"
        "    server_timezone: America/New_York\n"
        "    server_time_shift_hours: 7\n"
        "    symbols: [EURUSD]\n"
        "    priority: 1\n"
        "  oanda:\n"
        "    stream_url: http://127.0.0.1:8090/oanda\n"
        "    account: a\n"
        "    token_env: T\n"
        "    symbols: [EURUSD]\n"
        "    priority: 2\n"
    )
    loaded = load_settings(path, {})
    assert isinstance(loaded.brokers["ic_markets_mt5"], Mt5BrokerSettings)
    assert loaded.brokers["ic_markets_mt5"].health_interval_s == 30
    assert loaded.brokers["oanda"].kind == "oanda_v20"
    path.write_text(path.read_text().replace("America/New_York", "America/Nowhere"))
    with pytest.raises(ConfigError, match="server_timezone"):
        load_settings(path, {})


def test_unknown_broker_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="mt4"):
        Settings.model_validate({"brokers": {"x": {"kind": "mt4"}}})
