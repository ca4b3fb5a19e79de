"""JSON views of the processing tables, the broker comparison and the /health sections.

Tables are partitioned: the /tables/* views show the partitions of the worker that
answers. /brokers/compare/{symbol} is routed by faust (`table_route`) to the worker that
owns the symbol's partition, so it is complete from any worker.
"""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response, View

from app.core.models import NS_PER_MS, format_price
from app.core.quality import QualityParams, compare_brokers, metrics
from app.core.reference import attach_reference
from app.core.state import BestChoice, BrokerStats, Quote
from app.core.validation import LimitsBook
from app.ops.reference_results import read_result
from app.ops.runtime import health, pipeline_timings
from app.pipeline.faust_app import app, settings
from app.tables.ticks import historical_state, items_of, symbol_state
from app.tables.values import SymbolStateValue, decode

LIMITS = LimitsBook(settings)
PRIORITIES = {name: b.priority for name, b in settings.brokers.items()}
QUALITY = QualityParams.from_settings(settings)


def _quote_json(q: Quote) -> dict[str, Any]:
    return {
        "bid": format_price(q.bid),
        "ask": format_price(q.ask),
        "event_time_ns": q.event_ns,
        "receive_time_ns": q.receive_ns,
        "lineage": {
            "topic": q.topic,
            "partition": q.partition,
            "offset": q.offset,
            "index": q.index,
        },
    }


def _best_json(b: BestChoice) -> dict[str, Any]:
    return {
        "source": b.source,
        "bid": format_price(b.bid),
        "ask": format_price(b.ask),
        "best_bid": format_price(b.best_bid),
        "best_bid_source": b.best_bid_source,
        "best_ask": format_price(b.best_ask),
        "best_ask_source": b.best_ask_source,
    }


def _pip(symbol: str) -> int | None:
    limits = LIMITS.get(symbol)
    return limits.pip if limits else None


def compare(symbol: str, stats: dict[str, BrokerStats]) -> dict[str, Any]:
    pip = _pip(symbol)
    if pip is None:
        return {"symbol": symbol, "error": "unknown_instrument"}
    comparison = compare_brokers(symbol, stats, pip, PRIORITIES, QUALITY)
    ref = read_result(settings, symbol)  # the latest `reference-check`, if one has run
    return comparison if ref is None else attach_reference(comparison, ref)


def price_view(path: str, table: Any) -> None:
    """The last accepted quote per source and symbol of `table` (live or history)."""

    @app.page(path)
    class PriceView(View):
        async def get(self, request: Request) -> Response:
            return self.json(
                {s: {b: _quote_json(q) for b, q in v.items()} for s, v in items_of(table, "quotes")}
            )


price_view("/tables/last-price", symbol_state)
price_view("/tables/historical-price", historical_state)


@app.page("/tables/best-price")
class BestPriceView(View):
    async def get(self, request: Request) -> Response:
        return self.json({s: _best_json(b) for s, b in items_of(symbol_state, "best")})


@app.page("/tables/quality")
class QualityView(View):
    async def get(self, request: Request) -> Response:
        return self.json({s: compare(s, v) for s, v in items_of(symbol_state, "quality")})


@app.page("/tables/rejects")
class RejectsView(View):
    async def get(self, request: Request) -> Response:
        return self.json(
            {
                "live": _reject_summary(symbol_state),
                "historical": _reject_summary(historical_state),
            }
        )


def _reject_summary(table: Any) -> dict[str, Any]:
    by_symbol = {s: dict(sorted(v.items())) for s, v in items_of(table, "rejects")}
    by_reason: dict[str, int] = {}
    for counts in by_symbol.values():
        for reason, n in counts.items():
            by_reason[reason] = by_reason.get(reason, 0) + n
    return {"by_reason": dict(sorted(by_reason.items())), "by_symbol": by_symbol}


@app.page("/brokers/compare/{symbol}")
class BrokerCompareView(View):
    @app.table_route(table=symbol_state, match_info="symbol")
    async def get(self, request: Request, symbol: str) -> Response:
        stats = decode(SymbolStateValue, symbol_state.get(symbol.encode())).quality
        if not stats:
            return self.json({"symbol": symbol, "error": "no data"}, status=404)
        return self.json(compare(symbol, stats))


def aggregation_metrics() -> dict[str, Any]:
    latency = pipeline_timings.distribution_latency_ms
    return {
        "total_symbols_tracked": len(items_of(symbol_state, "best")),
        "distribution_latency_ms": None if latency is None else round(latency, 3),
        "batch_processing_ms": round(pipeline_timings.batch_ms, 3),
        "batches_processed": pipeline_timings.batches,
        "records_processed": pipeline_timings.ticks,
    }


def quality_metrics() -> dict[str, Any]:
    """Completeness over all (broker, symbol), mean spread score, broker clock lag."""
    received = expected = 0
    spread_scores: list[float] = []
    newest: dict[str, int] = {}
    ref = QUALITY.spread_ref_pips
    for symbol, per_broker in items_of(symbol_state, "quality"):
        pip = _pip(symbol)
        for broker, stats in per_broker.items():
            received += stats.accepted
            expected += stats.accepted + stats.missing
            newest[broker] = max(newest.get(broker, 0), stats.last_ns)
            spread = metrics(stats, pip)["spread_avg"] if pip else None
            if spread is not None:
                spread_scores.append(ref / (ref + spread))
    lead = max(newest.values(), default=0)
    max_age_ns = round(settings.best_price.max_age_ms * NS_PER_MS)
    return {
        "data_completeness_percent": round(100.0 * received / expected, 3) if expected else None,
        "avg_spread_quality": (
            round(sum(spread_scores) / len(spread_scores), 4) if spread_scores else None
        ),
        "broker_sync_status": {
            broker: {
                "last_event_time_ns": t,
                "lag_ms": (lead - t) / NS_PER_MS,
                "status": "in_sync" if lead - t <= max_age_ns else "lagging",
            }
            for broker, t in sorted(newest.items())
        },
    }


health.add_section("aggregation_metrics", aggregation_metrics)
health.add_section("quality_metrics", quality_metrics)
