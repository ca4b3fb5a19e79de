"""One raw batch through parse -> validate -> tables -> best price, without Kafka.

The agents read each table key once, hand the values to `TickProcessor` as plain dicts
and lists, and write back what changed: the per-tick loop is plain Python over integers
with no await, which is what makes many thousand ticks per second possible on top of
faust's per-message cost. Nothing here reads the wall clock, so the same input and state
always give the same output.

Every record that cannot be used becomes a `Rejected` with reason codes; an unexpected
exception on one record is logged and rejected as `internal_error` instead of stopping
the worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from app.core.best_price import B_SOURCE, choose_best
from app.core.errors import ParseError
from app.core.models import NS_PER_MS, BestPrice, Tick, format_price
from app.core.quality import QualityParams, update_accepted, update_rejected
from app.core.validation import UNKNOWN_INSTRUMENT, Limits, LimitsBook, validate_tick
from app.settings import Settings
from app.sources.brokers.oanda import Heartbeat, parse_oanda_line
from app.wire import codec

log = logging.getLogger(__name__)

STAGE_PARSE = "parse"
STAGE_VALIDATE = "validate"
STAGE_PROCESS = "process"
MALFORMED_BATCH = "malformed_batch"
UNKNOWN_FORMAT = "unknown_format"
NOT_A_TICK = "not_a_tick"
SYMBOL_KEY_MISMATCH = "symbol_key_mismatch"
INTERNAL_ERROR = "internal_error"
UNKNOWN_SOURCE = "unknown_source"
IMPORTER_SOURCES = frozenset({"dukascopy"})  # app/sources/dukascopy/bi5.py SOURCE


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

    quotes: dict[str, list] = field(default_factory=dict)
    clocks: dict[str, int] = field(default_factory=dict)
    quality: dict[str, list] = field(default_factory=dict)
    best: list | None = None
    rejects: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class BatchResult:
    emitted: list[BestPrice] = field(default_factory=list)
    passed: dict[str, list[Tick]] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    changed_clocks: set[str] = field(default_factory=set)
    accepted: int = 0
    records_by_source: dict[str, int] = field(default_factory=dict)  # input, for metrics


def quote_of(tick: Tick) -> list:
    """The last-price table entry of an accepted tick (see app.tables.ticks)."""
    return [
        tick.event_time_ns,
        tick.bid,
        tick.ask,
        tick.bid_volume,
        tick.ask_volume,
        tick.receive_time_ns,
        tick.topic,
        tick.partition,
        tick.offset,
        tick.index,
    ]


def tick_of_quote(symbol: str, source: str, q: list) -> Tick:
    return Tick(symbol, source, q[1], q[2], q[3], q[4], q[0], q[5], q[6], q[7], q[8], q[9])


def describe(tick: Tick, reasons: list[str], last: list | None, limits: Limits) -> str:
    """Human-readable detail of a validation reject (rare, so not on the hot path)."""
    text = (
        f"{tick.source} {tick.symbol} bid={format_price(tick.bid)} ask={format_price(tick.ask)}"
        f" event_ns={tick.event_time_ns} receive_ns={tick.receive_time_ns}"
        f" spread_max={format_price(limits.max_spread)}"
    )
    if last is not None:
        text += (
            f"; last accepted event_ns={last[0]} bid={format_price(last[1])}"
            f" ask={format_price(last[2])} max_move_pct={limits.max_move_ppm / 10_000}"
        )
    return f"{', '.join(reasons)}: {text}"


class TickProcessor:
    """Config resolved once (limits per symbol, priorities, ages), then pure batch steps."""

    def __init__(self, settings: Settings) -> None:
        self.limits = LimitsBook(settings)
        self.priorities = {name: b.priority for name, b in settings.brokers.items()}
        self.max_age_ns = round(settings.best_price.max_age_ms * NS_PER_MS)
        self.quality_params = QualityParams.from_settings(settings)
        # Approved brokers only: a tick from any other source never reaches best price.
        self.approved_sources = frozenset(
            {*settings.brokers, *settings.collectors, *IMPORTER_SOURCES}
        )

    def tick_of(
        self,
        record: codec.RawRecord,
        topic: str,
        partition: int,
        offset: int,
        index: int,
    ) -> Tick:
        """The record's tick (decoded by the source, or parsed here); ParseError if none."""
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
        if record.format == "oanda_v20":
            parsed = parse_oanda_line(record.payload, record.source, record.receive_time_ns)
            if isinstance(parsed, Heartbeat):
                raise ParseError(NOT_A_TICK, "heartbeat in a raw topic")
            parsed.topic, parsed.partition, parsed.offset, parsed.index = (
                topic,
                partition,
                offset,
                index,
            )
            return parsed
        raise ParseError(UNKNOWN_FORMAT, f"record without tick in format {record.format!r:.40}")

    def process(
        self,
        symbol: str,
        records: list[codec.RawRecord],
        topic: str,
        partition: int,
        offset: int,
        state: SymbolState,
        live: bool,
    ) -> BatchResult:
        """Run a batch of one symbol through the rules, updating `state` in place.

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
        for index, record in enumerate(records):
            tick: Tick | None = None
            try:
                tick = self.tick_of(record, topic, partition, offset, index)
                source = tick.source
                by_source[source] = by_source.get(source, 0) + 1
                if source not in self.approved_sources:
                    reasons = [UNKNOWN_SOURCE]
                    detail = f"source {source!r:.40} is not a configured broker or importer"
                elif tick.symbol != symbol:
                    reasons = [SYMBOL_KEY_MISMATCH]
                    detail = f"tick symbol {tick.symbol!r:.40} in a message keyed {symbol!r}"
                elif limits is None:
                    reasons = [UNKNOWN_INSTRUMENT]
                    detail = f"{symbol} is not in settings.instruments (no pip size)"
                else:
                    last = quotes.get(source)
                    reasons = validate_tick(tick, last, clocks.get(source, 0), limits)
                    if not reasons:
                        quotes[source] = quote_of(tick)
                        event = tick.event_time_ns
                        if event > clocks.get(source, 0):
                            clocks[source] = event
                            result.changed_clocks.add(source)
                        result.accepted += 1
                        if live:
                            quality[source] = update_accepted(
                                quality.get(source),
                                event,
                                tick.receive_time_ns,
                                tick.ask - tick.bid,
                                params,
                            )
                            choice = choose_best(quotes, event, self.max_age_ns, self.priorities)
                            if choice is not None and choice != best:
                                best = choice
                                src = choice[B_SOURCE]
                                # mostly the tick just accepted: its quote is this tick
                                chosen = tick if src == source else None
                                if chosen is None:
                                    chosen = tick_of_quote(symbol, src, quotes[src])
                                result.emitted.append(BestPrice(chosen, *choice[3:7]))
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

    @staticmethod
    def _reject(
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
        if live and source:
            state.quality[source] = update_rejected(state.quality.get(source))
