"""CoinGecko simple price: spot prices of the main crypto assets.

GET {base}/simple/price?ids=bitcoin,ethereum&vs_currencies=usd&include_last_updated_at=true
answers `{"bitcoin": {"usd": 67187.34, "last_updated_at": 1711356300}, ...}`. The rate
limit answers 429 with `{"status": {"error_code": 429, "error_message": "You've exceeded
the Rate Limit..."}}`; an unknown id is simply absent (so `{}` means no data).
"""

from __future__ import annotations

from app.core.errors import ParseError
from app.sources.collectors.base import Collector, Fetch
from app.sources.collectors.observation import (
    Observation,
    load_json,
    to_float,
    total_parser,
    unix_to_ns,
)

PROVIDER = "coingecko"


@total_parser
def parse_coingecko(body: bytes, series: str) -> list[Observation]:
    """One observation per coin and quote currency, timed by the coin's last update."""
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise ParseError("missing_field", "response is not an object")
    status = doc.get("status")
    if isinstance(status, dict) and "error_code" in status:
        reason = "rate_limited" if status.get("error_code") == 429 else "provider_error"
        raise ParseError(reason, f"CoinGecko {status['error_code']}: {status.get('error_message')}")
    if "error" in doc:
        raise ParseError("provider_error", f"CoinGecko error: {doc['error']}")
    out = []
    for coin, prices in sorted(doc.items()):
        if not isinstance(prices, dict) or "last_updated_at" not in prices:
            raise ParseError("missing_field", f"{coin}.last_updated_at is missing")
        when = unix_to_ns(prices["last_updated_at"], f"{coin}.last_updated_at")
        for currency, price in sorted(prices.items()):
            if currency == "last_updated_at" or "_" in currency:
                continue  # include_24hr_change etc. add "usd_24h_change"-style keys
            value = to_float(price, f"{coin}.{currency}")
            out.append(Observation(PROVIDER, f"{coin}/{currency}", value, currency, when, "crypto"))
    if not out:
        raise ParseError("no_data", "no coin in the answer (unknown ids?)")
    return out


class CoinGeckoCollector(Collector):
    provider = PROVIDER
    category = "crypto"
    parse = staticmethod(parse_coingecko)

    def requests(self, api_key: str | None) -> list[Fetch]:
        params = self.cfg.params
        query = {
            "ids": ",".join(params.get("ids", [])),
            "vs_currencies": ",".join(params.get("vs_currencies", ["usd"])),
            "include_last_updated_at": "true",
        }
        headers = {"x-cg-demo-api-key": api_key} if api_key else {}
        return [Fetch(f"{self.base_url}/simple/price", "", query, headers)]
