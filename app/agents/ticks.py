"""The processing agents: raw.broker.ticks / raw.historical.ticks -> market-data-stream.

Raw messages are processed in groups: whatever accumulated while the previous group was
being published (one message when ticks are rare, hundreds under load; no timer, so a
lone message waits for nothing). For a group:
1. read each table key once, run every record of every message through `TickProcessor`
   (pure, no await per tick),
2. produce the outputs (one MarketDataStream per input message that changed something,
   one Rejection per rejected record) and wait for Kafka to acknowledge them all at once,
3. only then write each changed table key once, and then ack the input events (the
   stream is `noack`: faust commits an offset only once its event is acked). The writes
   of consecutive acknowledged groups are merged and made at most every
   `kafka.table_write_interval_ms`: a key changed by fifty single-tick groups is written
   (RocksDB + changelog record) once, not fifty times.

Guarantee: at-least-once without loss. The order outputs-acked -> state-written ->
offsets-committed means a crash at any point either re-processes a message with its
effects not yet in the tables (the same bytes are produced again under the same key:
a duplicate, which the NATS bridge drops by content), or finds its effects in the tables
(`applied` offset of its partition), in which case its outputs were acknowledged before
and it is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.errors import KafkaError

# faust (pinned 0.15.3) takes a table key's partition - for writes and for RocksDB reads -
# from the event being processed; groups are read and written outside faust's own
# iteration, so each access is done inside the context of the event it belongs to.
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
from app.metrics import (
    BATCH_SECONDS,
    END_TO_END_SECONDS,
    REJECTS,
    SYMBOL_TICKS_IN,
    TICKS_IN,
    TICKS_OUT,
)
from app.tables.ticks import historical_state, partition_state, symbol_state
from app.topics import (
    market_data_rejects,
    market_data_stream,
    raw_broker_ticks,
    raw_historical_ticks,
)

log = logging.getLogger(__name__)

GROUP_MAX = 500  # raw messages per group; the agent waits when this many are pending
PUBLISH_RETRY_MAX_S = 5.0
WRITE_INTERVAL_S = settings.kafka.table_write_interval_ms / 1000

processor = TickProcessor(settings)


@contextmanager
def in_event(event: faust.EventT) -> Iterator[None]:
    """Make `event` faust's current event: table reads and writes use its partition."""
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
    """A symbol's state for one group, the event it came with, and whether it changed.

    `applied` maps input partition -> offset of the last raw message of this symbol whose
    effects are in `state`; it is stored in the same table value as the state, so one
    changelog record holds both and a crash can never leave one ahead of the other.
    """

    state: SymbolState
    applied: dict[str, int]
    event: faust.EventT
    changed: bool = False


@dataclass(slots=True)
class _Partition:
    """An input partition's broker clocks for one group (the `stale` rule)."""

    clocks: dict[str, int]
    event: faust.EventT | None = None  # the group's last event that changed them


class InFlight:
    """State changed by the group whose outputs are not acknowledged yet.

    Its table writes wait for those acknowledgements, so the next group, processed in the
    meantime, reads these values instead of the (older) tables.
    """

    def __init__(self) -> None:
        self.symbols: dict[bytes, _Loaded] = {}
        self.partitions: dict[bytes, _Partition] = {}

    def hold(self, group: GroupProcessor) -> None:
        for key, loaded in group.loaded.items():
            if loaded.changed:
                self.symbols[key] = loaded
        for guard, part in group.partitions.items():
            if part.event is not None:
                self.partitions[guard] = part

    def release(self, group: GroupProcessor) -> None:
        """After `group`'s writes: forget what no later group changed since."""
        for key, loaded in group.loaded.items():
            if self.symbols.get(key) is loaded:
                del self.symbols[key]
        for guard, part in group.partitions.items():
            if self.partitions.get(guard) is part:
                del self.partitions[guard]


