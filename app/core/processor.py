"""One raw batch through parse -> validate -> tables -> best price, without Kafka.

The agents read each table key once, hand the typed values (app.core.state) to
`TickProcessor`, and write back what changed: the per-tick loop is plain Python over integers
with no await, which is what makes many thousand ticks per second possible on top of
faust's per-message cost. Nothing here reads the wall clock, so the same input and state
always give the same output.

Payloads that a source did not decode are parsed by the parser registered for their
`format` (given by the broker registry), so the core knows no provider.
Every record that cannot be used becomes a `Rejected` with reason codes; an unexpected
exception on one record is logged and rejected as `internal_error` instead of stopping
the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from app.core.best_price import choose_best
from app.core.errors import ParseError
from app.core.models import NS_PER_MS, BestPrice, Tick, format_price
from app.core.quality import QualityParams, update_accepted, update_rejected
from app.core.reasons import (
    INTERNAL_ERROR,
    STAGE_PARSE,
    STAGE_PROCESS,
    STAGE_VALIDATE,
    SYMBOL_KEY_MISMATCH,
    UNKNOWN_FORMAT,
    UNKNOWN_INSTRUMENT,
    UNKNOWN_SOURCE,
)
from app.core.state import BestChoice, BrokerStats, Quote
from app.core.validation import Limits, LimitsBook, validate_tick
from app.settings import Settings
from app.wire import codec

log = logging.getLogger(__name__)

PayloadParser = Callable[[bytes, str, int], Tick]
"""A source's raw payload (bytes, source, receive time ns) -> Tick, or ParseError."""


@dataclass(slots=True)
class Rejected:
    """A record that goes to market-data-rejects."""

    reasons: list[str]
    detail: str
    record: codec.RawRecord
    stage: str
    index: int


@dataclass(slots=True)
class SymbolState:
    """The table values one batch works on (read once before, written once after).

    `clocks` maps source -> newest accepted event time in this partition; the agent
    loads it for the sources of the batch.
    """

    quotes: dict[str, Quote] = field(default_factory=dict)
    clocks: dict[str, int] = field(default_factory=dict)
    quality: dict[str, BrokerStats] = field(default_factory=dict)
    best: BestChoice | None = None
    rejects: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class BatchResult:
    emitted: list[BestPrice] = field(default_factory=list)
    passed: dict[str, list[Tick]] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    changed_clocks: set[str] = field(default_factory=set)
    accepted: int = 0
    live_accepted: list[Tick] = field(default_factory=list)  # live: for per-broker candles
    records_by_source: dict[str, int] = field(default_factory=dict)  # input, for metrics


def records_by_symbol(
    records: Sequence[codec.RawRecord], default: bytes
) -> dict[bytes, tuple[list[int], list[codec.RawRecord]]]:
    """A raw message's records per symbol (`RawRecord.symbol`, else the message key
    `default`), each with its position in the message, in order of first appearance."""
    grouped: dict[bytes, tuple[list[int], list[codec.RawRecord]]] = {}
    for index, record in enumerate(records):
        key = record.symbol.encode() if record.symbol else default
        entry = grouped.get(key)
        if entry is None:
            entry = grouped[key] = ([], [])
        entry[0].append(index)
        entry[1].append(record)
    return grouped


def tick_of_record(
    record: codec.RawRecord,
    parsers: Mapping[str, PayloadParser],
    topic: str = "",
    partition: int = -1,
    offset: int = -1,
    index: int = 0,
) -> Tick:
    """The record's tick: decoded by its source, or parsed from its payload by `format`.

    ParseError when there is none. The one place a raw record becomes a Tick (the agents,
    the reference check and the benchmark all come here).
    """
    if record.HasField("tick"):
        t = record.tick
        return Tick(
            t.symbol,
            t.source or record.source,
            t.bid_e9,
            t.ask_e9,
            t.bid_volume,
            t.ask_volume,
            t.event_time_ns,
            t.receive_time_ns or record.receive_time_ns,
            topic,
            partition,
            offset,
            index,
        )
    parse = parsers.get(record.format)
    if parse is None:
        raise ParseError(UNKNOWN_FORMAT, f"record without tick in format {record.format!r:.40}")
    tick = parse(record.payload, record.source, record.receive_time_ns)
    tick.topic, tick.partition, tick.offset, tick.index = topic, partition, offset, index
    return tick


def describe(tick: Tick, reasons: list[str], last: Quote | None, limits: Limits) -> str:
    """Human-readable detail of a validation reject (rare, so not on the hot path)."""
    text = (
        f"{tick.source} {tick.symbol} bid={format_price(tick.bid)} ask={format_price(tick.ask)}"
        f" event_ns={tick.event_time_ns} receive_ns={tick.receive_time_ns}"
        f" spread_max={format_price(limits.max_spread)}"
    )
    if last is not None:
        text += (
            f"; last accepted event_ns={last.event_ns} bid={format_price(last.bid)}"
            f" ask={format_price(last.ask)} max_move_pct={limits.max_move_ppm / 10_000}"
        )
    return f"{', '.join(reasons)}: {text}"


