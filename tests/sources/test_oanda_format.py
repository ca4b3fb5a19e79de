"""OANDA v20 stream lines as the API sends them (tests/fixtures/oanda/stream.jsonl)."""

from pathlib import Path

import pytest

from app.core.errors import ParseError
from app.core.models import parse_price
from app.sources.brokers.oanda import Heartbeat, parse_oanda_line

LINES = (
    (Path(__file__).parent.parent / "fixtures" / "oanda" / "stream.jsonl").read_bytes().splitlines()
)


def test_best_bid_is_highest_and_best_ask_lowest_not_first_bucket() -> None:
    tick = parse_oanda_line(LINES[0], "ic_markets", 7)
    assert tick.symbol == "EURUSD"
    assert tick.bid == parse_price("1.19197") and tick.bid_volume == 500000
    assert tick.ask == parse_price("1.19216") and tick.ask_volume == 500000
    assert tick.event_time_ns == 1_506_291_639_888_097_022
    assert (tick.source, tick.receive_time_ns) == ("ic_markets", 7)


def test_heartbeat() -> None:
    assert parse_oanda_line(LINES[1], "x", 0) == Heartbeat(1_735_689_605_000_000_000)


def test_jpy_pair_keeps_three_decimals_exactly() -> None:
    tick = parse_oanda_line(LINES[2], "x", 0)
    assert (tick.symbol, tick.bid, tick.ask) == ("USDJPY", 157_312_000_000, 157_321_000_000)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (LINES[3], "empty_book"),
        (LINES[4], "not_tradeable"),
        (b'{"type":"PRICE"', "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b"[1,2]", "not_an_object"),
        (b'{"type":"CANDLE","time":"2025-01-01T00:00:05Z"}', "unknown_type"),
        (b'{"type":"PRICE","time":"2025-01-01T00:00:05Z","bids":[],"asks":[]}', "missing_field"),
        (LINES[0].replace(b'"1.19195"', b'"NaN"'), "bad_price"),
        (LINES[0].replace(b'"1.19195"', b'"-1.19195"'), "bad_price"),
        (LINES[0].replace(b'"1.19195"', b"1.19195"), "bad_price"),
        (LINES[0].replace(b'"1.19195"', b'"1e400"'), "bad_price"),
        (LINES[0].replace(b'"1.19195"', b'"123456789012345.1"'), "bad_price"),
        (LINES[0].replace(b"2017-09-24T22:20:39.888097022Z", b"yesterday"), "bad_time"),
        (b'{"type":"HEARTBEAT"}', "missing_field"),
        (b'{"type":"PRICE","x":"' + b"a" * 70000 + b'"}', "oversized_line"),
    ],
)
def test_bad_lines_raise_with_reason(line: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_oanda_line(line, "x", 0)
    assert info.value.reason == reason
