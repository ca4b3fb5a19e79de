"""`import-dukascopy` and `reference-check`: historical ticks in, live-versus-reference out.

    faust -A app import-dukascopy EURUSD --from 2024-01-01 --to 2024-01-08 --source-dir DIR
    faust -A app reference-check EURUSD --from 2024-01-02T10 --to 2024-01-02T12 --source-dir DIR

Both run outside the worker. The import writes with its own idempotent aiokafka producer
(acks=all) and checkpoints each hour only after Kafka acknowledged all of its messages.
The reference check writes its result as JSON under `historical.results_dir`, which the
worker's `/reference/{symbol}` view reads: a faust table could only be written from
inside the worker, and a result computed once per run needs no changelog.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.cli import argument, option
from google.protobuf.message import DecodeError

from app.cli.exits import EXIT_FAILED, EXIT_USAGE, usage_error
from app.core.candle_feed import candle_flush_batch
from app.core.errors import ParseError
from app.core.models import NS_PER_MS, NS_PER_SECOND, Tick, price_from_decimal
from app.core.processor import tick_of_record
from app.core.reference import ReferenceComparison, compare_to_reference
from app.ops.reference_results import write_result
from app.pipeline.faust_app import app, settings
from app.pipeline.kafka_clients import exits_on_kafka_failure, kafka_options, topic_partitions
from app.pipeline.topics import (
    MARKET_DATA_REJECTS,
    RAW_BROKER_TICKS,
    RAW_HISTORICAL_TICKS,
    market_data_rejects,
    raw_historical_ticks,
)
from app.sources.brokers.registry import payload_parsers
from app.sources.contract import Backoff
from app.sources.dukascopy.bi5 import (
    SOURCE,
    DirectoryHours,
    DukascopyImporter,
    HourSource,
    HttpHours,
    ImportSummary,
    UnknownInstrumentError,
    load_reference_ticks,
    point_factor,
)
from app.sources.supervisor import run_with_restarts
from app.wire import codec

SCAN_PROGRESS_S = 2.0  # reference-check: a progress line at most this often while scanning


def parse_when(text: str) -> datetime:
    """`2024-01-01`, `2024-01-01T05` or any ISO time; without a zone it is UTC."""
    value = text.strip()
    if len(value) == 13 and value[10] == "T":  # 2024-01-01T05: an hour
        value += ":00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        usage_error(f"not a date/time: {text!r} (e.g. 2024-01-01, 2024-01-01T05)")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_window(start: str, end: str) -> tuple[datetime, datetime]:
    first, last = parse_when(start), parse_when(end)
    if first >= last:
        usage_error(f"--from {start} is not before --to {end}")
    return first, last


def _dir(configured: Path | None, name: str) -> Path:
    return configured or Path(settings.service.data_dir) / "dukascopy" / name


def hour_source(source_dir: str | None, base_url: str | None) -> HourSource:
    """A local tree when one is given (option or config), else the HTTP datafeed."""
    cfg = settings.historical
    local = source_dir or (None if base_url else cfg.source_dir)
    if local:
        return DirectoryHours(Path(local))
    return HttpHours(
        base_url or cfg.base_url,
        _dir(cfg.cache_dir, "cache"),
        concurrency=cfg.concurrency,
        retries=cfg.retries,
        backoff_s=cfg.backoff_s,
        timeout_s=cfg.timeout_s,
    )


async def import_supervised(
    importer: DukascopyImporter, symbol: str, first: datetime, last: datetime
) -> ImportSummary:
    """One symbol's import, resumed from its checkpoint after an unexpected crash (capped,
    jittered backoff, `historical.retries` times); then reported as an error, and the
    next symbol is imported."""
    cfg = settings.historical
    backoff = Backoff(max(cfg.backoff_s, 0.1), 30.0)
    try:
        return await run_with_restarts(
            f"dukascopy:{symbol}",
            "dukascopy",
            lambda: importer.run(symbol, first, last),
            backoff,
            attempts=cfg.retries + 1,
        )
    except Exception as exc:
        summary = ImportSummary(symbol)
        summary.errors += 1
        summary.problems.append(f"{symbol}: import stopped: {type(exc).__name__}: {exc}")
        return summary


def _check_symbols(symbols: tuple[str, ...]) -> list[str]:
    names = [s.upper() for s in symbols]
    try:
        for name in names:
            point_factor(name)
    except UnknownInstrumentError as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(EXIT_USAGE) from None
    return names


@app.command(
    argument("symbols", nargs=-1, required=True),
    option("--from", "start", required=True, help="first hour (UTC), e.g. 2024-01-01"),
    option("--to", "end", required=True, help="end, exclusive (UTC), e.g. 2024-01-08"),
    option("--source-dir", default=None, help="local tree laid out like the datafeed URLs"),
    option("--base-url", default=None, help="datafeed URL (default: historical.base_url)"),
)
@exits_on_kafka_failure
async def import_dukascopy(
    self: object,
    symbols: tuple[str, ...],
    start: str,
    end: str,
    source_dir: str | None,
    base_url: str | None,
) -> None:
    """Import Dukascopy hour files into raw.historical.ticks (resumable, no duplicates)."""
    names = _check_symbols(symbols)
    first, last = parse_window(start, end)
    hours = hour_source(source_dir, base_url)
    await raw_historical_ticks.maybe_declare()
    await market_data_rejects.maybe_declare()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        **kafka_options(),
        acks="all",
        enable_idempotence=True,  # broker drops the producer's own retried duplicates
        linger_ms=max(settings.kafka.producer_linger_ms, 5),
    )
    await producer.start()

    async def send(key: bytes, value: bytes) -> Awaitable[object]:
        return await producer.send(RAW_HISTORICAL_TICKS, value=value, key=key)

    async def reject(key: bytes, value: bytes) -> Awaitable[object]:
        return await producer.send(MARKET_DATA_REJECTS, value=value, key=key)

    importer = DukascopyImporter(
        hours,
        send,
        _dir(settings.historical.checkpoint_dir, "checkpoints"),
        batch_ticks=settings.historical.batch_ticks,
        prefetch=settings.historical.concurrency,
        reject=reject,
    )
    summaries: list[ImportSummary] = []
    try:
        for name in names:
            summary = await import_supervised(importer, name, first, last)
            summaries.append(summary)
            if not summary.errors:
                # every hour is in: let the last candles of the range leave (docs/candles.md)
                marker = candle_flush_batch(SOURCE, int(last.timestamp()) * NS_PER_SECOND)
                await (await send(name.encode(), marker))
    finally:
        await producer.stop()
        await hours.close()
    for summary in summaries:
        for problem in summary.problems:
            sys.stderr.write(f"  {problem}\n")
        sys.stderr.write(f"dukascopy import from {hours.describe()}: {summary.line()}\n")
    sys.stderr.flush()
    if any(s.errors for s in summaries):
        raise SystemExit(EXIT_FAILED)


def _live_tick(record: codec.RawRecord) -> Tick | None:
    """The record's tick, read as the processing agent reads it; None if it has none."""
    try:
        return tick_of_record(record, payload_parsers())
    except ParseError:
        return None


