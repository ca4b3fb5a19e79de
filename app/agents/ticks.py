"""The processing agents: raw.broker.ticks / raw.historical.ticks -> market-data-stream.

Per Kafka message (one RawBatch of one symbol): read each table key once, run every
record through `TickProcessor` (no await per tick), write each changed key once, then
produce ONE MarketDataStream (if anything changed) and one Rejection per rejected record.
Tables are written before the first await, so the two agents (which share the
reject-counts keys of a symbol) never interleave a read-modify-write.

Guarantee: at-least-once. Outputs and changelog writes are produced before the input
offset is committed (faust flushes the producer before it commits). A message that is
delivered again after a crash is skipped when the tables already hold its effects
(`applied-offsets`), so state is never applied twice; otherwise it is processed again
and gives the same bytes under the same key (no wall clock in the output).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from app import codec
from app.agents.processing import (
    MALFORMED_BATCH,
    STAGE_PARSE,
    BatchResult,
    Rejected,
    SymbolState,
    TickProcessor,
)
from app.faust_app import app, settings
from app.tables.ticks import (
    applied_offsets,
    best_price,
    broker_clock,
    historical_price,
    last_price,
    quality,
    reject_counts,
)
from app.topics import (
    market_data_rejects,
    market_data_stream,
    raw_broker_ticks,
    raw_historical_ticks,
)

log = logging.getLogger(__name__)

processor = TickProcessor(settings)


class PipelineMetrics:
    """Live timing of this worker (observability only; never written to Kafka or tables)."""

    def __init__(self, alpha: float = 0.05) -> None:
        self.alpha = alpha
        self.batches = 0
        self.ticks = 0
        self.skipped_batches = 0
        self.batch_ms = 0.0
        self.distribution_latency_ms: float | None = None

    def observe(self, started: float, records: int, last_receive_ns: int | None) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.batches += 1
        self.ticks += records
        self.batch_ms += self.alpha * (elapsed_ms - self.batch_ms)
        if last_receive_ns:
            latency = (time.time_ns() - last_receive_ns) / 1e6
            prev = self.distribution_latency_ms
            self.distribution_latency_ms = (
                latency if prev is None else prev + self.alpha * (latency - prev)
            )


metrics = PipelineMetrics()


def _rejection_bytes(rej: Rejected, topic: str, partition: int, offset: int) -> bytes:
    return codec.encode_rejection(
        rej.reasons, rej.detail, rej.record, rej.stage, topic, partition, offset, rej.index
    )


async def _send_rejects(
    key: bytes, result: BatchResult, topic: str, partition: int, offset: int
) -> None:
    for rej in result.rejected:
        await market_data_rejects.send(
            key=key, value=_rejection_bytes(rej, topic, partition, offset)
        )


async def _handle(key: bytes | None, value: bytes, event: Any, live: bool) -> None:
    started = time.perf_counter()
    message = event.message
    topic, partition, offset = message.topic, message.partition, message.offset
    out_key = key or b""
    symbol = out_key.decode("utf-8", "replace")
    guard_key = f"{topic}/{partition}".encode()
    applied = applied_offsets.get(guard_key)
    if applied is not None and offset <= applied:
        metrics.skipped_batches += 1
        log.info("skip %s@%d: already applied (tables at offset %d)", guard_key, offset, applied)
        return
    try:
        records = list(codec.decode_raw_batch(value).records)
    except Exception as exc:  # protobuf raises DecodeError; anything else is as undecodable
        counts = reject_counts.get(out_key) or {}
        counts[MALFORMED_BATCH] = counts.get(MALFORMED_BATCH, 0) + 1
        reject_counts[out_key] = counts
        applied_offsets[guard_key] = offset
        record = codec.RawRecord(payload=value)
        result = BatchResult(
            rejected=[
                Rejected(
                    [MALFORMED_BATCH], f"undecodable RawBatch: {exc!r:.300}", record, STAGE_PARSE, 0
                )
            ]
        )
        await _send_rejects(out_key, result, topic, partition, offset)
        return

    quotes_table = last_price if live else historical_price
    sources = {r.tick.source or r.source for r in records}
    clock_keys = {s: f"{topic}/{partition}/{s}".encode() for s in sources}
    state = SymbolState(
        quotes=quotes_table.get(out_key) or {},
        clocks={s: c for s, k in clock_keys.items() if (c := broker_clock.get(k)) is not None},
        quality=(quality.get(out_key) or {}) if live else {},
        best=best_price.get(out_key) if live else None,
        rejects=reject_counts.get(out_key) or {},
    )
    result = processor.process(symbol, records, topic, partition, offset, state, live)

    # Write each changed key once, before any await.
    if result.accepted:
        quotes_table[out_key] = state.quotes
        for source in result.changed_clocks:
            broker_clock[clock_keys[source]] = state.clocks[source]
    if live and (result.accepted or result.rejected):
        quality[out_key] = state.quality
    if result.emitted:
        best_price[out_key] = state.best
    if result.rejected:
        reject_counts[out_key] = state.rejects
    applied_offsets[guard_key] = offset

    if result.emitted:
        await market_data_stream.send(key=out_key, value=codec.encode_market_data(result.emitted))
    for source, ticks in result.passed.items():
        await market_data_stream.send(key=out_key, value=codec.encode_source_ticks(source, ticks))
    await _send_rejects(out_key, result, topic, partition, offset)
    last_receive = (
        records[-1].tick.receive_time_ns or records[-1].receive_time_ns if records else None
    )
    metrics.observe(started, len(records), last_receive)


@app.agent(raw_broker_ticks)
async def process_broker_ticks(stream: Any) -> None:
    """Live broker ticks: validation, broker quality, best price across brokers."""
    async for key, value in stream.items():
        await _handle(key, value, stream.current_event, live=True)


@app.agent(raw_historical_ticks)
async def process_historical_ticks(stream: Any) -> None:
    """Historical ticks: validation, then passed through per source."""
    async for key, value in stream.items():
        await _handle(key, value, stream.current_event, live=False)
