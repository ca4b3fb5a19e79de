"""ExchangeRate-API open access endpoint (open.er-api.com): daily rates against one base.

GET {base}/v6/latest/USD answers `{"result": "success", "provider": ..,
"time_last_update_unix": 1711324951, "time_next_update_unix": .., "base_code": "USD",
"rates": {"USD": 1, "EUR": 0.9251, ...}}`; errors are `{"result": "error",
"error-type": "unsupported-code"}`, the rate limit HTTP 429 with error-type
"too-many-requests". A second FX reference next to the ECB: other base, other source.
"""

from __future__ import annotations

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

PROVIDER = "exchangerate_api"


@total_parser
def parse_exchangerate_api(body: bytes, series: str) -> list[Observation]:
    """One observation per quoted currency, BASE<CCY>, at the provider's update time."""
    doc = load_json(body)
    result = require(doc, "result", "response")
    if result != "success":
        error_type = str(doc.get("error-type", "unknown"))
        reason = "rate_limited" if error_type == "too-many-requests" else "provider_error"
        raise ParseError(reason, f"result {result!r}, error-type {error_type!r}")
    base = str(require(doc, "base_code", "response"))
    when = unix_to_ns(require(doc, "time_last_update_unix", "response"), "time_last_update_unix")
    rates = require(doc, "rates", "response")
    if not isinstance(rates, dict) or not rates:
        raise ParseError("no_data", "rates is empty")
    out = []
    for currency, rate in sorted(rates.items()):
        if currency == base:
            continue
        value = to_float(rate, f"rates.{currency}")
        obs = Observation(PROVIDER, f"{base}{currency}", value, currency.lower(), when, "fx")
        out.append(obs)
    return out


class ExchangeRateApiCollector(Collector):
    provider = PROVIDER
    category = "fx"
    parse = staticmethod(parse_exchangerate_api)

    def requests(self, api_key: str | None) -> list[Fetch]:
        base = str(self.cfg.params.get("base", "USD"))
        return [Fetch(f"{self.base_url}/v6/latest/{base}", base)]
