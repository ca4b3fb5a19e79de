"""Protobuf at the edge: the one module that imports the generated code.

Everything that turns records into bytes for Kafka/NATS, or back, goes through here, so
the wire format has one owner and one set of round-trip tests.
Run `python -m app.wire.codec --generate` after editing proto/market_data.proto.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from app.core.candles import Candle
from app.core.models import BestPrice, Tick
from app.wire import market_data_pb2 as pb

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"
GENERATED_DIR = Path(__file__).resolve().parent

MarketTick = pb.MarketTick
MarketDataStream = pb.MarketDataStream
MarketContext = pb.MarketContext
RawRecord = pb.RawRecord
RawBatch = pb.RawBatch
Rejection = pb.Rejection
Lineage = pb.Lineage

OUTPUT_SOURCE = "data-ingestion"
# A raw or market-data-stream message holding several symbols (all of one partition) is
# keyed by them joined with this; a message of one symbol is keyed by the symbol.
KEY_SEPARATOR = b","


def key_symbols(key: bytes | None) -> list[str]:
    """The symbols a message key names (one, or several joined by KEY_SEPARATOR)."""
    return (key or b"").decode("utf-8", "replace").split(",")


def encode_raw_batch(records: Iterable[RawRecord]) -> bytes:
    """One Kafka message carrying one or many raw records."""
    batch = RawBatch()
    batch.records.extend(records)
    return batch.SerializeToString()


def decode_raw_batch(data: bytes) -> RawBatch:
    batch = RawBatch()
    batch.ParseFromString(data)
    return batch


def fill_tick(msg: MarketTick, tick: Tick) -> MarketTick:
    """Copy a Tick into a MarketTick message (in place, for use with `.add()`)."""
    msg.symbol = tick.symbol
    msg.source = tick.source
    msg.bid_e9 = tick.bid
    msg.ask_e9 = tick.ask
    msg.bid_volume = tick.bid_volume
    msg.ask_volume = tick.ask_volume
    msg.event_time_ns = tick.event_time_ns
    msg.receive_time_ns = tick.receive_time_ns
    if tick.topic:
        lineage = msg.lineage
        lineage.topic = tick.topic
        lineage.partition = tick.partition
        lineage.offset = tick.offset
        lineage.index = tick.index
    return msg


def tick_from_proto(msg: MarketTick) -> Tick:
    return Tick(
        symbol=msg.symbol,
        source=msg.source,
        bid=msg.bid_e9,
        ask=msg.ask_e9,
        bid_volume=msg.bid_volume,
        ask_volume=msg.ask_volume,
        event_time_ns=msg.event_time_ns,
        receive_time_ns=msg.receive_time_ns,
        topic=msg.lineage.topic,
        partition=msg.lineage.partition,
        offset=msg.lineage.offset,
        index=msg.lineage.index,
    )


def encode_market_data(best: Iterable[BestPrice]) -> bytes:
    """A MarketDataStream of best prices; batch time is the last tick's event time.

    No wall clock enters the bytes, so replaying the same input gives the same output.
    """
    stream = MarketDataStream(source=OUTPUT_SOURCE)
    for item in best:
        msg = fill_tick(stream.ticks.add(), item.tick)
        msg.best_bid_e9 = item.best_bid
        msg.best_bid_source = item.best_bid_source
        msg.best_ask_e9 = item.best_ask
        msg.best_ask_source = item.best_ask_source
        stream.batch_time_ns = item.tick.event_time_ns
    return stream.SerializeToString()


def encode_source_ticks(source: str, ticks: Iterable[Tick]) -> bytes:
    """A MarketDataStream of one source's validated ticks (history: no best-price fields)."""
    stream = MarketDataStream(source=source)
    for tick in ticks:
        fill_tick(stream.ticks.add(), tick)
        stream.batch_time_ns = tick.event_time_ns
    return stream.SerializeToString()


def decode_market_data(data: bytes) -> MarketDataStream:
    stream = MarketDataStream()
    stream.ParseFromString(data)
    return stream


def encode_rejection(
    reasons: Iterable[str],
    detail: str,
    record: RawRecord,
    stage: str,
    topic: str = "",
    partition: int = -1,
    offset: int = -1,
    index: int = 0,
) -> bytes:
    """A dead-letter record: reason codes plus the original record, payload unchanged."""
    rejection = Rejection(reasons=list(reasons), detail=detail, stage=stage)
    rejection.record.CopyFrom(record)
    if topic:
        rejection.lineage.topic = topic
        rejection.lineage.partition = partition
        rejection.lineage.offset = offset
        rejection.lineage.index = index
    return rejection.SerializeToString()


