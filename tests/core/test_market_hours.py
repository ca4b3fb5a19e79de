"""Market hours: weekends, US and EU DST changes, holidays, metals' break, crypto."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.core.market_hours import (
    CalendarSettings,
    Holiday,
    MarketHours,
    MarketHoursSettings,
    WeeklySession,
)

S = 1_000_000_000
H = 3600 * S
NY = ZoneInfo("America/New_York")


def utc(text: str) -> int:
    """ "2026-03-06 22:00" (UTC) -> epoch ns."""
    moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(moment.timestamp()) * S


LONDON_INDEX = CalendarSettings(
    timezone="Europe/London",
    sessions=[
        WeeklySession(open=f"{d} 08:00", close=f"{d} 16:30")
        for d in ("Mon", "Tue", "Wed", "Thu", "Fri")
    ],
)
HOLIDAYS = [
    Holiday(date="2026-12-24", closed_from="13:00"),  # early close (New York time)
    Holiday(date="2026-12-25"),  # closed all day
    Holiday(date="2027-01-01", closed_until="17:00"),
]


@pytest.fixture(scope="module")
def hours() -> MarketHours:
    base = MarketHoursSettings()
    fx = base.calendars["fx"].model_copy(update={"holidays": HOLIDAYS})
    calendars = {**base.calendars, "fx": fx, "uk_index": LONDON_INDEX}
    return MarketHours(
        MarketHoursSettings(
            calendars=calendars, asset_classes={**base.asset_classes, "index": "uk_index"}
        )
    )


def test_fx_weekend_closes_and_reopens_at_new_york_17(hours):
    # Fri 2026-03-06: New York on EST (UTC-5): close 22:00 UTC.
    assert hours.is_open("fx_major", utc("2026-03-06 21:59:59"))
    assert not hours.is_open("fx_major", utc("2026-03-06 22:00"))
    assert not hours.is_open("fx_major", utc("2026-03-07 12:00"))
    # Sun 2026-03-08: the US moved to EDT (UTC-4) at 02:00 local: reopen 21:00 UTC.
    assert not hours.is_open("fx_major", utc("2026-03-08 20:59:59"))
    assert hours.is_open("fx_major", utc("2026-03-08 21:00"))
    # Fri 12:00 UTC -> Mon 00:00 UTC: 10 h on Friday + 3 h on Sunday evening.
    span = (utc("2026-03-06 12:00"), utc("2026-03-09 00:00"))
    assert hours.open_ns_between("fx_major", *span) == 13 * H
    assert hours.open_seconds_between("fx_jpy", *span) == 13 * 3600.0
    assert hours.next_open_ns("fx_cross", utc("2026-03-07 00:00")) == utc("2026-03-08 21:00")


def test_us_dst_end_moves_the_sunday_open_to_22_utc(hours):
    # EU clocks went back on 2026-10-25, US ones on 2026-11-01: on Friday 2026-10-30 New
    # York is still on EDT (close 21:00 UTC); it reopens on EST (22:00 UTC).
    assert not hours.is_open("fx_major", utc("2026-10-30 21:00"))
    assert hours.is_open("fx_major", utc("2026-10-30 20:59"))
    assert not hours.is_open("fx_major", utc("2026-11-01 21:30"))
    assert hours.is_open("fx_major", utc("2026-11-01 22:00"))
    assert (
        hours.market_gap_ns("fx_major", utc("2026-10-30 20:00"), utc("2026-11-02 00:00")) == 3 * H
    )


def test_eu_dst_moves_a_london_calendar_but_not_new_york(hours):
    # 2026-03-27 (Fri): London on GMT, index opens 08:00 UTC; 2026-03-30 (Mon): BST, 07:00 UTC.
    assert not hours.is_open("index", utc("2026-03-27 07:30"))
    assert hours.is_open("index", utc("2026-03-27 08:00"))
    assert hours.is_open("index", utc("2026-03-30 07:30"))
    assert not hours.is_open("index", utc("2026-03-30 15:30"))
    day = 8 * H + 30 * 60 * S
    assert (
        hours.open_ns_between("index", utc("2026-03-27 00:00"), utc("2026-03-31 00:00")) == 2 * day
    )
    # Sunday 2026-03-29 the EU changed: FX reopens at 21:00 UTC as it did on the 22nd.
    for sunday in ("2026-03-22", "2026-03-29"):
        assert not hours.is_open("fx_major", utc(f"{sunday} 20:59"))
        assert hours.is_open("fx_major", utc(f"{sunday} 21:00"))


def test_holidays_close_all_day_early_and_late(hours):
    # Thu 2026-12-24: early close 13:00 New York = 18:00 UTC.
    assert hours.is_open("fx_major", utc("2026-12-24 17:59"))
    assert not hours.is_open("fx_major", utc("2026-12-24 18:00"))
    assert not hours.is_open("fx_major", utc("2026-12-25 12:00"))
    # Fri 2026-12-25 closed, weekend closed, Sun 27 17:00 EST = 22:00 UTC reopens.
    span = (utc("2026-12-24 00:00"), utc("2026-12-28 00:00"))
    assert hours.open_ns_between("fx_major", *span) == 18 * H + 2 * H
    # Thu 2026-12-31 17:00 New York to midnight open (7 h); Fri 2027-01-01 closed until
    # 17:00, which is also the weekly close; Sun 2027-01-03 from 22:00 UTC (2 h).
    span = (utc("2026-12-31 22:00"), utc("2027-01-04 00:00"))
    assert hours.open_ns_between("fx_major", *span) == 7 * H + 2 * H
    # metals do not share the fx holiday list here
    assert hours.is_open("metal", utc("2026-12-25 12:00"))


def test_metals_daily_break(hours):
    # Tue 2026-06-16 17:30 EDT = 21:30 UTC: metals paused, FX trading.
    assert not hours.is_open("metal", utc("2026-06-16 21:30"))
    assert hours.is_open("fx_major", utc("2026-06-16 21:30"))
    assert hours.is_open("metal", utc("2026-06-16 22:00"))
    # Sunday: FX from 17:00, metals from 18:00 New York.
    assert hours.is_open("fx_major", utc("2026-06-14 21:30"))
    assert not hours.is_open("metal", utc("2026-06-14 21:30"))
    # Sun 00:00 -> Sun 00:00 UTC: FX 5 x 24 h; metals 5 h less (Sunday's first hour and
    # the Mon-Thu breaks; Friday's falls after the close).
    week = (utc("2026-06-14 00:00"), utc("2026-06-21 00:00"))
    assert hours.open_ns_between("fx_major", *week) == 120 * H
    assert hours.open_ns_between("metal", *week) == 115 * H


def test_crypto_is_always_open(hours):
    a, b = utc("2026-03-07 00:00"), utc("2026-03-09 00:00") + 123
    assert hours.is_open("crypto", a)
    assert hours.open_ns_between("crypto", a, b) == b - a
    assert hours.open_ns_between("crypto", b, a) == 0


def _fx_open_naive(t_ns: int, metal: bool) -> bool:
    """Straight from the rule: New York local time outside Fri 17:00 .. Sun 17:00."""
    local = datetime.fromtimestamp(t_ns // S, NY)
    minute = local.hour * 60 + local.minute
    wd = local.weekday()
    if wd == 5 or (wd == 4 and minute >= 17 * 60) or (wd == 6 and minute < 17 * 60):
        return False
    return not (metal and 17 * 60 <= minute < 18 * 60)


YEAR_2026 = (utc("2026-01-01 00:00") // (60 * S), utc("2027-01-01 00:00") // (60 * S))


@settings(max_examples=40, deadline=None)
@given(start=st.integers(*YEAR_2026), minutes=st.integers(0, 6 * 24 * 60), metal=st.booleans())
def test_open_time_equals_counting_open_minutes(start, minutes, metal):
    """Every boundary is on a whole minute, so counting open minutes is exact."""
    hours = MarketHours(MarketHoursSettings())
    a = start * 60 * S
    b = a + minutes * 60 * S
    expected = sum(60 * S for m in range(minutes) if _fx_open_naive(a + m * 60 * S, metal))
    asset = "metal" if metal else "fx_major"
    assert hours.open_ns_between(asset, a, b) == expected


@settings(max_examples=60, deadline=None)
@given(
    a=st.integers(utc("2026-01-01 00:00"), utc("2027-01-01 00:00")),
    d1=st.integers(0, 10 * 86400 * S),
    d2=st.integers(0, 10 * 86400 * S),
)
def test_open_time_is_additive_and_bounded(hours, a, d1, d2):
    for asset in ("fx_major", "metal", "index"):
        first = hours.open_ns_between(asset, a, a + d1)
        second = hours.open_ns_between(asset, a + d1, a + d1 + d2)
        assert first + second == hours.open_ns_between(asset, a, a + d1 + d2)
        assert 0 <= first <= d1
        if d1:
            assert hours.is_open(asset, a) == (hours.open_ns_between(asset, a, a + 1) == 1)


def test_config_is_loud():
    with pytest.raises(ValidationError, match="unknown time zone"):
        CalendarSettings(timezone="Mars/Olympus", always_open=True)
    with pytest.raises(ValidationError, match="sessions or always_open"):
        CalendarSettings()
    with pytest.raises(ValidationError, match="Sun 17:00"):
        WeeklySession(open="Sunday 5pm", close="Fri 17:00")
    with pytest.raises(ValidationError, match="unknown calendars"):
        MarketHoursSettings(asset_classes={"fx_major": "forex"})
    with pytest.raises(ValidationError, match="closed_from"):
        Holiday(date="2026-12-24", closed_from="18:00", closed_until="17:00")
    with pytest.raises(ValidationError):
        MarketHoursSettings(calendar={})
    with pytest.raises(KeyError, match="equity"):
        MarketHours(MarketHoursSettings()).is_open("equity", 0)


def test_settings_load_from_yaml_shape():
    """The YAML proposed for config/service.yaml (market_hours:) parses to the defaults."""
    import yaml

    text = """
calendars:
  fx:
    timezone: America/New_York
    sessions: [{open: "Sun 17:00", close: "Fri 17:00"}]
  metal:
    timezone: America/New_York
    sessions: [{open: "Sun 17:00", close: "Fri 17:00"}]
    daily_breaks: [{start: "17:00", end: "18:00"}]
  crypto: {always_open: true}
asset_classes: {fx_major: fx, fx_cross: fx, fx_jpy: fx, metal: metal, crypto: crypto}
"""
    assert MarketHoursSettings.model_validate(yaml.safe_load(text)) == MarketHoursSettings()
