"""Each provider's parser on payloads in that provider's exact response shape."""

from __future__ import annotations

import math

import pytest

from app.core.errors import ParseError
from app.sources.collectors.alphavantage import parse_alphavantage
from app.sources.collectors.coingecko import parse_coingecko
from app.sources.collectors.ecb import parse_ecb
from app.sources.collectors.exchangerate_api import parse_exchangerate_api
from app.sources.collectors.feargreed import parse_feargreed
from app.sources.collectors.forexfactory import parse_figure, parse_forexfactory
from app.sources.collectors.fred import parse_fred
from app.sources.collectors.observation import Observation
from app.sources.collectors.yahoo import parse_yahoo
from tests.sources.collectors.provider_server import fixture

S = 1_000_000_000


def test_yahoo_takes_regular_market_price_and_time_from_meta() -> None:
    [obs] = parse_yahoo(fixture("yahoo", "chart_gspc.json"), "^GSPC")
    assert (obs.provider, obs.series, obs.category, obs.unit) == ("yahoo", "^GSPC", "quotes", "usd")
    assert obs.value == 5234.18 and obs.observation_time_ns == 1711137600 * S
    assert obs.attributes["previous_close"] == "5224.62"
    assert obs.attributes["exchange"] == "SNP"


def test_yahoo_without_meta_price_uses_last_non_null_close() -> None:
    [obs] = parse_yahoo(fixture("yahoo", "chart_gcf_meta_without_price.json"), "GC=F")
    assert (obs.series, obs.value, obs.observation_time_ns) == ("GC=F", 2164.2, 1711080000 * S)


def test_yahoo_chart_error_is_a_provider_error() -> None:
    with pytest.raises(ParseError) as err:
        parse_yahoo(fixture("yahoo", "chart_not_found.json"), "NOPE")
    assert err.value.reason == "provider_error" and "delisted" in err.value.detail


def test_fred_skips_missing_dot_and_takes_newest_value() -> None:
    [obs] = parse_fred(fixture("fred", "observations_dgs10.json"), "DGS10")
    assert (obs.provider, obs.series, obs.category) == ("fred", "DGS10", "macro")
    assert obs.value == 4.27 and obs.observation_time_ns == 1710979200 * S
    assert obs.attributes["date"] == "2024-03-21"


@pytest.mark.parametrize(
    ("name", "reason"),
    [("error_bad_series.json", "provider_error"), ("error_rate_limit.json", "rate_limited")],
)
def test_fred_error_shapes(name: str, reason: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_fred(fixture("fred", name), "DGS10")
    assert err.value.reason == reason and "FRED error" in err.value.detail


def test_fred_only_dots_is_no_data() -> None:
    body = b'{"observations":[{"date":"2024-03-22","value":"."}]}'
    with pytest.raises(ParseError, match="no_data"):
        parse_fred(body, "DGS10")


def test_coingecko_one_observation_per_coin_and_currency() -> None:
    got = parse_coingecko(fixture("coingecko", "simple_price.json"), "")
    assert [(o.series, o.value, o.unit, o.observation_time_ns) for o in got] == [
        ("bitcoin/usd", 67187.34, "usd", 1711356300 * S),
        ("ethereum/usd", 3454.2, "usd", 1711356295 * S),
    ]
    assert {o.category for o in got} == {"crypto"}


@pytest.mark.parametrize(
    ("name", "reason"), [("rate_limit.json", "rate_limited"), ("unknown_ids.json", "no_data")]
)
def test_coingecko_error_shapes(name: str, reason: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_coingecko(fixture("coingecko", name), "")
    assert err.value.reason == reason


def test_ecb_reads_gesmes_envelope() -> None:
    got = parse_ecb(fixture("ecb", "eurofxref-daily.xml"), "")
    assert len(got) == 7
    usd = next(o for o in got if o.series == "EURUSD")
    assert (usd.value, usd.unit, usd.observation_time_ns) == (1.0823, "usd", 1711065600 * S)
    assert usd.attributes == {"reference_date": "2024-03-22", "base": "EUR"}


def test_ecb_html_page_is_not_the_envelope() -> None:
    with pytest.raises(ParseError, match="unexpected_document"):
        parse_ecb(fixture("ecb", "maintenance.html"), "")
    with pytest.raises(ParseError, match="malformed_xml"):
        parse_ecb(b"<gesmes:Envelope", "")


def test_alphavantage_rate_with_bid_ask() -> None:
    [obs] = parse_alphavantage(fixture("alphavantage", "eurusd.json"), "EURUSD")
    assert (obs.series, obs.value, obs.unit) == ("EURUSD", 1.0812, "usd")
    assert obs.observation_time_ns == 1711359782 * S
    assert obs.attributes == {"bid": "1.08118", "ask": "1.08125"}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("note_rate_limit.json", "rate_limited"),
        ("information_daily_limit.json", "rate_limited"),
        ("error_message.json", "provider_error"),
    ],
)
def test_alphavantage_error_shapes(name: str, reason: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_alphavantage(fixture("alphavantage", name), "EURUSD")
    assert err.value.reason == reason


def test_forexfactory_events_with_impact_and_forecast() -> None:
    got = {
        o.series: o
        for o in parse_forexfactory(fixture("forexfactory", "ff_calendar_thisweek.json"), "")
    }
    assert len(got) == 5
    claims = got["USD:Unemployment Claims:2024-03-21T08:30:00-04:00"]
    assert (claims.value, claims.unit, claims.category) == (213000.0, "", "calendar")
    assert claims.observation_time_ns == 1711024200 * S
    assert claims.attributes["impact"] == "High"
    assert (claims.attributes["forecast"], claims.attributes["previous"]) == ("213K", "209K")
    cpi = got["GBP:CPI y/y:2024-03-20T03:00:00-04:00"]
    assert (cpi.value, cpi.unit) == (3.5, "percent")
    presser = got["USD:FOMC Press Conference:2024-03-20T14:30:00-04:00"]
    assert math.isnan(presser.value) and presser.attributes["forecast"] == ""


def test_forexfactory_throttle_page_is_html() -> None:
    with pytest.raises(ParseError, match="html_page"):
        parse_forexfactory(fixture("forexfactory", "rate_limited.html"), "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.23M", (1.23e6, "")), ("-0.1%", (-0.1, "percent")), ("<0.50%", (0.5, "percent"))],
)
def test_forexfactory_figures(text: str, expected: tuple[float, str]) -> None:
    assert parse_figure(text) == expected


