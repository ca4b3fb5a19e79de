"""The processing agents: raw.broker.ticks / raw.historical.ticks -> market-data-stream.

The agents take the raw messages in groups (`take_events`: whatever arrived, up to
TAKE_MAX, waiting at most TAKE_WITHIN), and for a group:
1. read each table key once, run every record of every message through `TickProcessor`
   (pure, no await per tick),
2. produce the outputs (one MarketDataStream per input message that changed something,
   one Rejection per rejected record) and wait for Kafka to acknowledge them all at once,
3. only then write each changed table key once, and let faust ack the input offsets.

Guarantee: at-least-once without loss. The order outputs-acked -> state-written ->
offsets-committed means a crash at any point either re-processes a message with its
effects not yet in the tables (the same bytes are produced again under the same key:
a duplicate, never a loss), or finds its effects in the tables (`applied-offsets`), in
which case its outputs were acknowledged before and it is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import faust

# faust (pinned 0.15.3) picks a table change's partition from the event being processed;
# the writes here happen after the group's outputs are acknowledged, so each write is
# done inside the context of the event it belongs to.
from faust.streams import _current_event

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
from app.metrics import BATCH_SECONDS, END_TO_END_SECONDS, REJECTS, TICKS_IN, TICKS_OUT
from app.tables.ticks import (
    applied_offsets,
    best_price,
    broker_clock,
    historical_price,
    historical_reject_counts,
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

TAKE_MAX = 500
TAKE_WITHIN = 0.001  # seconds; the extra latency of a lone message at low rates

processor = TickProcessor(settings)


@contextmanager
def in_event(event: faust.EventT) -> Iterator[None]:
    """Make `event` faust's current event, so table writes go to its partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class PipelineMetrics:
    """Live timing of this worker (observability only; never written to Kafka or tables)."""

    def __init__(self, alpha: float = 0.05) -> None:
        self.alpha = alpha
        self.batches = 0
        self.ticks = 0
        self.skipped_batches = 0
        self.batch_ms = 0.0
        self.distribution_latency_ms: float | None = None

    def observe(self, started: float, messages: int, records: int, last_receive_ns: int) -> None:
        elapsed = time.perf_counter() - started
        BATCH_SECONDS.observe(elapsed / max(messages, 1))
        self.batches += messages
        self.ticks += records
        self.batch_ms += self.alpha * (elapsed * 1000 / max(messages, 1) - self.batch_ms)
        if last_receive_ns:
            latency_s = (time.time_ns() - last_receive_ns) / 1e9
            END_TO_END_SECONDS.observe(latency_s)
            prev = self.distribution_latency_ms
            latency = latency_s * 1000
            self.distribution_latency_ms = (
                latency if prev is None else prev + self.alpha * (latency - prev)
            )


metrics = PipelineMetrics()


@dataclass(slots=True)
class _Loaded:
    """A symbol's table values for one group, plus which of them the group changed."""

    state: SymbolState
    clock_keys: dict[str, bytes]
    event: faust.EventT
    quotes_changed: bool = False
    changed_clocks: set[str] = field(default_factory=set)
    quality_changed: bool = False
    best_changed: bool = False
    rejects_changed: bool = False


