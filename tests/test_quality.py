"""Broker quality counters, metrics and the composite score / ranking."""

from __future__ import annotations

import pytest

from app.core.quality import (
    QualityParams,
    compare_brokers,
    metrics,
    score,
    update_accepted,
    update_rejected,
)
from app.core.state import BrokerStats
from app.settings import load_settings

MS = 1_000_000
T0 = 1_796_029_200_000_000_000
PIP = 100_000
PARAMS = QualityParams.from_settings(load_settings())  # 250 ms expected, gap factor 4, 3 s fresh


def feed(event_offsets_ms: list[int], latency_ms: int = 10, spread: int = 100_000) -> BrokerStats:
    stats = None
    for off in event_offsets_ms:
        event = T0 + off * MS
        stats = update_accepted(stats, event, event + latency_ms * MS, spread, PARAMS)
    assert stats is not None
    return stats


def test_regular_feed_is_complete_and_up():
    m = metrics(feed(list(range(0, 10_001, 250))), PIP)
    assert m["ticks"] == 41
    assert m["tick_frequency"] == pytest.approx(4.0)
    assert m["latency_ms"] == 10.0
    assert m["spread_avg"] == 1.0
    assert m["gaps"] == 0
    assert m["data_completeness"] == 100.0
    assert m["uptime_percent"] == 100.0
    assert m["reject_rate"] == 0.0


def test_gap_counts_missing_ticks_and_downtime():
    # 0, 250, then silence until 10_250: one gap of 10 s = 40 intervals -> 39 missing
    m = metrics(feed([0, 250, 10_250]), PIP)
    assert m["gaps"] == 1
    assert m["data_completeness"] == pytest.approx(100 * 3 / (3 + 39), abs=1e-3)
    # fresh: 250 ms + 3000 ms of 10_250 ms observed
    assert m["uptime_percent"] == pytest.approx(100 * 3250 / 10_250, abs=1e-3)


def test_pause_shorter_than_gap_factor_is_not_a_gap():
    assert metrics(feed([0, 1000]), PIP)["gaps"] == 0
    assert metrics(feed([0, 1001]), PIP)["gaps"] == 1


def test_latency_is_exponentially_weighted():
    stats = feed([0], latency_ms=10)
    update_accepted(stats, T0 + 250 * MS, T0 + 250 * MS + 110 * MS, PIP, PARAMS)
    assert metrics(stats, PIP)["latency_ms"] == pytest.approx(10 + PARAMS.alpha * 100)


def test_reject_rate():
    stats = feed([0, 250, 500])
    update_rejected(stats)
    assert metrics(stats, PIP)["reject_rate"] == 0.25


def test_score_prefers_low_latency_tight_spread_and_is_bounded():
    good = metrics(feed(list(range(0, 5001, 250)), latency_ms=5, spread=50_000), PIP)
    slow = metrics(feed(list(range(0, 5001, 250)), latency_ms=300, spread=50_000), PIP)
    wide = metrics(feed(list(range(0, 5001, 250)), latency_ms=5, spread=300_000), PIP)
    assert 0 <= score(wide, PARAMS) < score(good, PARAMS) <= 1
    assert score(slow, PARAMS) < score(good, PARAMS)
    perfect = {
        "latency_ms": 0.0,
        "spread_avg": 0.0,
        "uptime_percent": 100.0,
        "data_completeness": 100.0,
        "reject_rate": 0.0,
    }
    assert score(perfect, PARAMS) == 1.0


def test_compare_ranks_and_recommends():
    ticks = list(range(0, 5001, 250))
    stats = {
        "fxcm": feed(ticks, latency_ms=5, spread=50_000),
        "ic_markets": feed(ticks, latency_ms=80, spread=200_000),
        "pepperstone": feed(ticks, latency_ms=5, spread=50_000),
    }
    result = compare_brokers(
        "EURUSD", stats, PIP, {"ic_markets": 1, "pepperstone": 2, "fxcm": 3}, PARAMS
    )
    # fxcm and pepperstone score the same: priority breaks the tie
    assert result["ranking"] == ["pepperstone", "fxcm", "ic_markets"]
    assert result["best_broker"] == "pepperstone"
    assert result["recommendation"] == "Use pepperstone as primary source for EURUSD"
    assert set(result["metrics"]["fxcm"]) >= {
        "latency_ms",
        "spread_avg",
        "uptime_percent",
        "data_completeness",
        "tick_frequency",
        "score",
    }
