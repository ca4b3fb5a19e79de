"""Subject and Nats-Msg-Id derivation of the NATS bridge (pure, no NATS)."""

from __future__ import annotations

import pytest

from app.settings import ConfigError, load_settings
from app.sinks.nats.subjects import (
    WireFormatError,
    context_subject,
    market_data_subject,
    message_id,
    subject_token,
)
from app.wire import codec


def _market_data(source: str, ticks: int = 3) -> bytes:
    stream = codec.MarketDataStream(source=source, batch_time_ns=1_700_000_000_000_000_000)
    for i in range(ticks):
        tick = stream.ticks.add(symbol="EURUSD", source="ic_markets", bid_e9=1_085_000_000 + i)
        tick.lineage.topic = "raw.broker.ticks"
        tick.lineage.offset = i
    return stream.SerializeToString()


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("data-ingestion", "data-ingestion"),
        ("dukascopy", "dukascopy"),
        ("ic.markets", "ic_markets"),
        ("a b", "a_b"),
        ("feed*", "feed_"),
        ("feed>", "feed_"),
        ("", "unknown"),
        ("  ", "unknown"),
        ("fx/eur\tusd", "fx_eur_usd"),
    ],
)
def test_subject_token_is_one_safe_token(name: str, token: str):
    assert subject_token(name) == token


def test_market_data_subject_uses_the_stream_source():
    assert market_data_subject("market", _market_data("data-ingestion")) == (
        "market.data-ingestion.ticks"
    )
    assert market_data_subject("prod.market", _market_data("dukascopy")) == (
        "prod.market.dukascopy.ticks"
    )


def test_market_data_subject_ignores_the_ticks_own_source_fields():
    # The ticks inside carry source "ic_markets" and best_*_source: only the top level counts.
    stream = codec.MarketDataStream(source="data-ingestion")
    stream.ticks.add(symbol="EURUSD", source="ic_markets", best_bid_source="fxcm")
    assert market_data_subject("market", stream.SerializeToString()) == (
        "market.data-ingestion.ticks"
    )


def test_market_data_subject_sanitises_a_hostile_source():
    assert market_data_subject("market", _market_data("evil.>")) == "market.evil__.ticks"


def test_market_data_without_source_goes_to_unknown():
    assert market_data_subject("market", _market_data("")) == "market.unknown.ticks"
    assert market_data_subject("market", b"") == "market.unknown.ticks"


def test_context_subject_uses_the_provider():
    ctx = codec.MarketContext(provider="fred", series="DGS10", value=4.25, unit="percent")
    ctx.attributes["note"] = "x"
    assert context_subject("market", ctx.SerializeToString()) == "market.context.fred"


def test_large_batches_route_by_their_source():
    data = _market_data("dukascopy", ticks=500)
    assert market_data_subject("market", data) == "market.dukascopy.ticks"


@pytest.mark.parametrize("data", [b"\x12\x10abc", b"\x08", b"\x0b\x00", b"\x12\x02\xff\xfe"])
def test_corrupt_bytes_raise_wire_format_error(data: bytes):
    with pytest.raises(WireFormatError):
        market_data_subject("market", data)
    with pytest.raises(WireFormatError):
        context_subject("market", data)


def test_message_id_is_deterministic_and_distinct():
    payloads = [
        codec.MarketDataStream(source="data-ingestion", batch_time_ns=i).SerializeToString()
        for i in range(400)
    ]
    assert message_id(payloads[7]) == message_id(bytes(payloads[7]))
    assert len({message_id(p) for p in payloads}) == 400
    assert len(message_id(payloads[0])) == 32


@pytest.mark.parametrize("prefix", ["market.*", "a..b", "mar ket", ">", ""])
def test_settings_reject_a_prefix_that_is_not_a_plain_subject(prefix: str):
    with pytest.raises(ConfigError, match=r"nats\.subject_prefix"):
        load_settings(environ={"INGEST__NATS__SUBJECT_PREFIX": f'"{prefix}"'})  # JSON string