class GroupProcessor:
    """One group of raw messages of one agent: state read once, written once."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.quotes_table = last_price if live else historical_price
        self.rejects_table = reject_counts if live else historical_reject_counts
        self.loaded: dict[bytes, _Loaded] = {}
        self.clocks: dict[tuple[str, int], dict[str, int]] = {}
        self.applied: dict[bytes, tuple[int, faust.EventT]] = {}
        self.outputs: list[tuple[faust.TopicT, bytes, bytes]] = []
        self.records = 0
        self.last_receive_ns = 0

    def _load(self, key: bytes, event: faust.EventT, sources: set[str]) -> _Loaded:
        topic, partition = event.message.topic, event.message.partition
        loaded = self.loaded.get(key)
        if loaded is None:
            # One clock dict per input partition, shared by its symbols in this group.
            clocks = self.clocks.setdefault((topic, partition), {})
            state = SymbolState(
                quotes=self.quotes_table.get(key) or {},
                clocks=clocks,
                quality=(quality.get(key) or {}) if self.live else {},
                best=best_price.get(key) if self.live else None,
                rejects=self.rejects_table.get(key) or {},
            )
            loaded = self.loaded[key] = _Loaded(state, {}, event)
        for source in sources - loaded.clock_keys.keys():
            clock_key = f"{topic}/{partition}/{source}".encode()
            loaded.clock_keys[source] = clock_key
            if source not in loaded.state.clocks:
                value = broker_clock.get(clock_key)
                if value is not None:
                    loaded.state.clocks[source] = value
        return loaded

    def _applied_offset(self, guard: bytes) -> int | None:
        if guard in self.applied:
            return self.applied[guard][0]
        return applied_offsets.get(guard)

    def add(self, event: faust.EventT) -> None:
        """Process one raw message; outputs are collected, nothing is written yet."""
        key, value, message = event.key, event.value, event.message
        topic, partition, offset = message.topic, message.partition, message.offset
        out_key = key or b""
        guard = f"{topic}/{partition}".encode()
        applied = self._applied_offset(guard)
        if applied is not None and offset <= applied:
            metrics.skipped_batches += 1
            log.info("skip %s@%d: already applied (tables at offset %d)", guard, offset, applied)
            return
        self.applied[guard] = (offset, event)
        symbol = out_key.decode("utf-8", "replace")
        try:
            records = list(codec.decode_raw_batch(value).records)
        except Exception as exc:  # protobuf's DecodeError, or anything else undecodable
            loaded = self._load(out_key, event, set())
            rejected = Rejected(
                [MALFORMED_BATCH],
                f"undecodable RawBatch: {exc!r:.300}",
                codec.RawRecord(payload=value),
                STAGE_PARSE,
                0,
            )
            counts = loaded.state.rejects
            counts[MALFORMED_BATCH] = counts.get(MALFORMED_BATCH, 0) + 1
            loaded.rejects_changed = True
            self._collect(out_key, BatchResult(rejected=[rejected]), topic, partition, offset)
            return
        sources = {r.tick.source or r.source for r in records}
        loaded = self._load(out_key, event, sources)
        result = processor.process(
            symbol, records, topic, partition, offset, loaded.state, self.live
        )
        loaded.quotes_changed |= result.accepted > 0
        loaded.changed_clocks |= result.changed_clocks
        loaded.quality_changed |= self.live and bool(result.accepted or result.rejected)
        loaded.best_changed |= bool(result.emitted)
        loaded.rejects_changed |= bool(result.rejected)
        self._collect(out_key, result, topic, partition, offset)
        self.records += len(records)
        if records:
            last = records[-1]
            self.last_receive_ns = last.tick.receive_time_ns or last.receive_time_ns
        if len(sources) == 1:
            TICKS_IN.labels(*sources).inc(len(records))
        else:
            for record in records:
                TICKS_IN.labels(record.tick.source or record.source).inc()

    def _collect(
        self, key: bytes, result: BatchResult, topic: str, partition: int, offset: int
    ) -> None:
        if result.emitted:
            self.outputs.append((market_data_stream, key, codec.encode_market_data(result.emitted)))
            TICKS_OUT.labels(codec.OUTPUT_SOURCE).inc(len(result.emitted))
        for source, ticks in result.passed.items():
            self.outputs.append((market_data_stream, key, codec.encode_source_ticks(source, ticks)))
            TICKS_OUT.labels(source).inc(len(ticks))
        for rej in result.rejected:
            value = codec.encode_rejection(
                rej.reasons, rej.detail, rej.record, rej.stage, topic, partition, offset, rej.index
            )
            self.outputs.append((market_data_rejects, key, value))
            for reason in rej.reasons:
                REJECTS.labels(rej.stage, reason).inc()

    async def publish(self) -> None:
        """Send every output without awaiting each, then wait for all acknowledgements."""
        pending = [await topic.send(key=key, value=value) for topic, key, value in self.outputs]
        if pending:
            await asyncio.gather(*pending)

    def write_tables(self) -> None:
        """Each changed key once; called only after the outputs are acknowledged."""
        for key, loaded in self.loaded.items():
            state = loaded.state
            with in_event(loaded.event):
                if loaded.quotes_changed:
                    self.quotes_table[key] = state.quotes
                for source in loaded.changed_clocks:
                    broker_clock[loaded.clock_keys[source]] = state.clocks[source]
                if loaded.quality_changed:
                    quality[key] = state.quality
                if loaded.best_changed:
                    best_price[key] = state.best
                if loaded.rejects_changed:
                    self.rejects_table[key] = state.rejects
        for guard, (offset, event) in self.applied.items():
            with in_event(event):
                applied_offsets[guard] = offset


async def process_group(events: Sequence[faust.EventT], live: bool) -> None:
    started = time.perf_counter()
    group = GroupProcessor(live)
    for event in events:
        group.add(event)
    await group.publish()
    group.write_tables()
    metrics.observe(started, len(events), group.records, group.last_receive_ns)


@app.agent(raw_broker_ticks)
async def process_broker_ticks(stream: Any) -> None:
    """Live broker ticks: validation, broker quality, best price across brokers."""
    async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN):
        await process_group(events, live=True)


@app.agent(raw_historical_ticks)
async def process_historical_ticks(stream: Any) -> None:
    """Historical ticks: validation, then passed through per source."""
    async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN):
        await process_group(events, live=False)
