"""`faust -A app tail TOPIC [--symbol S] [--json] [--from-beginning] [--max N]`.

Prints what downstream consumers get, decoded from protobuf: one line per tick, context
observation or rejection.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer
from faust.cli import AppCommand, argument, option
from google.protobuf.json_format import MessageToDict

from app.cli.exits import usage_error
from app.core.models import format_price
from app.pipeline.faust_app import app, settings
from app.pipeline.kafka_clients import exits_on_kafka_failure, kafka_options
from app.pipeline.topics import (
    MARKET_CONTEXT_STREAM,
    MARKET_DATA_REJECTS,
    MARKET_DATA_STREAM,
    RAW_BROKER_TICKS,
    RAW_EXTERNAL_DATA,
    RAW_HISTORICAL_TICKS,
)
from app.wire import codec

RAW_TOPICS = (RAW_BROKER_TICKS, RAW_HISTORICAL_TICKS, RAW_EXTERNAL_DATA)
TAILABLE = (MARKET_DATA_STREAM, MARKET_CONTEXT_STREAM, MARKET_DATA_REJECTS, *RAW_TOPICS)


def _time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds")


def _tick_dict(tick: codec.MarketTick) -> dict[str, Any]:
    out = MessageToDict(tick, preserving_proto_field_name=True)
    out["bid"] = format_price(tick.bid_e9)
    out["ask"] = format_price(tick.ask_e9)
    return out


def _tick_line(tick: codec.MarketTick) -> str:
    line = (
        f"{tick.symbol:<8} {tick.source:<12} bid {format_price(tick.bid_e9):<12} "
        f"ask {format_price(tick.ask_e9):<12} {_time(tick.event_time_ns)}"
    )
    if tick.best_bid_source:
        line += (
            f"  best bid {format_price(tick.best_bid_e9)} ({tick.best_bid_source})"
            f" best ask {format_price(tick.best_ask_e9)} ({tick.best_ask_source})"
        )
    return line


def format_message(topic: str, value: bytes, as_json: bool) -> list[str]:
    """Decode one Kafka message of a service topic into printable lines."""
    if topic == MARKET_DATA_STREAM:
        stream = codec.decode_market_data(value)
        if as_json:
            return [
                json.dumps({"stream_source": stream.source, **_tick_dict(t)}) for t in stream.ticks
            ]
        return [f"[{stream.source}] {_tick_line(t)}" for t in stream.ticks]
    if topic == MARKET_CONTEXT_STREAM:
        ctx = codec.MarketContext()
        ctx.ParseFromString(value)
        if as_json:
            return [json.dumps(MessageToDict(ctx, preserving_proto_field_name=True))]
        return [
            f"{ctx.provider}:{ctx.series} = {ctx.value:g} {ctx.unit} "
            f"at {_time(ctx.observation_time_ns)} {dict(ctx.attributes) or ''}".rstrip()
        ]
    if topic == MARKET_DATA_REJECTS:
        rej = codec.decode_rejection(value)
        if as_json:
            out = MessageToDict(rej, preserving_proto_field_name=True)
            out["record"]["payload"] = rej.record.payload.decode("utf-8", "replace")
            return [json.dumps(out)]
        payload = rej.record.payload[:120].decode("utf-8", "replace")
        reasons = ",".join(rej.reasons)
        return [f"{rej.stage}: {reasons} ({rej.detail}) from {rej.record.source}: {payload}"]
    batch = codec.decode_raw_batch(value)
    lines = []
    for record in batch.records:
        if as_json:
            out = MessageToDict(record, preserving_proto_field_name=True)
            out["payload"] = record.payload.decode("utf-8", "replace")
            lines.append(json.dumps(out))
        elif record.HasField("tick"):
            lines.append(f"[{record.source}] {_tick_line(record.tick)}")
        else:
            lines.append(f"[{record.source}/{record.format}] {record.payload[:160]!r}")
    return lines


def matches_symbol(key: bytes | None, symbol: str | None) -> bool:
    """Whether a message keyed `key` (one symbol, or several of one partition) has `symbol`."""
    return symbol is None or symbol in codec.key_symbols(key)


@app.command(
    argument("topic", type=str),
    option("--symbol", default=None, help="Only messages keyed by this symbol."),
    option("--json", "as_json", is_flag=True, help="One JSON object per line."),
    option("--from-beginning", is_flag=True, help="Start at the oldest message."),
    option("--max", "max_lines", type=int, default=0, help="Stop after this many lines."),
    option("--timeout", type=float, default=0.0, help="Stop after this many idle seconds."),
)
@exits_on_kafka_failure
async def tail(
    self: AppCommand,
    topic: str,
    symbol: str | None,
    as_json: bool,
    from_beginning: bool,
    max_lines: int,
    timeout: float,
) -> None:
    """Print decoded messages of market-data-stream, market-context-stream, rejects or raw."""
    if topic not in TAILABLE:
        usage_error(f"unknown topic {topic!r}; one of: {', '.join(TAILABLE)}")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        **kafka_options(),
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    printed = 0
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=int(timeout * 1000) or 1000)
            if not batches and timeout:
                return
            for records in batches.values():
                for rec in records:
                    if not matches_symbol(rec.key, symbol):
                        continue
                    for line in format_message(topic, rec.value, as_json):
                        print(line, flush=True)
                        printed += 1
                        if max_lines and printed >= max_lines:
                            return
    finally:
        await consumer.stop()
