"""candle-history: the last closed candles per "<symbol>:<timeframe>", for /candles/<symbol>.

The candle books themselves live in the symbol's `symbol-state` value (state and applied
offsets in one record); this table only serves the view. A key is written at most once per
group of raw messages, in the partition of the symbol's raw message, so the worker that owns
a symbol (`table_route` on symbol-state) holds its history too. Values are
`CandleHistoryValue` (app.tables.values); merging is idempotent, so candles re-produced after
a crash replace their own rows.
"""

from __future__ import annotations

from app.pipeline.faust_app import app, settings

candle_history = app.Table(
    "candle-history",
    default=None,
    key_type=bytes,
    value_type=bytes,
    partitions=settings.kafka.partitions,
    help="symbol:timeframe -> last closed candles per source",
)


def history_key(symbol: str, timeframe: str) -> bytes:
    return f"{symbol}:{timeframe}".encode()
