"""Forex Factory economic calendar, public weekly export (faireconomy.media mirror).

GET {base}/ff_calendar_thisweek.json answers a list of events
`{"title": "Non-Farm Employment Change", "country": "USD", "date": "2024-03-08T08:30:00-05:00",
"impact": "High", "forecast": "198K", "previous": "353K"}`. The export carries no actual
value; figures keep their suffixes (%, K, M, B, T) and may be empty. The mirror throttles
heavy pollers with an HTML page instead of JSON.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

from app.core.errors import ParseError
from app.sources.collectors.base import Collector, Fetch
from app.sources.collectors.observation import (
    Observation,
    datetime_to_ns,
    load_json,
    require,
    total_parser,
)

PROVIDER = "forexfactory"
_FIGURE = re.compile(r"^[<>]?(-?\d+(?:\.\d+)?)\s*([%KMBT]?)$")
_SCALE = {"": 1.0, "%": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


def parse_figure(text: str) -> tuple[float, str]:
    """`"198K"` -> (198000.0, ""), `"3.2%"` -> (3.2, "percent"), `""` -> (nan, "")."""
    match = _FIGURE.match(text.strip())
    if not match:
        return math.nan, ""
    number, suffix = match.groups()
    value = float(number) * _SCALE[suffix]
    if not math.isfinite(value):  # 400 digits: no figure anyone published
        return math.nan, ""
    return value, "percent" if suffix == "%" else ""


@total_parser
def parse_forexfactory(body: bytes, series: str) -> list[Observation]:
    """One observation per event: value = the forecast (NaN when none), time = event time."""
    doc = load_json(body)
    if not isinstance(doc, list):
        raise ParseError("missing_field", "calendar export is not a list of events")
    out = []
    for i, event in enumerate(doc):
        title = str(require(event, "title", f"events[{i}]"))
        country = str(require(event, "country", f"events[{i}]"))
        date = str(require(event, "date", f"events[{i}]"))
        try:
            moment = datetime.fromisoformat(date)
        except ValueError:
            raise ParseError("bad_time", f"events[{i}].date is {date!r}") from None
        if moment.tzinfo is None:
            raise ParseError("bad_time", f"events[{i}].date has no UTC offset: {date!r}")
        forecast = str(event.get("forecast") or "")
        previous = str(event.get("previous") or "")
        value, unit = parse_figure(forecast)
        if not unit:
            unit = parse_figure(previous)[1]
        attributes = {
            "title": title,
            "country": country,
            "impact": str(event.get("impact") or ""),
            "forecast": forecast,
            "previous": previous,
        }
        series_id = f"{country}:{title}:{moment.isoformat()}"
        when = datetime_to_ns(moment)
        out.append(Observation(PROVIDER, series_id, value, unit, when, "calendar", attributes))
    return out


class ForexFactoryCollector(Collector):
    provider = PROVIDER
    category = "calendar"
    parse = staticmethod(parse_forexfactory)

    def requests(self, api_key: str | None) -> list[Fetch]:
        path = self.cfg.params.get("path", "/ff_calendar_thisweek.json")
        return [Fetch(f"{self.base_url}{path}")]
