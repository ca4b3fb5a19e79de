"""Alpha Vantage realtime FX rate (function=CURRENCY_EXCHANGE_RATE), with bid and ask.

GET {base}/query?function=CURRENCY_EXCHANGE_RATE&from_currency=EUR&to_currency=USD&apikey=..
answers `{"Realtime Currency Exchange Rate": {"1. From_Currency Code": "EUR", ...,
"5. Exchange Rate": "1.08120000", "6. Last Refreshed": "2024-03-25 09:43:02",
"7. Time Zone": "UTC", "8. Bid Price": "...", "9. Ask Price": "..."}}`.
Every error is HTTP 200: `{"Note": ...}` / `{"Information": ...}` for the call-frequency
and daily limits, `{"Error Message": ...}` for a bad call or key.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.core.errors import ParseError
from app.sources.collectors.base import Collector, Fetch
from app.sources.collectors.observation import (
    Observation,
    datetime_to_ns,
    load_json,
    require,
    to_float,
    total_parser,
)

PROVIDER = "alphavantage"
RATE_BLOCK = "Realtime Currency Exchange Rate"
RATE_LIMIT_WORDS = ("rate limit", "call frequency", "requests per day")


@total_parser
def parse_alphavantage(body: bytes, series: str) -> list[Observation]:
    """The exchange rate at its refresh time; bid/ask go into the attributes."""
    doc = load_json(body)
    if isinstance(doc, dict) and "Error Message" in doc:
        raise ParseError("provider_error", str(doc["Error Message"]))
    for notice in ("Note", "Information"):
        if isinstance(doc, dict) and notice in doc:
            text = str(doc[notice])
            limited = any(word in text.lower() for word in RATE_LIMIT_WORDS)
            raise ParseError("rate_limited" if limited else "provider_error", text)
    block = require(doc, RATE_BLOCK, "response")
    base = require(block, "1. From_Currency Code", RATE_BLOCK)
    quote = require(block, "3. To_Currency Code", RATE_BLOCK)
    rate = to_float(require(block, "5. Exchange Rate", RATE_BLOCK), "5. Exchange Rate")
    refreshed = require(block, "6. Last Refreshed", RATE_BLOCK)
    zone_name = str(block.get("7. Time Zone", "UTC"))
    try:
        zone = ZoneInfo(zone_name)
        moment = datetime.strptime(refreshed, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)
    except (ValueError, TypeError, OSError, ZoneInfoNotFoundError):  # OSError: a huge name
        raise ParseError("bad_time", f"Last Refreshed {refreshed!r} in {zone_name!r}") from None
    attributes = {}
    for field, name in (("8. Bid Price", "bid"), ("9. Ask Price", "ask")):
        raw = block.get(field)
        if raw not in (None, "", "-"):
            attributes[name] = repr(to_float(raw, field))
    when = datetime_to_ns(moment)
    unit = str(quote).lower()
    return [Observation(PROVIDER, f"{base}{quote}", rate, unit, when, "fx", attributes)]


class AlphaVantageCollector(Collector):
    provider = PROVIDER
    category = "fx"
    parse = staticmethod(parse_alphavantage)
    key_required = True

    def requests(self, api_key: str | None) -> list[Fetch]:
        out = []
        for pair in self.cfg.params.get("pairs", []):
            base, quote = pair.split("/")
            query = {
                "function": "CURRENCY_EXCHANGE_RATE",
                "from_currency": base,
                "to_currency": quote,
                "apikey": api_key or "",
            }
            out.append(Fetch(f"{self.base_url}/query", f"{base}{quote}", query))
        return out
