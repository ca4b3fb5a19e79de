"""The processing agents: raw.broker.ticks / raw.historical.ticks -> market-data-stream.

Each agent hands its events to the delivery engine (`app.pipeline.delivery`), which orders
outputs acknowledged -> state written -> offsets acked. What is tick-specific lives here: a
`TickGroup` reads each table key once, runs every record of every message through the pure
`TickProcessor` (no await per tick), collects the outputs (one MarketDataStream per input
message that changed something, one Rejection per rejected record) and the new table
values. Each symbol's value carries the offset of the last raw message applied to it, so a
message re-read after a crash whose effects are already in the table is skipped (its
outputs were acknowledged before that value was written).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import faust

from app.compat.faust_kafka import in_event
from app.core.candle_feed import SymbolCandles, flush_of, late_ticks, merge_history
from app.core.candles import Candle, CandleParams
from app.core.models import Tick
from app.core.processor import (
    BatchResult,
    Rejected,
    SymbolState,
    TickProcessor,
    records_by_symbol,
)
from app.core.reasons import LATE_FOR_CANDLE, MALFORMED_BATCH, STAGE_CANDLE, STAGE_PARSE
from app.ops.metrics import (
    CANDLE_LATE_REJECTS,
    CANDLES_OUT,
    REJECTS,
    SYMBOL_TICKS_IN,
    LabelledCounter,
)
from app.ops.metrics import TICKS_IN as _TICKS_IN
from app.ops.metrics import TICKS_OUT as _TICKS_OUT
from app.ops.runtime import pipeline_timings
from app.pipeline.delivery import DeliveryEngine, StateWrite
from app.pipeline.faust_app import app, settings
from app.pipeline.topics import (
    market_candles,
    market_data_rejects,
    market_data_stream,
    raw_broker_ticks,
    raw_historical_ticks,
)
from app.sources.brokers.registry import payload_parsers
from app.sources.dukascopy.bi5 import SOURCE as DUKASCOPY
from app.tables.candles import candle_history, history_key
from app.tables.ticks import (
    historical_partition_state,
    historical_state,
    partition_state,
    symbol_state,
)
from app.tables.values import CandleHistoryValue, PartitionClocks, SymbolStateValue, decode, encode
from app.wire import codec

log = logging.getLogger(__name__)

TICKS_IN = LabelledCounter(_TICKS_IN)
TICKS_OUT = LabelledCounter(_TICKS_OUT)
# Per configured symbol only (a raw key is any bytes: no unbounded label values). The
# series exist at 0 from start-up, so a symbol that never ticks trips the market-hours alert.
SYMBOL_TICKS = {
    symbol: SYMBOL_TICKS_IN.labels(symbol, instrument.asset_class)
    for symbol, instrument in settings.instruments.items()
}
CANDLES_ON = settings.candles.enabled
CANDLE_PARAMS = CandleParams.from_settings(settings.candles)
CANDLE_HISTORY = settings.candles.history
HISTORY_TIMEFRAMES = frozenset(settings.candles.kept_history())


@dataclass(slots=True)
class _Loaded:
    """A symbol's state for one group, the event it came with, and whether it changed.

    `applied` maps input partition -> offset of the last raw message of this symbol whose
    effects are in `state`; it is stored in the same table value as the state, so one
    changelog record holds both and a crash can never leave one ahead of the other.
    """

    state: SymbolState
    applied: dict[str, int]
    event: faust.EventT
    candles: SymbolCandles
    changed: bool = False


@dataclass(slots=True)
class _Partition:
    """An input partition's broker clocks for one group (the `stale` rule)."""

    clocks: dict[str, int]
    event: faust.EventT | None = None  # the group's last event that changed them


@dataclass(slots=True)
class MessageOutputs:
    """What one raw message produces: per stream source, the symbols (in order of first
    appearance) and their ticks; and the rejections, each keyed by its symbol."""

    streams: dict[str, tuple[list[bytes], list[Any]]] = field(default_factory=dict)
    rejections: list[tuple[bytes, Rejected]] = field(default_factory=list)

    def add(self, source: str, key: bytes, items: Sequence[Any]) -> None:
        entry = self.streams.get(source)
        if entry is None:
            entry = self.streams[source] = ([], [])
        if key not in entry[0]:
            entry[0].append(key)
        entry[1].extend(items)