class GroupProcessor:
    """One group of raw messages of one agent: state read once, written once."""

    def __init__(self, live: bool, in_flight: InFlight | None = None) -> None:
        self.live = live
        self.in_flight = in_flight or InFlight()
        self.state_table = symbol_state if live else historical_state
        self.loaded: dict[bytes, _Loaded] = {}
        self.partitions: dict[bytes, _Partition] = {}
        self.outputs: list[tuple[faust.TopicT, bytes, bytes]] = []
        self.pending: list[asyncio.Future[Any]] = []
        self.snapshot: list[tuple[faust.TableT, bytes, dict[str, Any], faust.EventT]] = []
        self.records = 0
        self.last_receive_ns = 0

    def _partition(self, guard: bytes, event: faust.EventT) -> _Partition:
        part = self.partitions.get(guard)
        if part is None:
            held = self.in_flight.partitions.get(guard)
            if held is not None:
                clocks = held.clocks
            else:
                with in_event(event):
                    clocks = (partition_state.get(guard) or {}).get("clocks", {})
            part = self.partitions[guard] = _Partition(clocks)
        return part

    def _load(self, key: bytes, event: faust.EventT, clocks: dict[str, int]) -> _Loaded:
        loaded = self.loaded.get(key)
        if loaded is None:
            held = self.in_flight.symbols.get(key)
            if held is not None:
                held.state.clocks = clocks
                loaded = self.loaded[key] = _Loaded(held.state, held.applied, event)
                return loaded
            # faust's RocksDB store reads from the CURRENT event's partition only: read
            # inside this event's context, or a key of another partition reads as empty.
            with in_event(event):
                value = self.state_table.get(key) or {}
            state = SymbolState(
                quotes=value.get("quotes", {}),
                clocks=clocks,
                quality=value.get("quality", {}),
                best=value.get("best"),
                rejects=value.get("rejects", {}),
            )
            loaded = self.loaded[key] = _Loaded(state, value.get("applied", {}), event)
        return loaded

    def add(self, event: faust.EventT) -> None:
        """Process one raw message; outputs are collected, nothing is written yet."""
        key, value, message = event.key, event.value, event.message
        topic, partition, offset = message.topic, message.partition, message.offset
        out_key = key or b""
        part = self._partition(f"{topic}/{partition}".encode(), event)
        loaded = self._load(out_key, event, part.clocks)
        applied = loaded.applied.get(str(partition), -1)
        if offset <= applied:
            log.info("skip %s/%d@%d: already applied (at %d)", topic, partition, offset, applied)
            return
        loaded.applied[str(partition)] = offset
        loaded.event = event
        loaded.changed = True
        symbol = out_key.decode("utf-8", "replace")
        try:
            records = list(codec.decode_raw_batch(value).records)
            if not records:
                # Empty bytes, or junk protobuf happens to read as unknown fields only:
                # nothing to process, but the message must not vanish without a trace.
                raise ValueError("no records")
        except Exception as exc:  # protobuf's DecodeError, or anything else undecodable
            rejected = Rejected(
                [MALFORMED_BATCH],
                f"undecodable RawBatch: {exc!r:.300}",
                codec.RawRecord(payload=value),
                STAGE_PARSE,
                0,
            )
            counts = loaded.state.rejects
            counts[MALFORMED_BATCH] = counts.get(MALFORMED_BATCH, 0) + 1
            self._collect(out_key, BatchResult(rejected=[rejected]), topic, partition, offset)
            return
        result = processor.process(
            symbol, records, topic, partition, offset, loaded.state, self.live
        )
        if result.changed_clocks:
            part.event = event
        self._collect(out_key, result, topic, partition, offset)
        self.records += len(records)
        if records:
            last = records[-1]
            self.last_receive_ns = last.tick.receive_time_ns or last.receive_time_ns
            _count_in(result.records_by_source)
            if self.live:
                _symbol_ticks(symbol).inc(len(records))

    def _collect(
        self, key: bytes, result: BatchResult, topic: str, partition: int, offset: int
    ) -> None:
        if result.emitted:
            self.outputs.append((market_data_stream, key, codec.encode_market_data(result.emitted)))
            _ticks_out(codec.OUTPUT_SOURCE).inc(len(result.emitted))
        for source, ticks in result.passed.items():
            self.outputs.append((market_data_stream, key, codec.encode_source_ticks(source, ticks)))
            _ticks_out(source).inc(len(ticks))
        for rej in result.rejected:
            value = codec.encode_rejection(
                rej.reasons, rej.detail, rej.record, rej.stage, topic, partition, offset, rej.index
            )
            self.outputs.append((market_data_rejects, key, value))
            for reason in rej.reasons:
                REJECTS.labels(rej.stage, reason).inc()

    def freeze(self) -> None:
        """Copy what this group will write, before the next group changes the same state."""
        for key, loaded in self.loaded.items():
            if loaded.changed:
                state = loaded.state
                value: dict[str, Any] = {
                    "quotes": dict(state.quotes),
                    "rejects": dict(state.rejects),
                    "applied": dict(loaded.applied),
                }
                if self.live:
                    value["quality"] = {b: list(v) for b, v in state.quality.items()}
                    value["best"] = state.best
                self.snapshot.append((self.state_table, key, value, loaded.event))
        # After the symbols: a crash in between leaves the clocks behind (a laxer `stale`
        # check for the re-processed ticks), never ahead of the state they summarise.
        for guard, part in self.partitions.items():
            if part.event is not None:
                self.snapshot.append(
                    (partition_state, guard, {"clocks": dict(part.clocks)}, part.event)
                )
        self.in_flight.hold(self)

    async def send(self) -> None:
        """Hand every output to the producer; the acknowledgements come later."""
        self.pending = [
            await topic.send(key=key, value=value) for topic, key, value in self.outputs
        ]

    async def acknowledged(self) -> None:
        """Wait for every output's acknowledgement.

        A failed send (Kafka unreachable past the producer's own retries) sends the whole
        group again after a pause rather than dropping anything: copies are identical
        bytes, which downstream de-duplication absorbs.
        """
        delay = 0.1
        while True:
            try:
                if self.pending:
                    await asyncio.gather(*self.pending)
                return
            except KafkaError as exc:
                log.warning("outputs not acknowledged (%r); sending again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, PUBLISH_RETRY_MAX_S)
                try:
                    await self.send()
                except KafkaError as again:
                    log.warning("sending again failed: %r", again)


class Acknowledged:
    """Groups whose outputs Kafka acknowledged and whose state is not written yet.

    `write` merges them: each table key gets its newest value once (values are whole
    snapshots, so the newest one holds the effects of every group before it), symbols
    before partition clocks as within one group. Only then are the groups' events acked.
    """

    def __init__(self, in_flight: InFlight) -> None:
        self.in_flight = in_flight
        self.groups: list[tuple[GroupProcessor, list[faust.EventT]]] = []

    def add(self, group: GroupProcessor, events: list[faust.EventT]) -> None:
        self.groups.append((group, events))

    def write(self) -> None:
        groups, self.groups = self.groups, []
        if not groups:
            return
        owned = app.assignor.assigned_actives()
        symbols: dict[tuple[str, bytes], tuple[faust.TableT, dict[str, Any], faust.EventT]] = {}
        partitions: dict[bytes, tuple[dict[str, Any], faust.EventT]] = {}
        for group, _events in groups:
            for table, key, value, event in group.snapshot:
                if table is partition_state:
                    partitions[key] = (value, event)
                else:
                    symbols[(table.name, key)] = (table, value, event)
        # A partition revoked meanwhile belongs to another worker now: its events stay
        # unacked (that worker re-reads them) and its keys are not written from here.
        for (_name, key), (table, value, event) in symbols.items():
            if event.message.tp in owned:
                with in_event(event):
                    table[key] = value
        for key, (value, event) in partitions.items():
            if event.message.tp in owned:
                with in_event(event):
                    partition_state[key] = value
        for group, events in groups:
            self.in_flight.release(group)
            for event in events:
                if event.message.tp in owned:
                    event.ack()


_TICKS_IN: dict[str, Any] = {}
_TICKS_OUT: dict[str, Any] = {}


def _ticks_out(stream: str) -> Any:
    """The labelled counter, looked up once per label (labels() is costly per call)."""
    child = _TICKS_OUT.get(stream)
    if child is None:
        child = _TICKS_OUT[stream] = TICKS_OUT.labels(stream)
    return child


def _symbol_ticks(symbol: str) -> Any:
    """Per-symbol live counter; series of configured symbols exist at 0 from start-up, so a
    symbol that never ticks also trips the "no ticks during market hours" alert."""
    child = _SYMBOL_TICKS.get(symbol)
    if child is None:
        instrument = settings.instruments.get(symbol)
        asset_class = instrument.asset_class if instrument else "unknown"
        child = _SYMBOL_TICKS[symbol] = SYMBOL_TICKS_IN.labels(symbol, asset_class)
    return child


_SYMBOL_TICKS: dict[str, Any] = {}
for _symbol in settings.instruments:
    _symbol_ticks(_symbol)


def _count_in(records_by_source: dict[str, int]) -> None:
    for source, count in records_by_source.items():
        child = _TICKS_IN.get(source)
        if child is None:
            child = _TICKS_IN[source] = TICKS_IN.labels(source)
        child.inc(count)


def process_group(
    events: Sequence[faust.EventT], live: bool, in_flight: InFlight
) -> GroupProcessor:
    """Run a group through the rules; its state stays in memory until written."""
    group = GroupProcessor(live, in_flight)
    for event in events:
        group.add(event)
    group.freeze()
    return group


class GroupFeeder:
    """Feeds an agent's events to the rules in groups and finishes them in order.

    A group is what accumulated while the previous one was being processed and sent. The
    next group is processed while the previous one waits for its acknowledgements (so
    the worker computes while Kafka confirms); a group's tables are written, and its
    events acked, only after its own outputs are acknowledged - together with the other
    groups acknowledged within the same write interval.
    """

    def __init__(self, live: bool, write_interval_s: float) -> None:
        self.live = live
        self.write_interval_s = write_interval_s
        self.pending: list[faust.EventT] = []
        self.in_flight = InFlight()
        self.acknowledged = Acknowledged(self.in_flight)
        self.write_timer: asyncio.TimerHandle | None = None
        self.failed: Exception | None = None
        self.running: asyncio.Task[None] | None = None
        self.room = asyncio.Event()
        self.room.set()

    async def add(self, event: faust.EventT) -> None:
        if self.failed is not None:
            raise self.failed
        if self.running is not None and self.running.done():
            self.running.result()  # a failed group stops the agent loudly (faust restarts it)
        self.pending.append(event)
        if self.running is None or self.running.done():
            self.running = asyncio.ensure_future(self._drain())
        if len(self.pending) >= GROUP_MAX:
            self.room.clear()
            await self.room.wait()

    def stop(self) -> None:
        """With the agent: groups not written yet are abandoned unacked (re-read later)."""
        if self.running is not None and not self.running.done():
            self.running.cancel()
        if self.write_timer is not None:
            self.write_timer.cancel()

    async def _drain(self) -> None:
        previous: tuple[GroupProcessor, list[faust.EventT], float] | None = None
        try:
            while self.pending or previous is not None:
                current = None
                if self.pending:
                    events, self.pending = self.pending, []
                    self.room.set()
                    started = time.perf_counter()
                    group = process_group(events, self.live, self.in_flight)
                    await group.send()
                    current = (group, events, started)
                if previous is not None:
                    await self._finish(*previous)
                previous = current
        except Exception:
            log.exception("raw message group failed; not acked, re-read after a restart")
            self.room.set()
            raise

    async def _finish(
        self, group: GroupProcessor, events: list[faust.EventT], started: float
    ) -> None:
        await group.acknowledged()
        metrics.observe(started, len(events), group.records, group.last_receive_ns)
        self.acknowledged.add(group, events)
        if self.write_timer is None:
            self.write_timer = asyncio.get_running_loop().call_later(
                self.write_interval_s, self._write
            )

    def _write(self) -> None:
        self.write_timer = None
        try:
            self.acknowledged.write()
        except Exception as exc:
            # Its events stay unacked (re-read after a restart); the agent's next event
            # raises this, so faust sees the agent fail instead of it silently stalling.
            log.exception("table write failed")
            self.failed = exc


@app.agent(raw_broker_ticks)
async def process_broker_ticks(stream: Any) -> None:
    """Live broker ticks: validation, broker quality, best price across brokers."""
    feeder = GroupFeeder(live=True, write_interval_s=WRITE_INTERVAL_S)
    try:
        async for event in stream.noack().events():
            await feeder.add(event)
    finally:
        feeder.stop()


@app.agent(raw_historical_ticks)
async def process_historical_ticks(stream: Any) -> None:
    """Historical ticks: validation, then passed through per source."""
    feeder = GroupFeeder(live=False, write_interval_s=WRITE_INTERVAL_S)
    try:
        async for event in stream.noack().events():
            await feeder.add(event)
    finally:
        feeder.stop()
