"""Round trips of the wire format, and a guard against stale generated code."""

from pathlib import Path

from app.core.models import BestPrice, Tick, parse_price
from app.wire import codec


def _tick(**kw) -> Tick:
    base = dict(
        symbol="EURUSD",
        source="ic_markets",
        bid=parse_price("1.19195"),
        ask=parse_price("1.19216"),
        bid_volume=1e7,
        ask_volume=5e5,
        event_time_ns=1_506_291_639_888_097_022,
        receive_time_ns=1_506_291_639_900_000_000,
        topic="raw.broker.ticks",
        partition=3,
        offset=42,
        index=1,
    )
    base.update(kw)
    return Tick(**base)


def test_generated_module_matches_proto(tmp_path: Path) -> None:
    codec.generate(tmp_path)
    for name in ("market_data_pb2.py", "market_data_pb2.pyi"):
        fresh = (tmp_path / name).read_text()
        committed = (codec.GENERATED_DIR / name).read_text()
        assert fresh == committed, f"{name} is stale: run python -m app.wire.codec --generate"


def test_market_data_round_trip_is_exact() -> None:
    tick = _tick()
    best = BestPrice(tick, tick.bid, "ic_markets", parse_price("1.19210"), "pepperstone")
    data = codec.encode_market_data([best])
    stream = codec.decode_market_data(data)
    assert stream.source == "data-ingestion"
    assert stream.batch_time_ns == tick.event_time_ns
    (msg,) = stream.ticks
    assert codec.tick_from_proto(msg) == tick
    assert (msg.best_ask_e9, msg.best_ask_source) == (parse_price("1.19210"), "pepperstone")


def test_same_input_gives_same_bytes() -> None:
    ticks = [BestPrice(_tick(offset=i), 1, "a", 2, "b") for i in range(3)]
    assert codec.encode_market_data(ticks) == codec.encode_market_data(list(ticks))


def test_rejection_keeps_the_raw_payload() -> None:
    record = codec.RawRecord(source="ic_markets", format="oanda_v20", payload=b"{not json\xff")
    data = codec.encode_rejection(["malformed_json"], "Expecting value", record, "parse")
    back = codec.decode_rejection(data)
    assert back.record.payload == b"{not json\xff"
    assert list(back.reasons) == ["malformed_json"]


def test_raw_batch_round_trip() -> None:
    records = [
        codec.RawRecord(source="s", format="oanda_v20", payload=b"x%d" % i) for i in range(5)
    ]
    batch = codec.decode_raw_batch(codec.encode_raw_batch(records))
    assert [r.payload for r in batch.records] == [b"x0", b"x1", b"x2", b"x3", b"x4"]
