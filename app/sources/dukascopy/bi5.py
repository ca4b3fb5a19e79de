"""Dukascopy historical ticks: .bi5 decoding, hour files from a directory or over HTTP.

Dukascopy is the design's validation reference, so its prices must arrive exactly: a
.bi5 record holds integer points, and points become the service's fixed-point units
(price * 1e9) by integer multiplication with a per-instrument factor from an explicit
table, never by guessing the scale from the name and never through floats.

Layout (month zero-based, 00 = January), one LZMA file per instrument and hour:
`{PAIR}/{YYYY}/{MM}/{DD}/{HH}h_ticks.bi5`; records of 20 bytes, big-endian:
uint32 ms since the hour start, uint32 ASK, uint32 BID, float32 ask vol, float32 bid vol.
"""

from __future__ import annotations

import asyncio
import logging
import lzma
import math
import os
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, TextIO

import aiohttp

from app.core.errors import IngestError, ParseError, ProviderError
from app.core.models import NS_PER_MS, NS_PER_SECOND, PRICE_SCALE, Tick
from app.core.reasons import STAGE_SOURCE
from app.settings import get_settings
from app.sources.contract import Backoff
from app.wire import codec
from app.wire.codec import encode_tick_records

log = logging.getLogger(__name__)

SOURCE = "dukascopy"
RECORD = struct.Struct(">IIIff")
RECORD_SIZE = RECORD.size  # 20
HOUR = timedelta(hours=1)
# Volumes are float32 millions of units: 0.2 arrives as 0.20000000298. Whole units are
# 6 decimals, so rounding there restores the number Dukascopy meant and loses nothing.
VOLUME_DECIMALS = 6
MS_PER_HOUR = 3_600_000
# Bounds of one hour file. The busiest real hours hold a few tens of thousands of ticks;
# 360,000 (100 a second all hour) is generous and keeps a decoded hour to a few MB, so an
# LZMA bomb (58 KiB -> 400 MiB) is refused as `too_large` after 7.2 MB of output.
MAX_TICKS_PER_HOUR = 360_000
MAX_HOUR_BYTES = MAX_TICKS_PER_HOUR * RECORD_SIZE
LZMA_MEMLIMIT = 128 * 1024 * 1024  # decoder memory; a header asking for more is corrupt
MAX_FILE_BYTES = 16 * 1024 * 1024  # a compressed hour file over HTTP (real ones: < 1 MB)
REJECT_PAYLOAD_BYTES = 256 * 1024  # what of a bad file goes into its rejection
FILE_FORMAT = "dukascopy_bi5"  # rejection of a whole file: payload = the compressed bytes
RECORD_FORMAT = "dukascopy_bi5_record"  # rejection of one record: payload = its 20 bytes


class UnknownInstrumentError(IngestError):
    """An instrument without a Dukascopy point scale: its prices cannot be read safely."""

    def __init__(self, symbol: str) -> None:
        known = ", ".join(sorted(_point_scales()))
        super().__init__(
            f"dukascopy: no point scale for instrument {symbol!r}; set "
            f"instruments.{symbol}.dukascopy_scale in the config (known: {known})"
        )
        self.symbol = symbol


def _point_scales() -> dict[str, int]:
    """Points per 1.0 of price, from the configuration's instrument table."""
    instruments = get_settings().instruments
    return {s: i.dukascopy_scale for s, i in instruments.items() if i.dukascopy_scale}


def point_factor(symbol: str) -> int:
    """Fixed-point units per Dukascopy point for `symbol` (1e9 / scale, an exact integer)."""
    scale = _point_scales().get(symbol)
    if scale is None:
        raise UnknownInstrumentError(symbol)
    factor, rest = divmod(PRICE_SCALE, scale)
    if rest:  # a scale that does not divide 1e9 would need rounding: refuse
        raise UnknownInstrumentError(symbol)
    return factor


