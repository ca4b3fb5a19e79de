"""/candles/<symbol>?tf=1m&limit=100&source=data-ingestion: the last closed candles.

Routed by faust (`table_route` on symbol-state) to the worker that owns the symbol's
partition, which also holds its `candle-history` keys (written in the symbol's partition).
Default source: the best-price stream (`data-ingestion`); `source=<broker>` gives that
broker's candles. Prices are decimal strings; `mid2` is bid + ask (twice the mid).
"""

from __future__ import annotations

from faust.web import Request, Response, View

from app.core.candle_feed import row_json
from app.pipeline.faust_app import app, settings
from app.tables.candles import candle_history, history_key
from app.tables.ticks import symbol_state
from app.tables.values import CandleHistoryValue, SymbolStateValue, decode
from app.wire import codec

MAX_LIMIT = 1000


@app.page("/candles/{symbol}")
class CandlesView(View):
    @app.table_route(table=symbol_state, match_info="symbol")
    async def get(self, request: Request, symbol: str) -> Response:
        tf = request.query.get("tf", "1m")
        source = request.query.get("source", codec.OUTPUT_SOURCE)
        kept = settings.candles.kept_history()
        if tf not in kept:
            return self.json({"error": "no_history_for_timeframe", "timeframes": kept}, status=400)
        try:
            limit = min(max(int(request.query.get("limit", "100")), 1), MAX_LIMIT)
        except ValueError:
            return self.json({"error": "limit must be an integer"}, status=400)
        history = decode(CandleHistoryValue, candle_history.get(history_key(symbol, tf)))
        rows = history.rows.get(source, [])[-limit:]
        books = decode(SymbolStateValue, symbol_state.get(symbol.encode())).candles
        late = books.get(source, {}).get("rejected", {})
        return self.json(
            {
                "symbol": symbol,
                "timeframe": tf,
                "source": source,
                "sources": sorted(history.rows),
                "late_rejected": late,
                "candles": [row_json(r) for r in rows],
            }
        )
