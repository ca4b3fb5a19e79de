"""Market hours at run time: the `ingest_market_open{asset_class}` gauge and /health section.

The gauge gates the "no ticks during market hours" alert (deploy/prometheus/alerts.yml), so
a closed FX market on a weekend raises nothing. It is set for every asset class of the
configured instruments from the wall clock here, at start-up and every 15 s; the pipeline
itself never reads a clock (quality uses the ticks' event times with the same calendars).
/health has no stale-feed check of its own: the `market_hours` section says which markets
are closed, so a feed that is quiet while its market is closed is read as expected.
"""

from __future__ import annotations

import time
from typing import Any

from app.core.market_hours import MarketHours
from app.ops.metrics import MARKET_OPEN
from app.ops.runtime import health
from app.pipeline.faust_app import app, settings

HOURS = MarketHours(settings.market_hours)
REFRESH_S = 15.0


def asset_classes() -> list[str]:
    """Asset classes of the configured instruments that have a calendar."""
    known = settings.market_hours.asset_classes.keys() | settings.market_hours.calendars.keys()
    return sorted({i.asset_class for i in settings.instruments.values()} & known)


def market_state(now_ns: int) -> dict[str, dict[str, Any]]:
    """Per asset class: open now, and when it next opens (None if open or not within 14 d)."""
    out = {}
    for asset_class in asset_classes():
        is_open = HOURS.is_open(asset_class, now_ns)
        out[asset_class] = {
            "open": is_open,
            "next_open_ns": None if is_open else HOURS.next_open_ns(asset_class, now_ns),
        }
    return out


def set_gauge(now_ns: int) -> dict[str, dict[str, Any]]:
    state = market_state(now_ns)
    for asset_class, s in state.items():
        MARKET_OPEN.labels(asset_class).set(1.0 if s["open"] else 0.0)
    return state


@app.timer(REFRESH_S, on_leader=False)
async def refresh_market_open() -> None:
    """Every worker exports the gauge (the alert takes the max per asset class)."""
    set_gauge(time.time_ns())


set_gauge(time.time_ns())  # at import, so the series exist from the first scrape
health.add_section("market_hours", lambda: market_state(time.time_ns()))
