"""FRED (St. Louis Fed) series observations: rates, inflation, employment.

GET {base}/fred/series/observations?series_id=DGS10&api_key=..&file_type=json
&sort_order=desc&limit=10 answers `{"realtime_start": .., "units": "lin", ..,
"observations": [{"realtime_start", "realtime_end", "date": "2024-03-21", "value": "4.27"}]}`.
Values are strings and "." means no value that day. Errors are
`{"error_code": 400, "error_message": "Bad Request.  ..."}` (429 for the rate limit).
The response does not name the series, so the series id travels in the raw key.
"""

from __future__ import annotations

from datetime import UTC, datetime

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

PROVIDER = "fred"
MISSING = "."


@total_parser
def parse_fred(body: bytes, series: str) -> list[Observation]:
    """The newest observation that has a value (responses are requested newest first)."""
    doc = load_json(body)
    if isinstance(doc, dict) and "error_code" in doc:
        reason = "rate_limited" if doc.get("error_code") == 429 else "provider_error"
        raise ParseError(reason, f"FRED error {doc['error_code']}: {doc.get('error_message')}")
    observations = require(doc, "observations", "response")
    if not isinstance(observations, list):
        raise ParseError("missing_field", "observations is not a list")
    dated = []
    for i, item in enumerate(observations):
        raw = require(item, "value", f"observations[{i}]")
        if raw == MISSING:
            continue
        day = require(item, "date", f"observations[{i}]")
        try:
            moment = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
        except (TypeError, ValueError):
            raise ParseError("bad_time", f"observations[{i}].date is {day!r}") from None
        dated.append((moment, to_float(raw, f"observations[{i}].value"), item))
    if not dated:
        raise ParseError("no_data", f"no observation of {series or '?'} has a value")
    moment, value, item = max(dated, key=lambda entry: entry[0])
    attributes = {
        "date": moment.date().isoformat(),
        "realtime_start": str(item.get("realtime_start", "")),
        "units": str(doc.get("units", "")),
    }
    return [Observation(PROVIDER, series, value, "", datetime_to_ns(moment), "macro", attributes)]


class FredCollector(Collector):
    provider = PROVIDER
    category = "macro"
    parse = staticmethod(parse_fred)
    key_required = True

    def requests(self, api_key: str | None) -> list[Fetch]:
        return [
            Fetch(
                f"{self.base_url}/fred/series/observations",
                series_id,
                {
                    "series_id": series_id,
                    "api_key": api_key or "",
                    "file_type": "json",
                    "sort_order": "desc",
                    "limit": str(self.cfg.params.get("limit", 10)),
                },
            )
            for series_id in self.cfg.params.get("series", [])
        ]
