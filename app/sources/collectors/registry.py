"""The eight providers by name: which collector polls them and which parser reads them.

The raw record's `format` is the provider name, so the context agent (and a replay of
`raw.external.data`) finds the parser without the collector's configuration.
"""

from __future__ import annotations

from app.core.errors import ParseError
from app.sources.collectors.alphavantage import AlphaVantageCollector
from app.sources.collectors.base import Collector, Parser
from app.sources.collectors.coingecko import CoinGeckoCollector
from app.sources.collectors.ecb import EcbCollector
from app.sources.collectors.exchangerate_api import ExchangeRateApiCollector
from app.sources.collectors.feargreed import FearGreedCollector
from app.sources.collectors.forexfactory import ForexFactoryCollector
from app.sources.collectors.fred import FredCollector
from app.sources.collectors.observation import Observation
from app.sources.collectors.yahoo import YahooCollector
from app.wire import codec

COLLECTOR_CLASSES: dict[str, type[Collector]] = {
    cls.provider: cls
    for cls in (
        YahooCollector,
        FredCollector,
        CoinGeckoCollector,
        EcbCollector,
        AlphaVantageCollector,
        ForexFactoryCollector,
        FearGreedCollector,
        ExchangeRateApiCollector,
    )
}
PARSERS: dict[str, Parser] = {name: cls.parse for name, cls in COLLECTOR_CLASSES.items()}


def provider_of(name: str, params: dict) -> str:
    """A collector's provider: `params.provider`, else its config name."""
    return str(params.get("provider", name))


def observations_from_record(record: codec.RawRecord, key: str) -> list[Observation]:
    """Parse one raw record; the series part of a `provider:series` key is the parser's hint."""
    parser = PARSERS.get(record.format)
    if parser is None:
        raise ParseError("unknown_format", f"no parser for format {record.format!r}")
    prefix = f"{record.format}:"
    series = key[len(prefix) :] if key.startswith(prefix) else ""
    return parser(record.payload, series)