class InFlight:
    """State changed by groups whose writes are not made yet.

    Their table writes wait for their outputs' acknowledgements, so the next group,
    processed in the meantime, reads these values instead of the (older) tables.
    """

    def __init__(self) -> None:
        self.symbols: dict[bytes, _Loaded] = {}
        self.partitions: dict[bytes, _Partition] = {}
        self.histories: dict[bytes, CandleHistoryValue] = {}

    def hold(self, group: TickGroup) -> None:
        for key, loaded in group.loaded.items():
            if loaded.changed:
                self.symbols[key] = loaded
        for guard, part in group.partitions.items():
            if part.event is not None:
                self.partitions[guard] = part
        for hkey, (value, _event) in group.histories.items():
            self.histories[hkey] = value

    def release(self, group: TickGroup) -> None:
        """After `group`'s writes: forget what no later group changed since."""
        for key, loaded in group.loaded.items():
            if self.symbols.get(key) is loaded:
                del self.symbols[key]
        for guard, part in group.partitions.items():
            if self.partitions.get(guard) is part:
                del self.partitions[guard]
        for hkey, (value, _event) in group.histories.items():
            if self.histories.get(hkey) is value:
                del self.histories[hkey]


class TickGroup:
    """One group of raw messages of one agent: state read once, new values written once."""

    def __init__(self, processor: TickProcessor, live: bool, in_flight: InFlight) -> None:
        self.processor = processor
        self.live = live
        self.in_flight = in_flight
        self.state_table = symbol_state if live else historical_state
        self.partition_table = partition_state if live else historical_partition_state
        self.loaded: dict[bytes, _Loaded] = {}
        self.partitions: dict[bytes, _Partition] = {}
        self.outputs: list[tuple[faust.TopicT, bytes, bytes, int | None]] = []
        self.writes: list[StateWrite] = []
        self.records = 0
        self.last_receive_ns = 0
        # history key -> (candles emitted by this group, the event of their symbol)
        self.new_candles: dict[bytes, tuple[list[Candle], faust.EventT]] = {}
        self.histories: dict[bytes, tuple[CandleHistoryValue, faust.EventT]] = {}

    def _partition(self, guard: bytes, event: faust.EventT) -> _Partition:
        part = self.partitions.get(guard)
        if part is None:
            held = self.in_flight.partitions.get(guard)
            if held is not None:
                clocks = held.clocks
            else:
                with in_event(event):
                    clocks = decode(PartitionClocks, self.partition_table.get(guard)).clocks
            part = self.partitions[guard] = _Partition(clocks)
        return part

    def _load(self, key: bytes, event: faust.EventT, clocks: dict[str, int]) -> _Loaded:
        loaded = self.loaded.get(key)
        if loaded is None:
            held = self.in_flight.symbols.get(key)
            if held is not None:
                held.state.clocks = clocks
                loaded = self.loaded[key] = _Loaded(held.state, held.applied, event, held.candles)
                return loaded
            # faust's RocksDB store reads from the CURRENT event's partition only: read
            # inside this event's context, or a key of another partition reads as empty.
            with in_event(event):
                value = decode(SymbolStateValue, self.state_table.get(key))
            state = SymbolState(value.quotes, clocks, value.quality, value.best, value.rejects)
            candles = SymbolCandles(key.decode("utf-8", "replace"), value.candles, CANDLE_PARAMS)
            loaded = self.loaded[key] = _Loaded(state, value.applied, event, candles)
        return loaded

    def add(self, event: faust.EventT) -> None:
        """Process one raw message; outputs are collected, nothing is written yet.

        A message may hold records of several symbols of its partition (the raw writer
        batches per partition): each symbol's records go through the rules with that
        symbol's state, and the message's outputs are one MarketDataStream per stream
        source holding every symbol's ticks, in the message's partition.
        """
        key, value, message = event.key, event.value, event.message
        topic, partition, offset = message.topic, message.partition, message.offset
        out_key = key or b""
        part = self._partition(f"{topic}/{partition}".encode(), event)
        try:
            records = list(codec.decode_raw_batch(value).records)
            if not records:
                # Empty bytes, or junk protobuf happens to read as unknown fields only:
                # nothing to process, but the message must not vanish without a trace.
                raise ValueError("no records")
        except Exception as exc:  # protobuf's DecodeError, or anything else undecodable
            loaded = self._apply(out_key, event, part, offset)
            if loaded is None:
                return
            rejected = Rejected(
                [MALFORMED_BATCH],
                f"undecodable RawBatch: {exc!r:.300}",
                codec.RawRecord(payload=value),
                STAGE_PARSE,
                0,
            )
            counts = loaded.state.rejects
            counts[MALFORMED_BATCH] = counts.get(MALFORMED_BATCH, 0) + 1
            outputs = MessageOutputs()
            self._collect(outputs, out_key, BatchResult(rejected=[rejected]))
            self._append_outputs(outputs, partition, topic, offset)
            return
        by_symbol = records_by_symbol(records, out_key)
        outputs = MessageOutputs()
        for symbol_key, (indices, symbol_records) in by_symbol.items():
            loaded = self._apply(symbol_key, event, part, offset)
            if loaded is None:
                continue
            flush = flush_of(symbol_records)
            if flush is not None:
                # end of an import: the source's last windows leave; no tick, no reject
                if CANDLES_ON:
                    self._emit(loaded.candles.advance(*flush), event)
                continue
            symbol = symbol_key.decode("utf-8", "replace")
            result = self.processor.process(
                symbol,
                symbol_records,
                topic,
                partition,
                offset,
                loaded.state,
                self.live,
                indices if len(by_symbol) > 1 else None,
            )
            if result.changed_clocks:
                part.event = event
            self._collect(outputs, symbol_key, result)
            if result.accepted and CANDLES_ON:
                self._candles(symbol_key, loaded.candles, result, event)
            self.records += len(symbol_records)
            for source, count in result.records_by_source.items():
                TICKS_IN.child(source).inc(count)
            if self.live and symbol in SYMBOL_TICKS:
                SYMBOL_TICKS[symbol].inc(len(symbol_records))
        self._append_outputs(outputs, partition, topic, offset)
        last = records[-1]
        self.last_receive_ns = last.tick.receive_time_ns or last.receive_time_ns

    def _apply(
        self, key: bytes, event: faust.EventT, part: _Partition, offset: int
    ) -> _Loaded | None:
        """The symbol's state to apply this message to; None if it is applied already."""
        loaded = self._load(key, event, part.clocks)
        partition = str(event.message.partition)
        applied = loaded.applied.get(partition, -1)
        if offset <= applied:
            log.info(
                "skip %s/%s@%d for %r: already applied (at %d)",
                event.message.topic,
                partition,
                offset,
                key,
                applied,
            )
            return None
        loaded.applied[partition] = offset
        loaded.event = event
        loaded.changed = True
        return loaded

    def _collect(self, outputs: MessageOutputs, key: bytes, result: BatchResult) -> None:
        """A symbol's share of the message's outputs; its rejections go out at once."""
        if result.emitted:
            outputs.add(codec.OUTPUT_SOURCE, key, result.emitted)
            TICKS_OUT.child(codec.OUTPUT_SOURCE).inc(len(result.emitted))
        for source, ticks in result.passed.items():
            outputs.add(source, key, ticks)
            TICKS_OUT.child(source).inc(len(ticks))
        for rej in result.rejected:
            outputs.rejections.append((key, rej))
            for reason in rej.reasons:
                REJECTS.labels(rej.stage, reason).inc()

    def _append_outputs(
        self, outputs: MessageOutputs, partition: int, topic: str, offset: int
    ) -> None:
        """The message's outputs, in a deterministic order (bytes are a function of the
        message and the state: a re-processed message re-produces the same bytes)."""
        for source, (keys, items) in outputs.streams.items():
            value = (
                codec.encode_market_data(items)
                if source == codec.OUTPUT_SOURCE
                else codec.encode_source_ticks(source, items)
            )
            # several symbols: all of this partition, so sent to it (same partition count)
            where = None if len(keys) == 1 else partition
            self.outputs.append((market_data_stream, codec.KEY_SEPARATOR.join(keys), value, where))
        for key, rej in outputs.rejections:
            value = codec.encode_rejection(
                rej.reasons, rej.detail, rej.record, rej.stage, topic, partition, offset, rej.index
            )
            self.outputs.append((market_data_rejects, key, value, None))

    def _candles(
        self, key: bytes, candles: SymbolCandles, result: BatchResult, event: faust.EventT
    ) -> None:
        """Feed the accepted ticks into the symbol's candle books; collect candles and rejects.

        Live: the best-price stream (book `data-ingestion`, the emitted best prices) and one
        book per broker (its accepted ticks); history: one book per source.
        """
        feeds: list[tuple[str, list[Tick]]] = []
        if self.live:
            if result.emitted:
                feeds.append((codec.OUTPUT_SOURCE, [bp.tick for bp in result.emitted]))
            by_source: dict[str, list[Tick]] = {}
            for tick in result.live_accepted:
                by_source.setdefault(tick.source, []).append(tick)
            feeds.extend(by_source.items())
        else:
            feeds.extend(result.passed.items())
        for source, ticks in feeds:
            emitted, rejects = candles.feed(source, ticks)
            self._emit(emitted, event)
            if rejects:
                self._late(key, source, ticks, rejects)

    def _emit(self, emitted: list[Candle], event: faust.EventT) -> None:
        for candle in emitted:
            self.outputs.append(
                (market_candles, candle.key.encode(), codec.encode_candle(candle), None)
            )
            CANDLES_OUT.labels(candle.timeframe).inc()
            if self.live and candle.timeframe in HISTORY_TIMEFRAMES:
                hkey = history_key(candle.symbol, candle.timeframe)
                entry = self.new_candles.get(hkey)
                if entry is None:
                    entry = self.new_candles[hkey] = ([], event)
                entry[0].append(candle)

    def _late(self, key: bytes, source: str, ticks: list[Tick], rejects: list[Any]) -> None:
        """One market-data-rejects record per tick that some timeframe refused (rare)."""
        for late in late_ticks(ticks, rejects):
            t = late.tick
            record = codec.RawRecord(
                source=t.source,
                format="tick",
                receive_time_ns=t.receive_time_ns,
                tick=codec.fill_tick(codec.MarketTick(), t),
            )
            value = codec.encode_rejection(
                [LATE_FOR_CANDLE],
                f"book {source}: {late.detail}",
                record,
                STAGE_CANDLE,
                t.topic,
                t.partition,
                t.offset,
                t.index,
            )
            self.outputs.append((market_data_rejects, key, value, None))
            REJECTS.labels(STAGE_CANDLE, LATE_FOR_CANDLE).inc()
            for timeframe in late.timeframes:
                CANDLE_LATE_REJECTS.labels(source, timeframe).inc()

    def _history(self, hkey: bytes, event: faust.EventT) -> CandleHistoryValue:
        found = self.histories.get(hkey)
        if found is not None:
            return found[0]
        held = self.in_flight.histories.get(hkey)
        if held is not None:
            # copy: the held value is what an earlier group will write
            return CandleHistoryValue({s: list(rows) for s, rows in held.rows.items()})
        with in_event(event):
            return decode(CandleHistoryValue, candle_history.get(hkey))

    def freeze(self) -> None:
        """Encode what this group will write, before the next group changes the same state."""
        for key, loaded in self.loaded.items():
            if loaded.changed:
                state = loaded.state
                value = SymbolStateValue(
                    quotes=state.quotes,
                    rejects=state.rejects,
                    applied=loaded.applied,
                    quality=state.quality if self.live else {},
                    best=state.best if self.live else None,
                    candles=loaded.candles.encode(),
                )
                self.writes.append(StateWrite(self.state_table, key, encode(value), loaded.event))
        for hkey, (candles, event) in self.new_candles.items():
            history = self._history(hkey, event)
            merge_history(history.rows, candles, CANDLE_HISTORY)
            self.histories[hkey] = (history, event)
            self.writes.append(StateWrite(candle_history, hkey, encode(history), event))
        # Rank 1: after the symbols. A crash in between leaves the clocks behind (a laxer
        # `stale` check for the re-processed ticks), never ahead of the state they summarise.
        for guard, part in self.partitions.items():
            if part.event is not None:
                value = encode(PartitionClocks(part.clocks))
                self.writes.append(
                    StateWrite(self.partition_table, guard, value, part.event, rank=1)
                )
        self.in_flight.hold(self)

    def released(self) -> None:
        self.in_flight.release(self)


