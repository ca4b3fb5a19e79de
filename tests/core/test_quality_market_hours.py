"""Broker quality with market hours: closed time is neither a gap, nor missing, nor downtime.

Across an FX weekend (winter and both US DST changes) and a metals daily break, with the
calendars of config/service.yaml; a real outage inside open hours still counts; and the
processor hands each symbol's asset class to the quality rule.
"""

from __future__ import annotations

from datetime import UTC, datetime

from app.core.processor import SymbolState, TickProcessor
from app.core.quality import QualityParams, metrics, update_accepted
from app.core.state import BrokerStats
from app.settings import load_settings
from app.sources.brokers.registry import payload_parsers
from app.wire import codec

MS = 1_000_000
STEP_MS = 250  # the configured expected interval: a steady feed is complete
SETTINGS = load_settings()
PARAMS = QualityParams.from_settings(SETTINGS)
PIP = 100_000


def utc_ns(text: str) -> int:
    dt = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000


def steady(start: str, end: str) -> list[int]:
    """Event times every 250 ms in [start + 250 ms, end - 250 ms] (UTC ISO times)."""
    a, b = utc_ns(start), utc_ns(end)
    return list(range(a + STEP_MS * MS, b, STEP_MS * MS))


def feed(times: list[int], asset_class: str | None) -> BrokerStats:
    stats = None
    for t in times:
        stats = update_accepted(stats, t, t + 10 * MS, 100_000, PARAMS, asset_class)
    assert stats is not None
    return stats


def test_fx_weekend_in_winter_is_not_a_gap():
    # New York 17:00 EST = 22:00 UTC: Friday close and Sunday open
    times = steady("2026-12-04T21:50:00", "2026-12-04T22:00:00") + steady(
        "2026-12-06T22:00:00", "2026-12-06T22:10:00"
    )
    m = metrics(feed(times, "fx_major"), PIP)
    assert (m["gaps"], m["data_completeness"], m["uptime_percent"]) == (0, 100.0, 100.0)
    # the same ticks without a calendar: the weekend is one huge gap
    raw = metrics(feed(times, None), PIP)
    assert raw["gaps"] == 1 and raw["data_completeness"] < 1.0 and raw["uptime_percent"] < 1.0


def test_fx_weekend_when_new_york_moves_to_summer_time():
    # 2026-03-08: DST starts. Friday close 22:00 UTC (EST), Sunday open 21:00 UTC (EDT).
    friday = steady("2026-03-06T21:50:00", "2026-03-06T22:00:00")
    on_time = friday + steady("2026-03-08T21:00:00", "2026-03-08T21:10:00")
    m = metrics(feed(on_time, "fx_major"), PIP)
    assert (m["gaps"], m["data_completeness"], m["uptime_percent"]) == (0, 100.0, 100.0)
    # a broker that only comes back at 21:30 UTC missed the first 30 open minutes
    late = friday + steady("2026-03-08T21:29:59.750", "2026-03-08T21:40:00")
    stats = feed(late, "fx_major")
    open_ns = 250 * MS + 30 * 60 * 10**9  # Friday's last 250 ms + Sunday 21:00-21:30
    assert stats.gaps == 1
    assert stats.missing == open_ns // (STEP_MS * MS) - 1
    # with a fixed 22:00 UTC open (no DST) there would have been no gap at all


def test_fx_weekend_when_new_york_leaves_summer_time():
    # 2026-11-01: DST ends. Friday close 21:00 UTC (EDT), Sunday open 22:00 UTC (EST).
    times = steady("2026-10-30T20:50:00", "2026-10-30T21:00:00") + steady(
        "2026-11-01T22:00:00", "2026-11-01T22:10:00"
    )
    m = metrics(feed(times, "fx_major"), PIP)
    assert (m["gaps"], m["data_completeness"], m["uptime_percent"]) == (0, 100.0, 100.0)
    # an hour early on Sunday (21:00 UTC, still closed) and then silent until the open
    early = [
        *steady("2026-10-30T20:50:00", "2026-10-30T21:00:00"),
        utc_ns("2026-11-01T21:00:00.250"),
        *steady("2026-11-01T22:00:00", "2026-11-01T22:10:00"),
    ]
    assert feed(early, "fx_major").gaps == 0


def test_metals_daily_break_and_a_real_outage():
    # 17:00-18:00 New York (EST in December: 22:00-23:00 UTC) on a Tuesday
    times = steady("2026-12-08T21:50:00", "2026-12-08T22:00:00") + steady(
        "2026-12-08T23:00:00", "2026-12-08T23:10:00"
    )
    assert metrics(feed(times, "metal"), PIP)["gaps"] == 0
    assert metrics(feed(times, "fx_major"), PIP)["gaps"] == 1  # FX does not break daily
    # two silent minutes on an open Tuesday are still a gap
    outage = steady("2026-12-08T10:00:00", "2026-12-08T10:01:00") + steady(
        "2026-12-08T10:02:59.750", "2026-12-08T10:04:00"
    )
    stats = feed(outage, "fx_major")
    assert stats.gaps == 1
    assert stats.missing == (2 * 60 * 1000 + 250) // STEP_MS - 1


def test_processor_passes_the_asset_class():
    proc = TickProcessor(SETTINGS, payload_parsers(), ())
    state = SymbolState()
    times = steady("2026-12-04T21:59:00", "2026-12-04T22:00:00") + steady(
        "2026-12-06T22:00:00", "2026-12-06T22:01:00"
    )
    records = []
    for i, t in enumerate(times):
        bid = 1_100_000_000 + (i % 3) * 10_000
        tick = codec.MarketTick(
            symbol="EURUSD",
            source="ic_markets",
            bid_e9=bid,
            ask_e9=bid + 100_000,
            event_time_ns=t,
            receive_time_ns=t + 5 * MS,
        )
        records.append(
            codec.RawRecord(source="ic_markets", format="tick", receive_time_ns=t, tick=tick)
        )
    result = proc.process("EURUSD", records, "raw.broker.ticks", 0, 1, state, True)
    assert result.accepted == len(times), [r.reasons for r in result.rejected][:3]
    stats = state.quality["ic_markets"]
    assert (stats.accepted, stats.gaps, stats.missing) == (len(times), 0, 0)
