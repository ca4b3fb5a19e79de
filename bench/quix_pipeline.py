"""The same pipeline stages in Quix Streams, for comparison (bench only, never deployed).

raw RawBatch (key = symbol) -> parse/validate (app.core.validation) -> state in Quix's RocksDB
(changelogged) -> best price (app.core.best_price) -> MarketDataStream protobuf -> output topic,
rejects -> rejects topic. The per-batch work is the app's own `TickProcessor` (the same
rules and best-price function, called the same way as the faust agent calls them), so the
comparison measures the stream-processing framework, not two different rule sets.

State layout mirrors the faust tables: one value per symbol (app.tables.values);
the per-partition broker clocks under their own prefix in the same partition's store.

Run: python -m bench.quix_pipeline --bootstrap HOST:PORT --group G --state-dir DIR
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from quixstreams import Application, message_context

from app.core.processor import BatchResult, SymbolState, TickProcessor
from app.settings import get_settings
from app.sources.brokers.registry import payload_parsers
from app.sources.dukascopy.bi5 import SOURCE as DUKASCOPY
from app.tables.values import SymbolStateValue, from_builtins, to_builtins
from app.wire import codec

OUTPUT, REJECT = 0, 1
CLOCK_PREFIX = b"__broker_clock__"


def build(args: argparse.Namespace) -> Application:
    quix = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    raw = quix.topic(args.input, key_deserializer="bytes", value_deserializer="bytes")
    out = quix.topic(args.output, key_serializer="bytes", value_serializer="bytes")
    rejects = quix.topic(args.rejects, key_serializer="bytes", value_serializer="bytes")
    processor = TickProcessor(get_settings(), payload_parsers(), (DUKASCOPY,))
    raw_sdf = quix.dataframe(raw)

    def process(value: bytes, key: bytes, _ts: int, _headers: Any, state: Any) -> list:
        ctx = message_context()
        topic, partition, offset = ctx.topic, ctx.partition, ctx.offset
        records = list(codec.decode_raw_batch(value).records)
        transaction = raw_sdf.processing_context.checkpoint.get_store_transaction(
            stream_id=raw_sdf.stream_id, partition=partition
        )
        clocks_state = transaction.as_state(prefix=CLOCK_PREFIX)
        sources = {r.tick.source or r.source for r in records}
        clock_keys = {s: f"{topic}/{partition}/{s}" for s in sources}
        stored = from_builtins(SymbolStateValue, state.get("symbol"))
        symbol_state = SymbolState(
            quotes=stored.quotes,
            clocks={s: c for s, k in clock_keys.items() if (c := clocks_state.get(k)) is not None},
            quality=stored.quality,
            best=stored.best,
            rejects=stored.rejects,
        )
        result: BatchResult = processor.process(
            key.decode(), records, topic, partition, offset, symbol_state, True
        )
        for source in result.changed_clocks:
            clocks_state.set(clock_keys[source], symbol_state.clocks[source])
        if result.accepted or result.rejected:
            value = SymbolStateValue(
                symbol_state.quotes, symbol_state.quality, symbol_state.best, symbol_state.rejects
            )
            state.set("symbol", to_builtins(value))
        produced: list = []
        if result.emitted:
            produced.append((OUTPUT, codec.encode_market_data(result.emitted)))
        for rej in result.rejected:
            produced.append(
                (
                    REJECT,
                    codec.encode_rejection(
                        rej.reasons, rej.detail, rej.record, rej.stage,
                        topic, partition, offset, rej.index,
                    ),
                )
            )  # fmt: skip
        return produced

    sdf = raw_sdf.apply(process, stateful=True, metadata=True, expand=True)
    # Quix stamps outputs with the INPUT message's timestamp by default; the bench measures
    # from the output CreateTime, so stamp the time of processing like faust/aiokafka do.
    sdf = sdf.set_timestamp(lambda _value, _key, _ts, _headers: time.time_ns() // 1_000_000)
    sdf[sdf.apply(lambda item: item[0] == OUTPUT)].apply(lambda item: item[1]).to_topic(out)
    sdf[sdf.apply(lambda item: item[0] == REJECT)].apply(lambda item: item[1]).to_topic(rejects)
    return quix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--input", default="raw.broker.ticks")
    parser.add_argument("--output", default="bench.quix.market-data-stream")
    parser.add_argument("--rejects", default="bench.quix.market-data-rejects")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    build(args).run()


if __name__ == "__main__":
    main()