def write_in_event(write: StateWrite) -> None:
    """A table write in the partition of the event it belongs to (faust's changelog rule)."""
    with in_event(write.event):
        write.table[write.key] = write.value


def processing_agent(topic: faust.TopicT, live: bool, name: str) -> Any:
    """The agent of one raw topic: its events through TickGroups and the delivery engine."""
    processor = TickProcessor(settings, payload_parsers(), (DUKASCOPY,))

    async def agent(stream: Any) -> None:
        in_flight = InFlight()

        def process(events: Sequence[faust.EventT]) -> TickGroup:
            group = TickGroup(processor, live, in_flight)
            for event in events:
                group.add(event)
            group.freeze()
            return group

        def on_acknowledged(group: Any, events: list[Any], started: float) -> None:
            pipeline_timings.observe(started, len(events), group.records, group.last_receive_ns)

        engine = DeliveryEngine(
            process,  # type: ignore[arg-type]
            write_in_event,
            app.assignor.assigned_actives,  # type: ignore[arg-type]
            settings.kafka.table_write_interval_ms / 1000,
            on_acknowledged,
        )
        try:
            async for event in stream.noack().events():
                await engine.add(event)
        finally:
            engine.stop()

    agent.__name__ = agent.__qualname__ = name
    agent.__doc__ = f"{topic.get_topic_name()} -> market-data-stream"
    return app.agent(topic, name=f"{__name__}.{name}")(agent)


# Live broker ticks: validation, broker quality, best price across brokers.
process_broker_ticks = processing_agent(raw_broker_ticks, True, "process_broker_ticks")
# Historical ticks: validation, then passed through per source.
process_historical_ticks = processing_agent(raw_historical_ticks, False, "process_historical_ticks")
