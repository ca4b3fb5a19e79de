"""Each collector's HTTP path against a local server answering in the provider's shape.

A collecting sink stands in for Kafka: these check what would be written (exact bytes,
keys, rejections), the backoff the collector chooses and what /health would show.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from app.core.errors import ParseError
from app.settings import CollectorSettings
from app.sources.collectors.base import Collector, parse_retry_after
from app.sources.collectors.registry import COLLECTOR_CLASSES, observations_from_record
from app.wire import codec
from tests.sources.collectors.provider_server import (
    Answer,
    ProviderServer,
    fixture,
    start_provider_server,
)

INTERVAL = 60.0
KEY = "test-key-123"


@dataclass
class CollectingSink:
    raw_records: list[tuple[str, codec.RawRecord]] = field(default_factory=list)
    rejections: list[tuple[str, codec.Rejection]] = field(default_factory=list)

    async def raw(self, key: str, record: codec.RawRecord) -> None:
        self.raw_records.append((key, record))

    async def reject(self, key: str, rejection: bytes) -> None:
        self.rejections.append((key, codec.decode_rejection(rejection)))


@dataclass(frozen=True)
class Case:
    provider: str
    path: str
    params: dict[str, Any]
    data: bytes
    expected: dict[str, float]  # raw key -> {series: value} checked through the parser
    error: Answer
    error_reason: str
    rate_limit: Answer
    api_key_env: str | None = None
    query: dict[str, str] = field(default_factory=dict)


def _json(provider: str, name: str, status: int = 200, **headers: str) -> Answer:
    return Answer(fixture(provider, name), status, headers)


CASES = [
    Case(
        "yahoo",
        "/v8/finance/chart/^GSPC",
        {"symbols": ["^GSPC"]},
        fixture("yahoo", "chart_gspc.json"),
        {"^GSPC": 5234.18},
        _json("yahoo", "chart_not_found.json", 404),
        "http_404",
        Answer(
            fixture("yahoo", "too_many_requests.txt"), 429, {"Retry-After": "120"}, "text/plain"
        ),
        query={"range": "5d", "interval": "1d"},
    ),
    Case(
        "fred",
        "/fred/series/observations",
        {"series": ["DGS10"]},
        fixture("fred", "observations_dgs10.json"),
        {"DGS10": 4.27},
        _json("fred", "error_bad_series.json", 400),
        "http_400",
        _json("fred", "error_rate_limit.json", 429, **{"Retry-After": "120"}),
        api_key_env="TEST_FRED_KEY",
        query={"series_id": "DGS10", "api_key": KEY, "file_type": "json", "sort_order": "desc"},
    ),
    Case(
        "coingecko",
        "/simple/price",
        {"ids": ["bitcoin", "ethereum"], "vs_currencies": ["usd"]},
        fixture("coingecko", "simple_price.json"),
        {"bitcoin/usd": 67187.34, "ethereum/usd": 3454.2},
        _json("coingecko", "unknown_ids.json"),
        "no_data",
        _json("coingecko", "rate_limit.json", 429, **{"Retry-After": "120"}),
        query={"ids": "bitcoin,ethereum", "include_last_updated_at": "true"},
    ),
    Case(
        "ecb",
        "/stats/eurofxref/eurofxref-daily.xml",
        {},
        fixture("ecb", "eurofxref-daily.xml"),
        {"EURUSD": 1.0823, "EURGBP": 0.85773},
        Answer(fixture("ecb", "maintenance.html"), 503, {}, "text/html"),
        "http_503",
        Answer(b"", 429, {"Retry-After": "120"}, "text/plain"),
    ),
    Case(
        "alphavantage",
        "/query",
        {"pairs": ["EUR/USD"]},
        fixture("alphavantage", "eurusd.json"),
        {"EURUSD": 1.0812},
        _json("alphavantage", "error_message.json"),
        "provider_error",
        _json("alphavantage", "note_rate_limit.json"),  # HTTP 200, no Retry-After
        api_key_env="TEST_AV_KEY",
        query={"function": "CURRENCY_EXCHANGE_RATE", "from_currency": "EUR", "apikey": KEY},
    ),
    Case(
        "forexfactory",
        "/ff_calendar_thisweek.json",
        {},
        fixture("forexfactory", "ff_calendar_thisweek.json"),
        {"USD:Unemployment Claims:2024-03-21T08:30:00-04:00": 213000.0},
        Answer(fixture("forexfactory", "rate_limited.html"), 200, {}, "text/html"),
        "html_page",
        Answer(
            fixture("forexfactory", "rate_limited.html"), 429, {"Retry-After": "300"}, "text/html"
        ),
    ),
    Case(
        "feargreed",
        "/fng/",
        {},
        fixture("feargreed", "fng.json"),
        {"crypto_fear_greed": 40.0},
        _json("feargreed", "error.json"),
        "provider_error",
        Answer(b"Too Many Requests", 429, {"Retry-After": "120"}, "text/plain"),
        query={"limit": "1"},
    ),
    Case(
        "exchangerate_api",
        "/v6/latest/USD",
        {"base": "USD"},
        fixture("exchangerate_api", "latest_usd.json"),
        {"USDEUR": 0.925136, "USDJPY": 151.432153},
        _json("exchangerate_api", "unsupported_code.json"),
        "provider_error",
        _json("exchangerate_api", "too_many_requests.json", 429, **{"Retry-After": "1200"}),
    ),
]
IDS = [c.provider for c in CASES]


@pytest.fixture
async def server() -> AsyncIterator[ProviderServer]:
    async for srv in start_provider_server():
        yield srv


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as sess:
        yield sess


def make_collector(
    case: Case, server: ProviderServer, session: aiohttp.ClientSession, environ: dict[str, str]
) -> tuple[Collector, CollectingSink]:
    cfg = CollectorSettings(
        base_url=server.url,
        interval_s=INTERVAL,
        timeout_s=2,
        api_key_env=case.api_key_env,
        params=case.params,
        backoff_initial_s=1.0,
        backoff_max_s=30.0,
    )
    sink = CollectingSink()
    cls = COLLECTOR_CLASSES[case.provider]
    return cls(case.provider, cfg, sink, session, environ), sink


def env_for(case: Case) -> dict[str, str]:
    return {case.api_key_env: KEY} if case.api_key_env else {}


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_poll_writes_exact_body_and_it_parses_to_the_values(
    case: Case, server: ProviderServer, session: aiohttp.ClientSession
) -> None:
    server.serve(case.path, Answer(case.data))
    collector, sink = make_collector(case, server, session, env_for(case))
    assert await collector.poll_once() == INTERVAL
    [(key, record)] = sink.raw_records
    assert (record.payload, record.format, record.source) == (
        case.data,
        case.provider,
        case.provider,
    )
    assert record.receive_time_ns > 0 and not sink.rejections
    values = {o.series: o.value for o in observations_from_record(record, key)}
    for series, value in case.expected.items():
        assert values[series] == value
    [(path, query)] = server.requests
    assert path == case.path and query.items() >= case.query.items()
    state = collector.health.as_json()
    assert (state["status"], state["consecutive_failures"], state["records"]) == ("ok", 0, 1)
    assert state["last_success"] is not None and collector.health.problem() is None


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_error_shape_is_recorded_with_its_reason_and_backs_off(
    case: Case, server: ProviderServer, session: aiohttp.ClientSession
) -> None:
    server.serve(case.path, case.error, Answer(case.data))
    collector, sink = make_collector(case, server, session, env_for(case))
    assert await collector.poll_once() == 1.0  # backoff_initial_s, not the interval
    if case.error.status >= 400:
        # A non-2xx answer never reaches the raw topic: it is refused at the source.
        [(_key, rejection)] = sink.rejections
        assert list(rejection.reasons) == [case.error_reason] and rejection.stage == "source"
        assert rejection.record.payload == case.error.body and not sink.raw_records
    else:
        # A 2xx error shape is the provider's answer: raw keeps it, the agent refuses it.
        [(key, record)] = sink.raw_records
        with pytest.raises(ParseError) as err:
            observations_from_record(record, key)
        assert err.value.reason == case.error_reason
    assert collector.health.last_error_reason == case.error_reason
    assert collector.health.status == "failing" and collector.health.problem()
    # the collector keeps polling: the next answer is good and the state recovers
    assert await collector.poll_once() == INTERVAL
    assert collector.health.consecutive_failures == 0 and collector.health.status == "ok"


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_rate_limit_answer_is_respected(
    case: Case, server: ProviderServer, session: aiohttp.ClientSession
) -> None:
    server.serve(case.path, case.rate_limit)
    collector, sink = make_collector(case, server, session, env_for(case))
    delay = await collector.poll_once()
    retry_after = parse_retry_after(case.rate_limit.headers.get("Retry-After"))
    assert delay == (retry_after if retry_after is not None else 1.0)
    assert collector.health.status == "rate_limited"
    assert collector.health.last_error_reason == "rate_limited"
    if case.rate_limit.status == 429:
        [(_key, rejection)] = sink.rejections
        assert list(rejection.reasons) == ["rate_limited"] and rejection.stage == "source"
    # Without Retry-After the wait doubles per failed poll, capped at backoff_max_s.
    delays = [await collector.poll_once() for _ in range(6)]
    if retry_after is None:
        assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    else:
        assert all(d >= retry_after for d in delays)


async def test_keyed_collector_without_key_idles_with_a_clear_status(
    server: ProviderServer, session: aiohttp.ClientSession
) -> None:
    case = next(c for c in CASES if c.provider == "fred")
    collector, sink = make_collector(case, server, session, environ={})
    assert await collector.poll_once() == max(INTERVAL, 30.0)  # idles slowly
    assert server.requests == [] and not sink.raw_records
    state = collector.health.as_json()
    assert state["status"] == "missing_api_key"
    assert "TEST_FRED_KEY" in state["last_error"]
    assert "missing_api_key" in (collector.health.problem() or "")


async def test_unreachable_provider_is_a_connection_error(session: aiohttp.ClientSession) -> None:
    case = next(c for c in CASES if c.provider == "ecb")
    srv = ProviderServer(url="http://127.0.0.1:9")  # discard port: nothing listens
    collector, sink = make_collector(case, srv, session, {})
    assert [await collector.poll_once() for _ in range(3)] == [1.0, 2.0, 4.0]
    assert collector.health.last_error_reason == "connection_error"
    assert collector.health.consecutive_failures == 3 and not sink.raw_records


async def test_api_key_never_appears_in_health(
    server: ProviderServer, session: aiohttp.ClientSession
) -> None:
    case = next(c for c in CASES if c.provider == "alphavantage")
    body = f'{{"Error Message": "the parameter apikey {KEY} is invalid"}}'.encode()
    server.serve(case.path, Answer(body, 500))
    collector, _sink = make_collector(case, server, session, env_for(case))
    await collector.poll_once()
    assert KEY not in str(collector.health.as_json())
    assert "***" in (collector.health.last_error or "")


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
