"""Yahoo Finance chart API (v8): last price of indices, futures, FX and yields.

GET {base}/v8/finance/chart/{symbol}?interval=1d&range=5d answers
`{"chart": {"result": [{"meta": {...}, "timestamp": [...], "indicators": {"quote": [...]}}],
"error": null}}`; a bad symbol answers 404 with `chart.error = {code, description}`.
"""

from __future__ import annotations

from urllib.parse import quote

from app.core.errors import ParseError
from app.sources.collectors.base import Collector, Fetch
from app.sources.collectors.observation import (
    Observation,
    load_json,
    require,
    to_float,
    total_parser,
    unix_to_ns,
)

PROVIDER = "yahoo"


@total_parser
def parse_yahoo(body: bytes, series: str) -> list[Observation]:
    """The regular-market price in `meta`, else the last non-null bar close."""
    doc = load_json(body)
    chart = require(doc, "chart", "response")
    error = chart.get("error") if isinstance(chart, dict) else None
    if error:
        code = error.get("code", "") if isinstance(error, dict) else ""
        text = error.get("description", error) if isinstance(error, dict) else error
        raise ParseError("provider_error", f"chart.error {code}: {text}")
    results = require(chart, "result", "chart")
    if not isinstance(results, list) or not results:
        raise ParseError("no_data", "chart.result is empty")
    result = results[0]
    meta = require(result, "meta", "chart.result[0]")
    if not isinstance(meta, dict):
        raise ParseError("missing_field", "chart.result[0].meta is not an object")
    symbol = str(meta.get("symbol") or series)
    if not symbol:
        raise ParseError("missing_field", "chart.result[0].meta.symbol is missing")
    if meta.get("regularMarketPrice") is not None and meta.get("regularMarketTime"):
        value = to_float(meta["regularMarketPrice"], "meta.regularMarketPrice")
        when = unix_to_ns(meta["regularMarketTime"], "meta.regularMarketTime")
    else:
        value, when = _last_close(result)
    attributes = {"exchange": str(meta.get("exchangeName", ""))}
    if meta.get("instrumentType"):
        attributes["instrument_type"] = str(meta["instrumentType"])
    previous = meta.get("chartPreviousClose", meta.get("previousClose"))
    if previous is not None:
        attributes["previous_close"] = repr(to_float(previous, "meta.chartPreviousClose"))
    unit = str(meta.get("currency") or "points").lower()
    return [Observation(PROVIDER, symbol, value, unit, when, "quotes", attributes)]


def _last_close(result: dict) -> tuple[float, int]:
    stamps = require(result, "timestamp", "chart.result[0]")
    quotes = require(require(result, "indicators", "chart.result[0]"), "quote", "indicators")
    if not isinstance(quotes, list) or not quotes:
        raise ParseError("no_data", "indicators.quote is empty")
    closes = require(quotes[0], "close", "indicators.quote[0]")
    for stamp, close in reversed(list(zip(stamps, closes, strict=False))):
        if close is not None:
            return to_float(close, "indicators.quote[0].close"), unix_to_ns(stamp, "timestamp")
    raise ParseError("no_data", "no bar has a close price")


class YahooCollector(Collector):
    provider = PROVIDER
    category = "quotes"
    parse = staticmethod(parse_yahoo)

    def requests(self, api_key: str | None) -> list[Fetch]:
        query = {"interval": str(self.cfg.params.get("interval", "1d")), "range": "5d"}
        return [
            Fetch(f"{self.base_url}/v8/finance/chart/{quote(sym, safe='')}", sym, query)
            for sym in self.cfg.params.get("symbols", [])
        ]
