"""Candle subjects, their Nats-Msg-Ids and the market-last keys (pure functions)."""

from __future__ import annotations

import pytest

from app.core.candles import Candle
from app.sinks.nats.last_value import decode_entry, encode_entry
from app.sinks.nats.subjects import (
    WireFormatError,
    candle_message_id,
    candle_subject,
    last_value_key,
    message_id,
)
from app.wire import codec


def candle(source: str, symbol: str = "EURUSD", tf: str = "1m", revision: int = 0) -> bytes:
    c = Candle(symbol, source, tf, 60, 120, *([1] * 12), 3, 61, 119, revision)
    return codec.encode_candle(c)


def test_best_price_candles_have_four_tokens_and_per_source_five():
    assert candle_subject("market", candle("data-ingestion")) == "market.candles.1m.EURUSD"
    assert candle_subject("market", candle("ic_markets")) == "market.candles.1m.EURUSD.ic_markets"
    assert candle_subject("m.x", candle("a.b*", "XAU>USD")) == "m.x.candles.1m.XAU_USD.a_b_"
    with pytest.raises(WireFormatError):
        candle_subject("market", b"\xff\xff\xff")


def test_candle_ids_name_the_window_and_revision():
    assert candle_message_id(candle("fxcm", revision=2)) == "candle:fxcm:EURUSD:1m:60:2"
    assert candle_message_id(candle("fxcm")) != candle_message_id(candle("fxcm", revision=1))
    assert candle_message_id(b"\xff\xff\xff") == message_id(b"\xff\xff\xff")


def test_last_value_keys():
    assert last_value_key("market.data-ingestion.ticks", "market") == "best"
    assert last_value_key("market.ic_markets.ticks", "market") is None
    assert last_value_key("market.candles.1m.EURUSD", "market") == "candle.1m.EURUSD"
    assert last_value_key("market.candles.1m.EURUSD.fxcm", "market") is None
    assert last_value_key("market.context.fred", "market") is None
    value = encode_entry(42, "market.data-ingestion.ticks", b"\x00\nbytes")
    assert decode_entry(value) == (42, "market.data-ingestion.ticks", b"\x00\nbytes")
