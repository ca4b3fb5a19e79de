"""Crypto Fear & Greed Index (alternative.me), a daily 0-100 sentiment score.

GET {base}/fng/?limit=1 answers `{"name": "Fear and Greed Index", "data": [{"value": "40",
"value_classification": "Fear", "timestamp": "1551157200", "time_until_update": "68499"}],
"metadata": {"error": null}}`; an error sets `metadata.error` to a message.
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

PROVIDER = "feargreed"
SERIES = "crypto_fear_greed"


@total_parser
def parse_feargreed(body: bytes, series: str) -> list[Observation]:
    """The newest index value with its classification (Extreme Fear .. Extreme Greed)."""
    doc = load_json(body)
    metadata = doc.get("metadata") if isinstance(doc, dict) else None
    if isinstance(metadata, dict) and metadata.get("error"):
        raise ParseError("provider_error", f"metadata.error: {metadata['error']}")
    data = require(doc, "data", "response")
    if not isinstance(data, list) or not data:
        raise ParseError("no_data", "data is empty")
    out = []
    for i, point in enumerate(data):
        value = to_float(require(point, "value", f"data[{i}]"), f"data[{i}].value")
        when = unix_to_ns(require(point, "timestamp", f"data[{i}]"), f"data[{i}].timestamp")
        classification = str(require(point, "value_classification", f"data[{i}]"))
        attributes = {"classification": classification}
        out.append(Observation(PROVIDER, SERIES, value, "index", when, "sentiment", attributes))
    return [max(out, key=lambda obs: obs.observation_time_ns)]


class FearGreedCollector(Collector):
    provider = PROVIDER
    category = "sentiment"
    parse = staticmethod(parse_feargreed)

    def requests(self, api_key: str | None) -> list[Fetch]:
        return [Fetch(f"{self.base_url}/fng/", "", {"limit": "1", "format": "json"})]