async def read_live_ticks(
    bootstrap: str, topic: str, symbol: str, start_ns: int, end_ns: int
) -> list[Tick]:
    """Ticks of `symbol` with event time in [start_ns, end_ns) from a raw broker topic.

    Seeks each partition by Kafka timestamp (a minute before the window: the producer's
    clock is the receive time, a little after the event time) and reads up to the end
    offsets seen at the start, so the check terminates on a live topic.
    """
    partitions = await topic_partitions(bootstrap, topic)
    ticks: list[Tick] = []
    if not partitions:
        return ticks
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **kafka_options(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    key = symbol.encode()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        since_ms = start_ns // NS_PER_MS - 60_000
        starts = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        todo = set()
        total = 0
        for tp in tps:
            found = starts.get(tp)
            if found is None or found.offset >= ends[tp]:
                continue
            consumer.seek(tp, found.offset)
            todo.add(tp)
            total += ends[tp] - found.offset
        scanned = 0
        shown = time.monotonic()
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=500)
            for tp, messages in batch.items():
                scanned += len(messages)
                for message in messages:
                    if message.offset >= ends[tp]:
                        break
                    if message.key != key:
                        continue
                    try:
                        records = codec.decode_raw_batch(message.value).records
                    except (DecodeError, RecursionError, ValueError):
                        continue  # not a RawBatch: the worker rejects it, the check skips it
                    for record in records:
                        tick = _live_tick(record)
                        if tick is not None and start_ns <= tick.event_time_ns < end_ns:
                            ticks.append(tick)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
            if time.monotonic() - shown >= SCAN_PROGRESS_S or not todo:
                shown = time.monotonic()
                done = min(scanned, total)
                sys.stderr.write(
                    f"reference-check: {topic} scanned {done:,}/{total:,} messages, "
                    f"{len(ticks):,} {symbol} ticks in the window\n"
                )
    finally:
        await consumer.stop()
    return ticks