def decode_rejection(data: bytes) -> Rejection:
    rejection = Rejection()
    rejection.ParseFromString(data)
    return rejection


def encode_market_context(
    *,
    provider: str,
    series: str,
    value: float,
    unit: str,
    observation_time_ns: int,
    category: str,
    attributes: dict[str, str],
    receive_time_ns: int,
) -> bytes:
    """One MarketContext; deterministic map order so a replay gives identical bytes."""
    msg = MarketContext(
        provider=provider,
        series=series,
        value=value,
        unit=unit,
        observation_time_ns=observation_time_ns,
        category=category,
        receive_time_ns=receive_time_ns,
    )
    msg.attributes.update(attributes)
    return msg.SerializeToString(deterministic=True)


def decode_market_context(data: bytes) -> MarketContext:
    msg = MarketContext()
    msg.ParseFromString(data)
    return msg


def encode_candle(candle: Candle) -> bytes:
    """One `market-candles` message (key: `candle.key`); no clock, so replays are identical."""
    return pb.Candle(
        symbol=candle.symbol,
        source=candle.source,
        timeframe=candle.timeframe,
        start_ns=candle.start_ns,
        end_ns=candle.end_ns,
        bid_open_e9=candle.bid_open,
        bid_high_e9=candle.bid_high,
        bid_low_e9=candle.bid_low,
        bid_close_e9=candle.bid_close,
        ask_open_e9=candle.ask_open,
        ask_high_e9=candle.ask_high,
        ask_low_e9=candle.ask_low,
        ask_close_e9=candle.ask_close,
        mid2_open_e9=candle.mid2_open,
        mid2_high_e9=candle.mid2_high,
        mid2_low_e9=candle.mid2_low,
        mid2_close_e9=candle.mid2_close,
        tick_count=candle.tick_count,
        first_event_time_ns=candle.first_event_ns,
        last_event_time_ns=candle.last_event_ns,
        revision=candle.revision,
    ).SerializeToString()


def decode_candle(data: bytes) -> Candle:
    msg = pb.Candle()
    msg.ParseFromString(data)
    return Candle(
        symbol=msg.symbol,
        source=msg.source,
        timeframe=msg.timeframe,
        start_ns=msg.start_ns,
        end_ns=msg.end_ns,
        bid_open=msg.bid_open_e9,
        bid_high=msg.bid_high_e9,
        bid_low=msg.bid_low_e9,
        bid_close=msg.bid_close_e9,
        ask_open=msg.ask_open_e9,
        ask_high=msg.ask_high_e9,
        ask_low=msg.ask_low_e9,
        ask_close=msg.ask_close_e9,
        mid2_open=msg.mid2_open_e9,
        mid2_high=msg.mid2_high_e9,
        mid2_low=msg.mid2_low_e9,
        mid2_close=msg.mid2_close_e9,
        tick_count=msg.tick_count,
        first_event_ns=msg.first_event_time_ns,
        last_event_ns=msg.last_event_time_ns,
        revision=msg.revision,
    )


def generate(out_dir: Path = GENERATED_DIR) -> None:
    """Regenerate the Python module from proto/ with the pinned grpcio-tools protoc."""
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        str(PROTO_DIR / "market_data.proto"),
    ]
    subprocess.run(cmd, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--generate", action="store_true", help="regenerate app/wire/market_data_pb2.py from proto/"
    )
    args = parser.parse_args()
    if args.generate:
        generate()
    else:
        parser.print_help()


_RAW_BATCH_RECORD_TAG = b"\x0a"  # RawBatch.records: field 1, length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_raw_batch_from_encoded(encoded_records: Iterable[bytes]) -> bytes:
    """A RawBatch from records serialized once already (`RawRecord.SerializeToString()`).

    Byte-identical to `encode_raw_batch`; a batching writer serializes each record when it
    is buffered (to know the batch size in bytes) and must not pay for it twice.
    """
    return b"".join(
        _RAW_BATCH_RECORD_TAG + _varint(len(record)) + record for record in encoded_records
    )


if __name__ == "__main__":
    main()


def encode_tick_records(ticks: Iterable[Tick], source: str, fmt: str = "tick") -> bytes:
    """A RawBatch of ticks a source decoded itself (format "tick", no payload).

    The record's receive time is the tick's: no wall clock enters the bytes, so the
    same input file always gives the same message.
    """
    batch = RawBatch()
    add = batch.records.add
    for tick in ticks:
        record = add()
        record.source = source
        record.format = fmt
        record.receive_time_ns = tick.receive_time_ns
        fill_tick(record.tick, tick)
    return batch.SerializeToString()
