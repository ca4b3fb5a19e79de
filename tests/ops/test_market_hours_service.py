"""The ingest_market_open gauge and the /health market_hours section from the calendars."""

from __future__ import annotations

from datetime import UTC, datetime

from app.ops import market_hours_service as service
from app.ops.metrics import MARKET_OPEN


def ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 10**9


def gauge(asset_class: str) -> float:
    return MARKET_OPEN.labels(asset_class)._value.get()


def test_saturday_closes_fx_and_metals_until_sunday_evening_new_york():
    state = service.set_gauge(ns("2026-12-05T12:00:00"))
    assert set(state) == {"fx_major", "fx_cross", "fx_jpy", "metal"}  # the configured classes
    assert state["fx_major"] == {"open": False, "next_open_ns": ns("2026-12-06T22:00:00")}
    assert gauge("fx_major") == 0.0 and gauge("metal") == 0.0


def test_tuesday_open_and_the_metals_break():
    state = service.set_gauge(ns("2026-12-08T10:00:00"))
    assert all(s["open"] for s in state.values()) and gauge("fx_jpy") == 1.0
    state = service.set_gauge(ns("2026-12-08T22:30:00"))  # 17:30 New York (EST)
    assert state["metal"]["open"] is False and state["fx_major"]["open"] is True
    assert gauge("metal") == 0.0 and gauge("fx_major") == 1.0