def hour_floor(moment: datetime) -> datetime:
    """The UTC hour containing `moment` (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    """Every hour that overlaps [start, end): `end` is exclusive, so 01-01..01-02 is 24 hours."""
    stop = end if end.tzinfo else end.replace(tzinfo=UTC)
    hour = hour_floor(start)
    hours = []
    while hour < stop:
        hours.append(hour)
        hour += HOUR
    return hours


def hour_path(symbol: str, hour: datetime) -> str:
    """Relative path of an hour file; Dukascopy's month is zero-based (00 = January)."""
    return (
        f"{symbol}/{hour.year:04d}/{hour.month - 1:02d}/{hour.day:02d}/{hour.hour:02d}h_ticks.bi5"
    )


def hour_start_ns(hour: datetime) -> int:
    return int(hour.timestamp()) * NS_PER_SECOND


def decompress_bi5(data: bytes, max_bytes: int = MAX_HOUR_BYTES) -> bytes:
    """Decompress every concatenated LZMA stream of a .bi5 file; empty file -> b"".

    Dukascopy writes the legacy .lzma ("alone") format; FORMAT_AUTO accepts it (and .xz).
    Raises ParseError `corrupt_lzma` for a damaged stream, `truncated` for a cut-off one,
    `too_large` when the output would pass `max_bytes` (never more than that is produced).
    """
    out: list[bytes] = []
    size = 0
    rest = data
    while rest:
        decoder = lzma.LZMADecompressor(format=lzma.FORMAT_AUTO, memlimit=LZMA_MEMLIMIT)
        try:
            chunk = decoder.decompress(rest, max_length=max_bytes - size + 1)
        except lzma.LZMAError as exc:
            raise ParseError("corrupt_lzma", f"LZMA stream {len(out) + 1}: {exc}") from exc
        size += len(chunk)
        if size > max_bytes:
            raise ParseError(
                "too_large",
                f"{len(data)} bytes decompress to over {max_bytes} bytes "
                f"({MAX_TICKS_PER_HOUR} records): not an hour of ticks",
            )
        out.append(chunk)
        if not decoder.eof:  # below max_length, so all input was used: the stream is cut
            raise ParseError("truncated", f"LZMA stream {len(out)} ends before its end marker/size")
        rest = decoder.unused_data
    return b"".join(out)


@dataclass(slots=True, frozen=True)
class BadRecord:
    """A record of an hour file that is not a tick: where, why, and its raw bytes."""

    index: int
    reason: str
    detail: str
    raw: bytes


def _bad_record(ms: int, ask_vol: float, bid_vol: float) -> tuple[str, str] | None:
    """Why a record is not a tick of its hour (None: it is one)."""
    if ms >= MS_PER_HOUR:  # uint32: up to 49 days after the hour start
        return "bad_offset", f"ms offset {ms} is not inside the hour (0..{MS_PER_HOUR - 1})"
    for side, volume in (("ask", ask_vol), ("bid", bid_vol)):
        if not 0.0 <= volume < math.inf:  # NaN fails both comparisons
            return "bad_volume", f"{side} volume {volume!r} is not finite and >= 0"
    return None


def decode_records(
    payload: bytes,
    symbol: str,
    start_ns: int,
    factor: int,
    receive_time_ns: int | None = None,
    bad: list[BadRecord] | None = None,
) -> list[Tick]:
    """Decompressed records of one hour -> ticks in file order.

    `factor` is point_factor(symbol). The tick's receive time defaults to its event time:
    a historical tick has no wire latency, and the same file then always gives the same
    ticks. Volumes are rounded to whole units (VOLUME_DECIMALS).
    A record outside its hour or with a NaN/infinite/negative volume, and a tail shorter
    than a record (`bad_record_length`), is appended to `bad` and skipped, so the good
    records around it still arrive; without a `bad` list the first one raises ParseError.
    """
    tail = len(payload) % RECORD_SIZE
    if tail:
        problem = BadRecord(
            len(payload) // RECORD_SIZE,
            "bad_record_length",
            f"{len(payload)} bytes is not a multiple of {RECORD_SIZE} "
            f"({len(payload) // RECORD_SIZE} records + {tail} bytes)",
            payload[len(payload) - tail :],
        )
        if bad is None:
            raise ParseError(problem.reason, problem.detail)
        payload = payload[: len(payload) - tail]
    ticks = []
    append = ticks.append
    for index, (ms, ask, bid, ask_vol, bid_vol) in enumerate(RECORD.iter_unpack(payload)):
        if ms >= MS_PER_HOUR or not (0.0 <= ask_vol < math.inf and 0.0 <= bid_vol < math.inf):
            reason, detail = _bad_record(ms, ask_vol, bid_vol) or ("bad_record", "")
            if bad is None:
                raise ParseError(reason, f"record {index}: {detail}")
            start = index * RECORD_SIZE
            bad.append(BadRecord(index, reason, detail, payload[start : start + RECORD_SIZE]))
            continue
        event_ns = start_ns + ms * NS_PER_MS
        append(
            Tick(
                symbol,
                SOURCE,
                bid * factor,
                ask * factor,
                round(bid_vol, VOLUME_DECIMALS),
                round(ask_vol, VOLUME_DECIMALS),
                event_ns,
                event_ns if receive_time_ns is None else receive_time_ns,
            )
        )
    if tail and bad is not None:
        bad.append(problem)
    return ticks