@app.command(
    argument("symbol"),
    option("--from", "start", required=True, help="window start (UTC)"),
    option("--to", "end", required=True, help="window end, exclusive (UTC)"),
    option("--source-dir", default=None, help="local Dukascopy tree (else HTTP)"),
    option("--base-url", default=None, help="datafeed URL (default: historical.base_url)"),
    option("--topic", default=RAW_BROKER_TICKS, help="topic with the live broker ticks"),
)
@exits_on_kafka_failure
async def reference_check(
    self: object,
    symbol: str,
    start: str,
    end: str,
    source_dir: str | None,
    base_url: str | None,
    topic: str,
) -> None:
    """Mid-price deviation of each broker from Dukascopy, in pips, for a symbol and window."""
    name = _check_symbols((symbol,))[0]
    instrument = settings.instruments.get(name)
    if instrument is None:
        sys.stderr.write(f"instruments.{name} is not configured: its pip size is unknown\n")
        raise SystemExit(EXIT_USAGE)
    first, last = parse_window(start, end)
    start_ns, end_ns = int(first.timestamp()) * NS_PER_SECOND, int(last.timestamp()) * NS_PER_SECOND
    hours = hour_source(source_dir, base_url)
    try:
        reference, problems = await load_reference_ticks(hours, name, first, last)
    finally:
        await hours.close()
    live = await read_live_ticks(settings.kafka.bootstrap_servers, topic, name, start_ns, end_ns)
    result = ReferenceComparison(
        symbol=name,
        start_ns=start_ns,
        end_ns=end_ns,
        reference_ticks=len(reference),
        live_ticks=len(live),
        brokers=compare_to_reference(
            live,
            reference,
            price_from_decimal(instrument.pip),
            int(settings.historical.reference_max_age_ms * NS_PER_MS),
        ),
        problems=problems,
    )
    path = write_result(settings, result)
    lines = [
        f"{name} {first.isoformat()} .. {last.isoformat()}: reference ticks "
        f"{result.reference_ticks}, live ticks {result.live_ticks}",
        "| broker | matched | unmatched | mean (pips) | mean abs (pips) | max abs (pips) |",
        "|---|---|---|---|---|---|",
    ]
    for dev in result.brokers.values():
        lines.append(
            f"| {dev.source} | {dev.matched} | {dev.unmatched} | {dev.mean_pips:.3f} "
            f"| {dev.mean_abs_pips:.3f} | {dev.max_abs_pips:.3f} |"
        )
    lines.extend(f"problem: {p}" for p in problems)
    lines.append(f"written to {path}")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
