"""Broker quality per (broker, symbol): raw counters on the hot path, metrics on demand.

The hot path only adds to a short list of numbers (`update_accepted` / `update_rejected`);
turning them into the design document's metrics (latency, average spread, ticks/s,
completeness, uptime, reject rate) and a composite score happens when a view asks.
All times are event/receive times from the data, so a replay gives the same numbers.

- latency: receive time minus event time, exponentially weighted (alpha from config);
- completeness: an interval between two accepted ticks longer than gap_factor times the
  expected interval is a gap, and the ticks the expected rate would have given in it count
  as missing: received / (received + missing);
- uptime: of the observed time (first to last accepted tick), the part covered by a fresh
  quote (each interval counts up to the best-price max age);
- market hours: with a calendar for the symbol's asset class, an interval counts only its
  open part (`MarketHours.market_gap_ns`), so a weekend, a daily break or a holiday is
  neither a gap, nor missing ticks, nor downtime. Intervals no longer than both the gap and
  the freshness threshold are taken as they are (the calendar is only asked about longer
  ones, which keeps it off the per-tick path);
- score: weighted mean of latency and spread scores (ref / (ref + value): 1 at zero, 0.5
  at the reference), uptime, completeness and 1 - reject rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.core.market_hours import MarketHours
from app.core.models import NS_PER_MS, NS_PER_SECOND
from app.core.state import BrokerStats
from app.settings import Settings


@dataclass(slots=True, frozen=True)
class QualityParams:
    alpha: float
    expected_ns: int
    gap_ns: int
    fresh_ns: int
    latency_ref_ms: float
    spread_ref_pips: float
    weights: tuple[float, float, float, float, float]
    hours: MarketHours | None = None  # None: every interval counts in full

    @classmethod
    def from_settings(cls, settings: Settings) -> QualityParams:
        q = settings.quality
        w = q.weights
        expected_ns = round(q.expected_interval_ms * NS_PER_MS)
        return cls(
            alpha=q.latency_ewma_alpha,
            expected_ns=expected_ns,
            gap_ns=round(expected_ns * q.gap_factor),
            fresh_ns=round(settings.best_price.max_age_ms * NS_PER_MS),
            latency_ref_ms=q.latency_ref_ms,
            spread_ref_pips=q.spread_ref_pips,
            weights=(w.latency, w.spread, w.uptime, w.completeness, w.rejects),
            hours=MarketHours(settings.market_hours),
        )


def update_accepted(
    stats: BrokerStats | None,
    event_ns: int,
    receive_ns: int,
    spread: int,
    params: QualityParams,
    asset_class: str | None = None,
) -> BrokerStats:
    """Count one accepted tick (in event-time order per broker and symbol).

    asset_class: the instrument's, whose market-hours calendar discounts closed time.
    """
    if stats is None:
        stats = BrokerStats()
    latency_ms = (receive_ns - event_ns) / NS_PER_MS
    if stats.accepted == 0:
        stats.latency_ms = latency_ms
        stats.first_ns = event_ns
    else:
        stats.latency_ms += params.alpha * (latency_ms - stats.latency_ms)
        interval = event_ns - stats.last_ns
        if (
            asset_class is not None
            and params.hours is not None
            and (interval > params.gap_ns or interval > params.fresh_ns)
        ):
            interval = params.hours.market_gap_ns(asset_class, stats.last_ns, event_ns)
        if interval > params.gap_ns:
            stats.gaps += 1
            stats.missing += interval // params.expected_ns - 1
        stats.fresh_ns += min(interval, params.fresh_ns)
        stats.observed_ns += interval
    stats.accepted += 1
    stats.spread_sum += spread
    stats.last_ns = event_ns
    return stats


def update_rejected(stats: BrokerStats | None) -> BrokerStats:
    if stats is None:
        stats = BrokerStats()
    stats.rejected += 1
    return stats


def metrics(stats: BrokerStats, pip: int) -> dict[str, Any]:
    """The design document's per-broker metrics from the raw counters."""
    accepted = stats.accepted
    rejected = stats.rejected
    span_s = (stats.last_ns - stats.first_ns) / NS_PER_SECOND
    received = accepted + stats.missing
    observed = stats.observed_ns
    return {
        "ticks": accepted,
        "rejected": rejected,
        "latency_ms": round(stats.latency_ms, 3),
        "spread_avg": round(stats.spread_sum / accepted / pip, 4) if accepted else None,
        "tick_frequency": round((accepted - 1) / span_s, 3) if span_s > 0 else 0.0,
        "gaps": stats.gaps,
        "data_completeness": round(100.0 * accepted / received, 3) if received else 100.0,
        "uptime_percent": round(100.0 * stats.fresh_ns / observed, 3) if observed else 100.0,
        "reject_rate": round(rejected / (accepted + rejected), 4) if accepted + rejected else 0.0,
        "last_event_time_ns": stats.last_ns,
    }


def score(m: Mapping[str, Any], params: QualityParams) -> float:
    """Composite quality in [0, 1]; higher is better."""
    latency = max(m["latency_ms"], 0.0)
    spread = m["spread_avg"]
    parts = (
        params.latency_ref_ms / (params.latency_ref_ms + latency),
        0.0 if spread is None else params.spread_ref_pips / (params.spread_ref_pips + spread),
        m["uptime_percent"] / 100.0,
        m["data_completeness"] / 100.0,
        1.0 - m["reject_rate"],
    )
    total = sum(params.weights)
    if total == 0:
        return 0.0
    return round(sum(w * p for w, p in zip(params.weights, parts, strict=True)) / total, 6)


def compare_brokers(
    symbol: str,
    stats_by_broker: Mapping[str, BrokerStats],
    pip: int,
    priorities: Mapping[str, int],
    params: QualityParams,
) -> dict[str, Any]:
    """Ranking of the brokers of one symbol by score (ties: priority, then name)."""
    per_broker = {}
    for broker, stats in stats_by_broker.items():
        m = metrics(stats, pip)
        m["score"] = score(m, params)
        per_broker[broker] = m
    ranking = sorted(
        per_broker,
        key=lambda b: (-per_broker[b]["score"], priorities.get(b, 1 << 30), b),
    )
    best = ranking[0] if ranking else None
    return {
        "symbol": symbol,
        "best_broker": best,
        "ranking": ranking,
        "metrics": per_broker,
        "recommendation": f"Use {best} as primary source for {symbol}" if best else None,
    }