def test_feargreed_value_and_classification() -> None:
    [obs] = parse_feargreed(fixture("feargreed", "fng.json"), "")
    assert (obs.series, obs.value, obs.category) == ("crypto_fear_greed", 40.0, "sentiment")
    assert obs.observation_time_ns == 1711324800 * S
    assert obs.attributes == {"classification": "Fear"}


def test_feargreed_metadata_error() -> None:
    with pytest.raises(ParseError) as err:
        parse_feargreed(fixture("feargreed", "error.json"), "")
    assert err.value.reason == "provider_error" and "positive number" in err.value.detail


def test_exchangerate_api_rates_against_base() -> None:
    got = {
        o.series: o
        for o in parse_exchangerate_api(fixture("exchangerate_api", "latest_usd.json"), "USD")
    }
    assert "USDUSD" not in got and len(got) == 7
    assert (got["USDEUR"].value, got["USDEUR"].unit) == (0.925136, "eur")
    assert got["USDJPY"].observation_time_ns == 1711324951 * S


@pytest.mark.parametrize(
    ("name", "reason"),
    [("unsupported_code.json", "provider_error"), ("too_many_requests.json", "rate_limited")],
)
def test_exchangerate_api_error_shapes(name: str, reason: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_exchangerate_api(fixture("exchangerate_api", name), "USD")
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html><body>Bad gateway</body></html>", "html_page"),
        (b'{"chart": ', "malformed_json"),
        (
            b'{"chart": {"result": [{"meta": {"symbol": "X", "regularMarketPrice": "abc", '
            b'"regularMarketTime": 1}}], "error": null}}',
            "bad_value",
        ),
        (b'{"chart": {"result": [{}], "error": null}}', "missing_field"),
    ],
)
def test_bad_bodies_get_their_reason(body: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_yahoo(body, "X")
    assert err.value.reason == reason


def test_fingerprint_changes_with_value_time_or_attributes_only() -> None:
    base = Observation("p", "s", 1.5, "u", 10, "fx", {"a": "1"})
    same = Observation("p", "s", 1.5, "u", 10, "fx", {"a": "1"})
    assert base.fingerprint() == same.fingerprint()
    assert base.fingerprint() != Observation("p", "s", 1.6, "u", 10, "fx", {"a": "1"}).fingerprint()
    assert base.fingerprint() != Observation("p", "s", 1.5, "u", 11, "fx", {"a": "1"}).fingerprint()
    assert base.fingerprint() != Observation("p", "s", 1.5, "u", 10, "fx", {"a": "2"}).fingerprint()
    nan = Observation("p", "s", math.nan, "u", 10, "calendar")
    assert nan.fingerprint() == Observation("p", "s", math.nan, "u", 10, "calendar").fingerprint()
