"""JSON views of the processing tables, the broker comparison and the /health sections.

Tables are partitioned: the /tables/* views show the partitions of the worker that
answers. /brokers/compare/{symbol} is routed by faust (`table_route`) to the worker that
owns the symbol's partition, so it is complete from any worker.
"""

from __future__ import annotations

import json
from typing import Any

from faust.web import Request, Response, View

from app.agents.ticks import metrics as pipeline_metrics
from app.agents.ticks import processor
from app.cli.historical import result_path
from app.core.best_price import (
    B_ASK,
    B_BEST_ASK,
    B_BEST_ASK_SOURCE,
    B_BEST_BID,
    B_BEST_BID_SOURCE,
    B_BID,
    B_SOURCE,
)
from app.core.models import NS_PER_MS, format_price
from app.core.quality import S_ACCEPTED, S_LAST_NS, S_MISSING, compare_brokers, metrics
from app.core.reference import ReferenceComparison, attach_reference
from app.ops.runtime import health
from app.pipeline.faust_app import app, settings
from app.tables.ticks import historical_state, items_of, symbol_state


def _quote_json(q: list) -> dict[str, Any]:
    return {
        "bid": format_price(q[1]),
        "ask": format_price(q[2]),
        "event_time_ns": q[0],
        "receive_time_ns": q[5],
        "lineage": {"topic": q[6], "partition": q[7], "offset": q[8], "index": q[9]},
    }


def _best_json(b: list) -> dict[str, Any]:
    return {
        "source": b[B_SOURCE],
        "bid": format_price(b[B_BID]),
        "ask": format_price(b[B_ASK]),
        "best_bid": format_price(b[B_BEST_BID]),
        "best_bid_source": b[B_BEST_BID_SOURCE],
        "best_ask": format_price(b[B_BEST_ASK]),
        "best_ask_source": b[B_BEST_ASK_SOURCE],
    }


def _pip(symbol: str) -> int | None:
    limits = processor.limits.get(symbol)
    return limits.pip if limits else None


def compare(symbol: str, stats: dict[str, list]) -> dict[str, Any]:
    pip = _pip(symbol)
    if pip is None:
        return {"symbol": symbol, "error": "unknown_instrument"}
    comparison = compare_brokers(symbol, stats, pip, processor.priorities, processor.quality_params)
    try:  # the latest `reference-check` result for the symbol, if one has run
        ref = ReferenceComparison.from_dict(json.loads(result_path(symbol).read_text()))
    except (OSError, ValueError, TypeError):
        return comparison
    return attach_reference(comparison, ref)


@app.page("/tables/last-price")
class LastPriceView(View):
    async def get(self, request: Request) -> Response:
        return self.json(
            {
                s: {b: _quote_json(q) for b, q in v.items()}
                for s, v in items_of(symbol_state, "quotes")
            }
        )


@app.page("/tables/historical-price")
class HistoricalPriceView(View):
    async def get(self, request: Request) -> Response:
        return self.json(
            {
                s: {b: _quote_json(q) for b, q in v.items()}
                for s, v in items_of(historical_state, "quotes")
            }
        )


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
        stats = (symbol_state.get(symbol.encode()) or {}).get("quality")
        if not stats:
            return self.json({"symbol": symbol, "error": "no data"}, status=404)
        return self.json(compare(symbol, stats))


def aggregation_metrics() -> dict[str, Any]:
    latency = pipeline_metrics.distribution_latency_ms
    return {
        "total_symbols_tracked": len(items_of(symbol_state, "best")),
        "distribution_latency_ms": None if latency is None else round(latency, 3),
        "batch_processing_ms": round(pipeline_metrics.batch_ms, 3),
        "batches_processed": pipeline_metrics.batches,
        "records_processed": pipeline_metrics.ticks,
    }


def quality_metrics() -> dict[str, Any]:
    """Completeness over all (broker, symbol), mean spread score, broker clock lag."""
    received = expected = 0
    spread_scores: list[float] = []
    newest: dict[str, int] = {}
    ref = processor.quality_params.spread_ref_pips
    for symbol, per_broker in items_of(symbol_state, "quality"):
        pip = _pip(symbol)
        for broker, stats in per_broker.items():
            received += stats[S_ACCEPTED]
            expected += stats[S_ACCEPTED] + stats[S_MISSING]
            newest[broker] = max(newest.get(broker, 0), stats[S_LAST_NS])
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
