"""Protobuf vs JSON on the pipeline's real output: bytes per tick, encode/decode us per tick.

The input is what the faust agent hands to `codec.encode_market_data`: the BestPrice
lists `TickProcessor` emits for the benchmark backlog (batched as the agent batches
them). JSON gets exactly the same content (13 tick fields incl. the nested lineage,
source, batch time) through the standard library `json`, compact separators. Decoding
is timed WITH reading every field of every tick, so both sides give usable values; the
parse alone (`ParseFromString` vs `json.loads`, how the issue measured its 3.8x) is
reported next to it: upb parses eagerly in C but builds Python values only when a field
is read, so the parse-only figure flatters protobuf.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.core.models import BestPrice
from app.core.processor import SymbolState, TickProcessor
from app.pipeline.topics import RAW_BROKER_TICKS
from app.settings import get_settings
from app.sources.brokers.registry import payload_parsers
from app.sources.dukascopy.bi5 import SOURCE as DUKASCOPY
from app.wire import codec
from bench.data import backlog


def emitted_batches(ticks: int, batch: int) -> list[list[BestPrice]]:
    """The BestPrice lists the pipeline emits for the backlog, one list per raw message."""
    processor = TickProcessor(get_settings(), payload_parsers(), (DUKASCOPY,))
    states: dict[bytes, SymbolState] = {}
    out = []
    for offset, (key, value, _n) in enumerate(backlog(ticks, batch)):
        records = list(codec.decode_raw_batch(value).records)
        state = states.setdefault(key, SymbolState())
        result = processor.process(key.decode(), records, RAW_BROKER_TICKS, 0, offset, state, True)
        if result.emitted:
            out.append(result.emitted)
    return out


def to_json(best: list[BestPrice]) -> bytes:
    ticks = []
    for item in best:
        t = item.tick
        ticks.append(
            {
                "symbol": t.symbol,
                "source": t.source,
                "bid_e9": t.bid,
                "ask_e9": t.ask,
                "bid_volume": t.bid_volume,
                "ask_volume": t.ask_volume,
                "event_time_ns": t.event_time_ns,
                "receive_time_ns": t.receive_time_ns,
                "lineage": {
                    "topic": t.topic,
                    "partition": t.partition,
                    "offset": t.offset,
                    "index": t.index,
                },
                "best_bid_e9": item.best_bid,
                "best_bid_source": item.best_bid_source,
                "best_ask_e9": item.best_ask,
                "best_ask_source": item.best_ask_source,
            }
        )
    doc = {
        "ticks": ticks,
        "source": codec.OUTPUT_SOURCE,
        "batch_time_ns": best[-1].tick.event_time_ns,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def read_json(data: bytes) -> int:
    doc = json.loads(data)
    total = doc["batch_time_ns"] + len(doc["source"])
    for t in doc["ticks"]:
        lin = t["lineage"]
        total += (
            t["bid_e9"] + t["ask_e9"] + t["event_time_ns"] + t["receive_time_ns"]
            + t["best_bid_e9"] + t["best_ask_e9"] + lin["partition"] + lin["offset"] + lin["index"]
            + len(t["symbol"]) + len(t["source"]) + len(t["best_bid_source"])
            + len(t["best_ask_source"]) + len(lin["topic"])
        )  # fmt: skip
        total += int(t["bid_volume"] + t["ask_volume"])
    return total


def read_proto(data: bytes) -> int:
    stream = codec.decode_market_data(data)
    total = stream.batch_time_ns + len(stream.source)
    for t in stream.ticks:
        lin = t.lineage
        total += (
            t.bid_e9 + t.ask_e9 + t.event_time_ns + t.receive_time_ns
            + t.best_bid_e9 + t.best_ask_e9 + lin.partition + lin.offset + lin.index
            + len(t.symbol) + len(t.source) + len(t.best_bid_source)
            + len(t.best_ask_source) + len(lin.topic)
        )  # fmt: skip
        total += int(t.bid_volume + t.ask_volume)
    return total


def parse_json(data: bytes) -> int:
    """Parse only; one field read so the document is dropped, not kept (like read_json)."""
    return json.loads(data)["batch_time_ns"]


def parse_proto(data: bytes) -> int:
    return codec.decode_market_data(data).batch_time_ns


def _best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Best of `repeats` timings of fn() in seconds (least disturbed by the shared CPU)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


@dataclass
class CodecResult:
    batch: int
    ticks: int
    proto_bytes_per_tick: float
    json_bytes_per_tick: float
    proto_encode_us: float
    json_encode_us: float
    proto_decode_us: float
    json_decode_us: float
    proto_parse_us: float
    json_parse_us: float

    @property
    def size_ratio(self) -> float:
        return self.proto_bytes_per_tick / self.json_bytes_per_tick

    @property
    def round_trip_speedup(self) -> float:
        return (self.json_encode_us + self.json_decode_us) / (
            self.proto_encode_us + self.proto_decode_us
        )

    @property
    def parse_only_speedup(self) -> float:
        return (self.json_encode_us + self.json_parse_us) / (
            self.proto_encode_us + self.proto_parse_us
        )


def run(ticks: int = 20_000, batch: int = 200, repeats: int = 5) -> CodecResult:
    batches = emitted_batches(ticks, batch)
    n = sum(len(b) for b in batches)
    proto = [codec.encode_market_data(b) for b in batches]
    js = [to_json(b) for b in batches]
    if [read_proto(p) for p in proto] != [read_json(j) for j in js]:
        raise AssertionError("protobuf and JSON do not carry the same content")
    per_tick_us = 1e6 / n
    return CodecResult(
        batch=batch,
        ticks=n,
        proto_bytes_per_tick=sum(map(len, proto)) / n,
        json_bytes_per_tick=sum(map(len, js)) / n,
        proto_encode_us=_best_of(lambda: [codec.encode_market_data(b) for b in batches], repeats)
        * per_tick_us,
        json_encode_us=_best_of(lambda: [to_json(b) for b in batches], repeats) * per_tick_us,
        proto_decode_us=_best_of(lambda: [read_proto(p) for p in proto], repeats) * per_tick_us,
        json_decode_us=_best_of(lambda: [read_json(j) for j in js], repeats) * per_tick_us,
        proto_parse_us=_best_of(lambda: [parse_proto(p) for p in proto], repeats) * per_tick_us,
        json_parse_us=_best_of(lambda: [parse_json(j) for j in js], repeats) * per_tick_us,
    )