class TickProcessor:
    """Config resolved once (limits per symbol, priorities, ages), then pure batch steps."""

    def __init__(
        self,
        settings: Settings,
        parsers: Mapping[str, PayloadParser],
        importers: Iterable[str],
    ) -> None:
        self.parsers = parsers
        self.limits = LimitsBook(settings)
        self.priorities = {name: b.priority for name, b in settings.brokers.items()}
        self.max_age_ns = round(settings.best_price.max_age_ms * NS_PER_MS)
        self.quality_params = QualityParams.from_settings(settings)
        # asset class of each symbol whose market hours are known (quality skips closed time)
        self.calendar_classes = {
            symbol: inst.asset_class
            for symbol, inst in settings.instruments.items()
            if inst.asset_class in settings.market_hours.asset_classes
            or inst.asset_class in settings.market_hours.calendars
        }
        # Approved brokers only: a tick from any other source never reaches best price.
        self.approved_sources = frozenset({*settings.brokers, *settings.collectors, *importers})

    def process(
        self,
        symbol: str,
        records: list[codec.RawRecord],
        topic: str,
        partition: int,
        offset: int,
        state: SymbolState,
        live: bool,
        indices: Sequence[int] | None = None,
    ) -> BatchResult:
        """Run a batch of one symbol through the rules, updating `state` in place.

        indices: each record's position in its Kafka message (the lineage index), when
        the message holds records of other symbols too; default 0, 1, 2, ...

        live: best price across brokers is chosen and emitted on change, and broker
        quality is counted. Otherwise (history) every accepted tick passes through,
        grouped by source.
        """
        result = BatchResult()
        limits = self.limits.get(symbol)
        quotes = state.quotes
        clocks = state.clocks
        quality = state.quality
        params = self.quality_params
        best = state.best
        by_source = result.records_by_source
        asset_class = self.calendar_classes.get(symbol)
        for position, record in enumerate(records):
            index = position if indices is None else indices[position]
            tick: Tick | None = None
            try:
                tick = tick_of_record(record, self.parsers, topic, partition, offset, index)
                source = tick.source
                by_source[source] = by_source.get(source, 0) + 1
                if source not in self.approved_sources:
                    reasons = [UNKNOWN_SOURCE]
                    detail = f"source {source!r:.40} is not a configured broker or importer"
                elif tick.symbol != symbol:
                    reasons = [SYMBOL_KEY_MISMATCH]
                    detail = f"tick symbol {tick.symbol!r:.40} in a record filed under {symbol!r}"
                elif limits is None:
                    reasons = [UNKNOWN_INSTRUMENT]
                    detail = f"{symbol} is not in settings.instruments (no pip size)"
                else:
                    last = quotes.get(source)
                    reasons = validate_tick(tick, last, clocks.get(source, 0), limits)
                    if not reasons:
                        quotes[source] = Quote.of(tick)
                        event = tick.event_time_ns
                        if event > clocks.get(source, 0):
                            clocks[source] = event
                            result.changed_clocks.add(source)
                        result.accepted += 1
                        if live:
                            result.live_accepted.append(tick)
                            quality[source] = update_accepted(
                                quality.get(source),
                                event,
                                tick.receive_time_ns,
                                tick.ask - tick.bid,
                                params,
                                asset_class,
                            )
                            choice = choose_best(quotes, event, self.max_age_ns, self.priorities)
                            if choice is not None and choice != best:
                                best = choice
                                src = choice.source
                                # mostly the tick just accepted: its quote is this tick
                                chosen = tick if src == source else None
                                if chosen is None:
                                    chosen = quotes[src].tick(symbol, src)
                                result.emitted.append(
                                    BestPrice(
                                        chosen,
                                        choice.best_bid,
                                        choice.best_bid_source,
                                        choice.best_ask,
                                        choice.best_ask_source,
                                    )
                                )
                        else:
                            result.passed.setdefault(source, []).append(tick)
                        continue
                    detail = describe(tick, reasons, last, limits)
                self._reject(result, state, record, reasons, detail, STAGE_VALIDATE, index, live)
            except ParseError as exc:
                by_source[record.source] = by_source.get(record.source, 0) + 1
                self._reject(
                    result, state, record, [exc.reason], exc.detail, STAGE_PARSE, index, live
                )
            except Exception as exc:
                if tick is None:
                    by_source[record.source] = by_source.get(record.source, 0) + 1
                log.exception(
                    "internal error on %s record %d at %s/%d@%d",
                    symbol,
                    index,
                    topic,
                    partition,
                    offset,
                )
                self._reject(
                    result,
                    state,
                    record,
                    [INTERNAL_ERROR],
                    repr(exc)[:500],
                    STAGE_PROCESS,
                    index,
                    live,
                )
        state.best = best
        return result

    def _reject(
        self,
        result: BatchResult,
        state: SymbolState,
        record: codec.RawRecord,
        reasons: list[str],
        detail: str,
        stage: str,
        index: int,
        live: bool,
    ) -> None:
        result.rejected.append(Rejected(reasons, detail, record, stage, index))
        counts = state.rejects
        for reason in reasons:
            counts[reason] = counts.get(reason, 0) + 1
        source = record.tick.source or record.source
        if live and source in self.approved_sources:  # no state keyed by unknown names
            state.quality[source] = update_rejected(state.quality.get(source))