def decode_bi5(
    data: bytes, symbol: str, hour: datetime, bad: list[BadRecord] | None = None
) -> list[Tick]:
    """One compressed hour file -> its ticks (empty file = an hour without ticks).

    Whole-file problems raise ParseError; bad records go to `bad` (see decode_records).
    """
    factor = point_factor(symbol)
    return decode_records(decompress_bi5(data), symbol, hour_start_ns(hour), factor, None, bad)


def encode_bi5(
    records: list[tuple[int, int, int, float, float]], streams: int = 1, preset: int = 6
) -> bytes:
    """Build a .bi5 file (FORMAT_ALONE, like Dukascopy) from (ms, ask, bid, ask_vol, bid_vol).

    For tests, fixtures and benchmarks: `streams` > 1 splits the records over several
    concatenated LZMA streams, as some real files have. No records -> empty file.
    """
    if not records:
        return b""
    per = -(-len(records) // streams)
    parts = []
    for i in range(0, len(records), per):
        raw = b"".join(RECORD.pack(*r) for r in records[i : i + per])
        parts.append(lzma.compress(raw, format=lzma.FORMAT_ALONE, preset=preset))
    return b"".join(parts)


class HourMissing(IngestError):
    """The source has no file for the hour (HTTP 404, or no file in the directory)."""


@dataclass(slots=True, frozen=True)
class HourFile:
    symbol: str
    hour: datetime
    path: str
    data: bytes


class DirectoryHours:
    """Hour files from a local tree laid out like Dukascopy's URLs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    async def fetch(self, symbol: str, hour: datetime) -> HourFile:
        rel = hour_path(symbol, hour)
        try:
            data = await asyncio.to_thread((self.root / rel).read_bytes)
        except FileNotFoundError as exc:
            raise HourMissing(f"{self.root / rel}: no such file") from exc
        return HourFile(symbol, hour, rel, data)

    def forget(self, symbol: str, hour: datetime) -> None:
        """Nothing cached: a bad local file stays where it is for a human to look at."""

    async def close(self) -> None:
        """No resources held."""


class HttpHours:
    """Hour files over HTTP, kept in a download cache; retries 5xx and network errors.

    404 is an answer (Dukascopy has no such hour), not a failure: it is raised as
    HourMissing without retry. Only 200 bodies are cached, written atomically.
    """

    def __init__(
        self,
        base_url: str,
        cache_dir: Path,
        *,
        concurrency: int = 4,
        retries: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.cache_dir = Path(cache_dir)
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._limit = asyncio.Semaphore(concurrency)
        self._session = session
        self._own_session = session is None
        self.requests = 0

    def describe(self) -> str:
        return self.base_url

    def _cache_path(self, rel: str) -> Path:
        return self.cache_dir / rel

    async def fetch(self, symbol: str, hour: datetime) -> HourFile:
        rel = hour_path(symbol, hour)
        cached = self._cache_path(rel)
        if cached.exists():
            return HourFile(symbol, hour, rel, await asyncio.to_thread(cached.read_bytes))
        data = await self._download(f"{self.base_url}/{rel}")
        await asyncio.to_thread(self._store, cached, data)
        return HourFile(symbol, hour, rel, data)

    def forget(self, symbol: str, hour: datetime) -> None:
        """Drop a cached file that did not decode, so that the next run downloads it again."""
        self._cache_path(hour_path(symbol, hour)).unlink(missing_ok=True)

    @staticmethod
    def _store(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(path)

    async def _download(self, url: str) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        problem = ""
        backoff = Backoff(self.backoff_s, max(self.backoff_s, 30.0)) if self.backoff_s else None
        for attempt in range(self.retries + 1):
            if attempt and backoff is not None:
                await asyncio.sleep(backoff.next_delay())
            async with self._limit:
                self.requests += 1
                try:
                    async with self._session.get(url, timeout=self.timeout) as resp:
                        if resp.status == 200:
                            return await self._read_bounded(resp, url)
                        if resp.status == 404:
                            raise HourMissing(f"{url}: HTTP 404")
                        problem = f"{url}: HTTP {resp.status}"
                        if resp.status < 500 and resp.status != 429:
                            raise ProviderError(SOURCE, url, resp.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    problem = f"{url}: {type(exc).__name__}: {exc}"
            log.warning("dukascopy: attempt %d failed: %s", attempt + 1, problem)
        raise ProviderError(SOURCE, f"gave up after {self.retries + 1} attempts: {problem}")

    @staticmethod
    async def _read_bounded(resp: aiohttp.ClientResponse, url: str) -> bytes:
        """The body, refused (not retried) when over MAX_FILE_BYTES: never held whole."""
        chunks: list[bytes] = []
        size = 0
        while chunk := await resp.content.read(1024 * 1024):
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise ProviderError(SOURCE, f"{url}: file over {MAX_FILE_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()


class HourSource(Protocol):
    """Where hour files come from: a directory tree or the HTTP datafeed."""

    def describe(self) -> str: ...

    async def fetch(self, symbol: str, hour: datetime) -> HourFile: ...

    def forget(self, symbol: str, hour: datetime) -> None: ...

    async def close(self) -> None: ...


def hour_key(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%dT%H")


class ImportCheckpoint:
    """Hours of one symbol whose Kafka sends were all acknowledged: one line per hour.

    Append-only and fsynced per hour, so an interrupted import loses at most the hour
    in flight, and a re-run of the same range skips what is already in Kafka.
    """

    def __init__(self, directory: Path, symbol: str) -> None:
        self.path = Path(directory) / f"{symbol}.hours"
        self._done: set[str] = set()
        if self.path.exists():
            self._done = {line.strip() for line in self.path.read_text().splitlines() if line}

    def __contains__(self, hour: datetime) -> bool:
        return hour_key(hour) in self._done

    def mark(self, hour: datetime) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(hour_key(hour) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._done.add(hour_key(hour))


@dataclass
class ImportSummary:
    """What an import did; `problems` names each bad file with its hour and reason."""

    symbol: str
    hours: int = 0
    files: int = 0
    empty_hours: int = 0
    ticks: int = 0
    messages: int = 0
    skipped: int = 0
    missing: int = 0
    errors: int = 0
    bad_records: int = 0
    problems: list[str] = field(default_factory=list)
    missing_hours: list[str] = field(default_factory=list)
    missing_reason: str = ""

    def missing_problem(self) -> str | None:
        """One line for every missing hour (a year has 8,000+: weekends have no file)."""
        if not self.missing_hours:
            return None
        ranges = hour_ranges(self.missing_hours)
        shown = ", ".join(ranges[:5]) + (
            f", ... ({len(ranges) - 5} more)" if len(ranges) > 5 else ""
        )
        return (
            f"{self.symbol}: missing {len(self.missing_hours)} hour(s) in {len(ranges)} "
            f"range(s): {shown} (first: {self.missing_reason})"
        )

    def line(self) -> str:
        return (
            f"{self.symbol}: hours={self.hours} files={self.files} empty={self.empty_hours} "
            f"ticks={self.ticks} messages={self.messages} skipped={self.skipped} "
            f"missing={self.missing} errors={self.errors} bad_records={self.bad_records}"
        )


# Sends one Kafka message (key, value) and returns the acknowledgement to await.
SendFn = Callable[[bytes, bytes], Awaitable[Awaitable[object]]]


class DukascopyImporter:
    """Hours of one symbol -> RawBatch messages, in time order, resumable by checkpoint.

    Downloads run ahead concurrently (`prefetch` hours), but hours are decoded and sent
    one after the other, so each symbol's ticks reach Kafka in time order and at most
    one decoded hour is in memory. A bad hour is reported, counted and skipped; a bad
    record is skipped and the ones after it imported. Both go to `reject` (when given:
    market-data-rejects) with their reason and raw bytes, acknowledged before the hour's
    checkpoint, so a re-run repeats neither.
    """

    def __init__(
        self,
        hours: HourSource,
        send: SendFn,
        checkpoint_dir: Path,
        *,
        batch_ticks: int = 1000,
        prefetch: int = 4,
        progress: TextIO | None = sys.stderr,
        reject: SendFn | None = None,
    ) -> None:
        self.hours = hours
        self.send = send
        self.reject = reject
        self.checkpoint_dir = Path(checkpoint_dir)
        self.batch_ticks = batch_ticks
        self.prefetch = max(1, prefetch)
        self.progress = progress

    async def run(self, symbol: str, start: datetime, end: datetime) -> ImportSummary:
        point_factor(symbol)  # fail before any download for an instrument we cannot read
        checkpoint = ImportCheckpoint(self.checkpoint_dir, symbol)
        summary = ImportSummary(symbol)
        todo = []
        for hour in hours_between(start, end):
            summary.hours += 1
            if hour in checkpoint:
                summary.skipped += 1
            else:
                todo.append(hour)
        pending: list[asyncio.Task[HourFile]] = []
        meter = ProgressMeter(self.progress, symbol, len(todo))
        try:
            for i, hour in enumerate(todo):
                while len(pending) < self.prefetch and i + len(pending) < len(todo):
                    ahead = todo[i + len(pending)]
                    pending.append(asyncio.ensure_future(self.hours.fetch(symbol, ahead)))
                fetch = pending.pop(0)
                await self._import_hour(symbol, hour, fetch, checkpoint, summary)
                meter.show(i + 1, hour, summary)
        finally:
            for task in pending:
                task.cancel()
            # Their outcome is collected, never left to "exception was never retrieved".
            await asyncio.gather(*pending, return_exceptions=True)
            meter.close()
        if (missing := summary.missing_problem()) is not None:
            summary.problems.append(missing)
        return summary

    async def _import_hour(
        self,
        symbol: str,
        hour: datetime,
        fetch: asyncio.Task[HourFile],
        checkpoint: ImportCheckpoint,
        summary: ImportSummary,
    ) -> None:
        where = f"{symbol} {hour_key(hour)} ({hour_path(symbol, hour)})"
        try:
            hour_file = await fetch
        except HourMissing as exc:
            summary.missing += 1
            summary.missing_hours.append(hour_key(hour))
            summary.missing_reason = summary.missing_reason or f"{where}: {exc}"
            log.debug("dukascopy: %s: missing: %s", where, exc)
            return
        except ProviderError as exc:
            self._fail(summary, where, "download_failed", str(exc))
            return
        summary.files += 1
        bad: list[BadRecord] = []
        try:
            ticks = decode_bi5(hour_file.data, symbol, hour, bad)
        except ParseError as exc:
            self.hours.forget(symbol, hour)
            self._fail(summary, where, exc.reason, exc.detail)
            record = codec.RawRecord(
                source=SOURCE, format=FILE_FORMAT, payload=hour_file.data[:REJECT_PAYLOAD_BYTES]
            )
            detail = f"{where}: {exc.detail} ({len(hour_file.data)} bytes)"
            if self.reject is not None:
                await (await self.reject(symbol.encode(), _rejection(exc.reason, detail, record)))
            return
        del hour_file
        if not ticks:
            summary.empty_hours += 1
        acks = []
        reject_acks = []
        for problem in bad:
            summary.bad_records += 1
            detail = f"{where} record {problem.index}: {problem.detail}"
            if len(bad) <= 5 or problem is bad[0]:
                summary.problems.append(f"{detail} ({problem.reason}; {len(bad)} in the hour)")
                log.warning("dukascopy: %s (%s)", detail, problem.reason)
            if self.reject is not None:
                record = codec.RawRecord(source=SOURCE, format=RECORD_FORMAT, payload=problem.raw)
                rejection = _rejection(problem.reason, detail, record)
                reject_acks.append(await self.reject(symbol.encode(), rejection))
        for i in range(0, len(ticks), self.batch_ticks):
            value = encode_tick_records(ticks[i : i + self.batch_ticks], SOURCE)
            acks.append(await self.send(symbol.encode(), value))
        for ack in reject_acks + acks:
            await ack  # a failed send raises here: the hour is not checkpointed
        checkpoint.mark(hour)
        summary.ticks += len(ticks)
        summary.messages += len(acks)

    @staticmethod
    def _fail(summary: ImportSummary, where: str, reason: str, detail: str) -> None:
        summary.errors += 1
        summary.problems.append(f"{where}: {reason}: {detail}")
        log.error("dukascopy: %s: %s: %s", where, reason, detail)


def hour_ranges(keys: list[str]) -> list[str]:
    """Consecutive hour keys ("2024-01-06T00", ...) as "first..last" ranges."""
    ranges: list[list[datetime]] = []
    for key in keys:
        hour = datetime.fromisoformat(key + ":00").replace(tzinfo=UTC)
        if ranges and hour - ranges[-1][1] == HOUR:
            ranges[-1][1] = hour
        else:
            ranges.append([hour, hour])
    return [hour_key(a) if a == b else f"{hour_key(a)}..{hour_key(b)}" for a, b in ranges]


class ProgressMeter:
    """Import progress with rate and ETA: one line rewritten in place on a terminal, a
    plain line every 10% (or 30 s) otherwise, so logs and CI output stay readable."""

    PLAIN_EVERY_S = 30.0

    def __init__(self, out: TextIO | None, symbol: str, total: int) -> None:
        self.out = out
        self.symbol = symbol
        self.total = total
        self.tty = bool(out is not None and out.isatty())
        self.started = time.monotonic()
        self.last_plain = self.started
        self.next_tenth = 1

    def show(self, done: int, hour: datetime, summary: ImportSummary) -> None:
        if self.out is None or not self.total:
            return
        now = time.monotonic()
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate else 0.0
        text = (
            f"{self.symbol} {hour_key(hour)}  {done}/{self.total} hours  {rate:.1f} h/s  "
            f"ETA {eta:.0f}s  {summary.ticks:,} ticks  {summary.missing} missing  "
            f"{summary.errors} errors"
        )
        if self.tty:
            self.out.write(f"\r{text}")
            self.out.flush()
            return
        tenth = done * 10 // self.total
        if tenth >= self.next_tenth or now - self.last_plain >= self.PLAIN_EVERY_S:
            self.next_tenth = tenth + 1
            self.last_plain = now
            self.out.write(f"{text}\n")
            self.out.flush()

    def close(self) -> None:
        if self.out is not None and self.tty and self.total:
            self.out.write("\n")


def _rejection(reason: str, detail: str, record: codec.RawRecord) -> bytes:
    return codec.encode_rejection([reason], detail, record, stage=STAGE_SOURCE)


async def load_reference_ticks(
    hours: HourSource, symbol: str, start: datetime, end: datetime
) -> tuple[list[Tick], list[str]]:
    """Every reference tick of [start, end) in time order, plus the problems met on the way."""
    lo, hi = hour_start_ns(hour_floor(start)), int(end.timestamp() * NS_PER_SECOND)
    lo = max(lo, int(start.timestamp() * NS_PER_SECOND))
    ticks: list[Tick] = []
    problems: list[str] = []
    for hour in hours_between(start, end):
        bad: list[BadRecord] = []
        try:
            hour_file = await hours.fetch(symbol, hour)
            decoded = decode_bi5(hour_file.data, symbol, hour, bad)
        except (HourMissing, ProviderError) as exc:
            problems.append(f"{symbol} {hour_key(hour)}: {exc}")
            continue
        except ParseError as exc:
            hours.forget(symbol, hour)
            problems.append(f"{symbol} {hour_key(hour)}: {exc}")
            continue
        if bad:
            first = bad[0]
            problems.append(
                f"{symbol} {hour_key(hour)}: {len(bad)} bad records skipped "
                f"(first: record {first.index}: {first.reason}: {first.detail})"
            )
        ticks.extend(t for t in decoded if lo <= t.event_time_ns < hi)
    return ticks, problems
