"""Dukascopy .bi5 decoding, hour sources (directory and HTTP) and the importer, without Kafka.

Every .bi5 here is built by the test with Python's lzma in FORMAT_ALONE, as Dukascopy
writes them, and every expected price is written out by hand in fixed-point units.
"""

from __future__ import annotations

import asyncio
import io
import lzma
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from app.core.errors import ParseError, ProviderError
from app.sources.dukascopy.bi5 import (
    DirectoryHours,
    DukascopyImporter,
    HourMissing,
    HttpHours,
    ImportCheckpoint,
    UnknownInstrumentError,
    decode_bi5,
    decompress_bi5,
    encode_bi5,
    hour_path,
    hours_between,
    point_factor,
)
from app.wire import codec

HOUR = datetime(2024, 3, 5, 14, tzinfo=UTC)
HOUR_NS = 1_709_647_200_000_000_000  # 2024-03-05T14:00:00Z


def alone(records: list[tuple[int, int, int, float, float]]) -> bytes:
    raw = b"".join(struct.pack(">IIIff", *r) for r in records)
    return lzma.compress(raw, format=lzma.FORMAT_ALONE)


def test_hour_start_constant_is_right() -> None:
    assert int(HOUR.timestamp()) * 1_000_000_000 == HOUR_NS


def test_eurusd_prices_times_and_volumes_exact() -> None:
    data = alone([(0, 108_765, 108_761, 1.5, 2.25), (3_599_999, 108_770, 108_768, 0.2, 12.0)])
    first, last = decode_bi5(data, "EURUSD", HOUR)
    assert (first.ask, first.bid) == (1_087_650_000, 1_087_610_000)  # ask before bid
    assert (last.ask, last.bid) == (1_087_700_000, 1_087_680_000)
    assert first.event_time_ns == HOUR_NS
    assert last.event_time_ns == HOUR_NS + 3_599_999_000_000
    assert (first.ask_volume, first.bid_volume) == (1.5, 2.25)
    assert (last.ask_volume, last.bid_volume) == (0.2, 12.0)  # float32 noise removed
    assert first.symbol == "EURUSD" and first.source == "dukascopy"


def test_jpy_pair_uses_three_decimals() -> None:
    (tick,) = decode_bi5(alone([(250, 151_234, 151_229, 1.0, 1.0)]), "USDJPY", HOUR)
    assert (tick.ask, tick.bid) == (151_234_000_000, 151_229_000_000)  # 151.234 / 151.229
    assert tick.event_time_ns == HOUR_NS + 250_000_000


@pytest.mark.parametrize(
    ("symbol", "ask_points", "ask_e9"),
    [("XAUUSD", 2_034_125, 2_034_125_000_000), ("XAGUSD", 22_871, 22_871_000_000)],
)
def test_metals_have_their_own_scale(symbol: str, ask_points: int, ask_e9: int) -> None:
    (tick,) = decode_bi5(alone([(1, ask_points, ask_points - 10, 0.01, 0.02)]), symbol, HOUR)
    assert tick.ask == ask_e9
    assert tick.bid == ask_e9 - 10_000_000


def test_empty_file_is_an_hour_without_ticks() -> None:
    assert decode_bi5(b"", "EURUSD", HOUR) == []
    assert encode_bi5([]) == b""


def test_two_concatenated_streams_are_both_read() -> None:
    records = [(i * 10, 110_000 + i, 109_990 + i, 1.0, 1.0) for i in range(7)]
    data = encode_bi5(records, streams=2)
    # really two streams: the first decoder stops with the second one left over
    decoder = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)
    decoder.decompress(data)
    assert decoder.eof and decoder.unused_data
    ticks = decode_bi5(data, "EURUSD", HOUR)
    assert [t.ask for t in ticks] == [(110_000 + i) * 10_000 for i in range(7)]
    assert [t.event_time_ns - HOUR_NS for t in ticks] == [i * 10_000_000 for i in range(7)]


def test_corrupt_stream_is_a_parse_error() -> None:
    data = bytearray(alone([(0, 1, 1, 1.0, 1.0)] * 50))
    data[0] = 0xFF  # LZMA properties byte out of range
    with pytest.raises(ParseError) as err:
        decode_bi5(bytes(data), "EURUSD", HOUR)
    assert err.value.reason == "corrupt_lzma"


def test_truncated_stream_is_a_parse_error() -> None:
    data = alone([(i, 110_000 + i, 109_000, 1.0, 1.0) for i in range(500)])
    with pytest.raises(ParseError) as err:
        decompress_bi5(data[: len(data) // 2])
    assert err.value.reason == "truncated"


def test_payload_not_a_multiple_of_20_bytes() -> None:
    raw = struct.pack(">IIIff", 0, 1, 1, 1.0, 1.0) + b"\x00" * 7
    with pytest.raises(ParseError) as err:
        decode_bi5(lzma.compress(raw, format=lzma.FORMAT_ALONE), "EURUSD", HOUR)
    assert err.value.reason == "bad_record_length"
    assert "27 bytes" in err.value.detail


def test_unknown_instrument_is_refused_with_its_name() -> None:
    with pytest.raises(UnknownInstrumentError, match="'BTCUSD'"):
        decode_bi5(b"", "BTCUSD", HOUR)
    assert point_factor("EURUSD") == 10_000 and point_factor("USDJPY") == 1_000_000


def test_url_layout_month_is_zero_based() -> None:
    assert hour_path("EURUSD", datetime(2024, 1, 9, 7, tzinfo=UTC)) == (
        "EURUSD/2024/00/09/07h_ticks.bi5"
    )
    assert hour_path("XAUUSD", datetime(2023, 12, 31, 23, tzinfo=UTC)) == (
        "XAUUSD/2023/11/31/23h_ticks.bi5"
    )


def test_hours_between_end_exclusive() -> None:
    hours = hours_between(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
    assert len(hours) == 24 and hours[0].hour == 0 and hours[-1].hour == 23
    # a partial hour at either end is still imported as a whole hour
    assert len(hours_between(datetime(2024, 1, 1, 0, 30), datetime(2024, 1, 1, 2, 1))) == 3


# --- importer (fake sender: pure logic; tests/sources/test_dukascopy_import_integration.py
#     does the same through real Kafka) ---


def write_tree(root: Path, symbol: str, hours: dict[int, bytes]) -> None:
    for h, data in hours.items():
        path = root / hour_path(symbol, datetime(2024, 3, 5, h, tzinfo=UTC))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class Sent:
    """Collects sent messages; with `fail_after` = n the (n+1)-th acknowledgement fails."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.messages: list[tuple[bytes, bytes]] = []
        self.fail_after = fail_after

    async def __call__(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        self.messages.append((key, value))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail_after is not None and len(self.messages) == self.fail_after + 1:
            ack.set_exception(ConnectionError("broker gone"))
        else:
            ack.set_result(None)
        return ack

    def ticks(self) -> list[codec.RawRecord]:
        return [r for _, v in self.messages for r in codec.decode_raw_batch(v).records]


def records(n: int, base: int = 110_000) -> list[tuple[int, int, int, float, float]]:
    return [(i * 1000, base + i, base + i - 3, 1.0, 1.0) for i in range(n)]


async def test_importer_sends_in_time_order_reports_bad_hours_and_resumes(tmp_path: Path) -> None:
    bad = bytearray(alone(records(50)))
    bad[0] = 0xFF
    write_tree(
        tmp_path / "tree",
        "EURUSD",
        {10: alone(records(30)), 11: b"", 12: bytes(bad), 13: encode_bi5(records(25), 2)},
    )  # hour 14 has no file
    sent = Sent()
    importer = DukascopyImporter(
        DirectoryHours(tmp_path / "tree"), sent, tmp_path / "ck", batch_ticks=10, progress=None
    )
    start, end = datetime(2024, 3, 5, 10, tzinfo=UTC), datetime(2024, 3, 5, 15, tzinfo=UTC)
    summary = await importer.run("EURUSD", start, end)
    assert (summary.hours, summary.files, summary.empty_hours) == (5, 4, 1)
    assert (summary.ticks, summary.messages, summary.errors, summary.missing) == (55, 6, 1, 1)
    assert any("2024-03-05T12" in p and "corrupt_lzma" in p for p in summary.problems)
    assert any("2024-03-05T14" in p and "missing" in p for p in summary.problems)
    got = sent.ticks()
    assert {k for k, _ in sent.messages} == {b"EURUSD"}
    assert all(r.source == "dukascopy" and r.format == "tick" for r in got)
    times = [r.tick.event_time_ns for r in got]
    assert times == sorted(times) and len(times) == 55

    # same range again: every good hour is skipped, nothing is sent twice
    again = await importer.run("EURUSD", start, end)
    assert (again.skipped, again.ticks, again.errors) == (3, 0, 1)
    assert len(sent.ticks()) == 55

    # the bad hour is fixed: only it is imported on the next run
    write_tree(tmp_path / "tree", "EURUSD", {12: alone(records(5))})
    fixed = await importer.run("EURUSD", start, end)
    assert (fixed.skipped, fixed.ticks, fixed.errors) == (3, 5, 0)
    assert len(sent.ticks()) == 60


async def test_hour_not_checkpointed_when_kafka_does_not_acknowledge(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", "EURUSD", {10: alone(records(30)), 11: alone(records(30))})
    importer = DukascopyImporter(
        DirectoryHours(tmp_path / "tree"),
        Sent(fail_after=4),
        tmp_path / "ck",
        batch_ticks=10,
        progress=None,
    )
    start, end = datetime(2024, 3, 5, 10, tzinfo=UTC), datetime(2024, 3, 5, 12, tzinfo=UTC)
    with pytest.raises(ConnectionError):
        await importer.run("EURUSD", start, end)
    checkpoint = ImportCheckpoint(tmp_path / "ck", "EURUSD")
    assert start in checkpoint  # hour 10: 3 messages, all acknowledged
    assert datetime(2024, 3, 5, 11, tzinfo=UTC) not in checkpoint


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_progress_line_and_unknown_symbol(tmp_path: Path) -> None:
    write_tree(tmp_path, "EURUSD", {10: alone(records(3))})
    out = Terminal()
    importer = DukascopyImporter(DirectoryHours(tmp_path), Sent(), tmp_path / "ck", progress=out)
    await importer.run(
        "EURUSD", datetime(2024, 3, 5, 10, tzinfo=UTC), datetime(2024, 3, 5, 11, tzinfo=UTC)
    )
    assert "\rEURUSD 2024-03-05T10  1/1 hours" in out.getvalue()
    assert "ETA 0s  3 ticks  0 missing  0 errors" in out.getvalue()
    with pytest.raises(UnknownInstrumentError):
        await importer.run("DOGEUSD", datetime(2024, 3, 5, tzinfo=UTC), datetime(2024, 3, 6))


async def test_plain_progress_lines_and_missing_hours_summarised(tmp_path: Path) -> None:
    """Not a terminal: a line per 10%, no carriage returns; 47 missing hours -> one line."""
    write_tree(tmp_path, "EURUSD", {10: alone(records(3)), 20: alone(records(2))})
    out = io.StringIO()
    importer = DukascopyImporter(DirectoryHours(tmp_path), Sent(), tmp_path / "ck", progress=out)
    summary = await importer.run(
        "EURUSD", datetime(2024, 3, 5, 0, tzinfo=UTC), datetime(2024, 3, 7, 1, tzinfo=UTC)
    )
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 10
    assert lines[-1].startswith("EURUSD 2024-03-07T00  49/49 hours")
    assert summary.missing == 47 and len(summary.problems) == 1
    assert summary.problems[0].startswith(
        "EURUSD: missing 47 hour(s) in 3 range(s): 2024-03-05T00..2024-03-05T09, "
        "2024-03-05T11..2024-03-05T19, 2024-03-05T21..2024-03-07T00 (first: EURUSD "
        "2024-03-05T00 (EURUSD/2024/02/05/00h_ticks.bi5): "
    )


# --- HTTP: a local aiohttp server serving a tree, with a 404 hour and a flaky hour ---


@pytest.fixture
async def datafeed(tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, int]]]:
    tree = tmp_path / "served"
    write_tree(tree, "EURUSD", {10: alone(records(4)), 11: alone(records(6)), 13: b""})
    hits: dict[str, int] = {}
    flaky = hour_path("EURUSD", datetime(2024, 3, 5, 11, tzinfo=UTC))
    broken = hour_path("EURUSD", datetime(2024, 3, 5, 14, tzinfo=UTC))

    async def serve(request: web.Request) -> web.StreamResponse:
        rel = request.match_info["rel"]
        hits[rel] = hits.get(rel, 0) + 1
        if rel == flaky and hits[rel] == 1:
            return web.Response(status=500, text="busy")
        if rel == broken:
            return web.Response(status=503, text="down")
        path = tree / rel
        if not path.is_file():
            return web.Response(status=404)
        return web.Response(body=path.read_bytes())

    server = web.Application()
    server.router.add_get("/datafeed/{rel:.*}", serve)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/datafeed", hits
    await runner.cleanup()


async def test_http_download_retries_5xx_reports_404_and_caches(
    datafeed: tuple[str, dict[str, int]], tmp_path: Path
) -> None:
    url, hits = datafeed
    hours = HttpHours(url, tmp_path / "cache", retries=2, backoff_s=0.01)
    sent = Sent()
    importer = DukascopyImporter(hours, sent, tmp_path / "ck", progress=None)
    start, end = datetime(2024, 3, 5, 10, tzinfo=UTC), datetime(2024, 3, 5, 15, tzinfo=UTC)
    try:
        summary = await importer.run("EURUSD", start, end)
    finally:
        await hours.close()
    assert (summary.files, summary.ticks, summary.empty_hours) == (3, 10, 1)
    assert summary.missing == 1 and any("T12" in p and "404" in p for p in summary.problems)
    assert summary.errors == 1 and any("T14" in p and "503" in p for p in summary.problems)
    flaky = hour_path("EURUSD", datetime(2024, 3, 5, 11, tzinfo=UTC))
    assert hits[flaky] == 2  # 500, then 200
    assert hits[hour_path("EURUSD", datetime(2024, 3, 5, 12, tzinfo=UTC))] == 1  # 404: no retry
    assert hits[hour_path("EURUSD", datetime(2024, 3, 5, 14, tzinfo=UTC))] == 3  # 1 + 2 retries
    assert (tmp_path / "cache" / flaky).read_bytes() == alone(records(6))

    # a second source on the same cache serves the file without a request
    cached = HttpHours(url, tmp_path / "cache", retries=0)
    before = dict(hits)
    try:
        hour_file = await cached.fetch("EURUSD", datetime(2024, 3, 5, 11, tzinfo=UTC))
        with pytest.raises(HourMissing):
            await cached.fetch("EURUSD", datetime(2024, 3, 5, 12, tzinfo=UTC))
        with pytest.raises(ProviderError):
            await cached.fetch("EURUSD", datetime(2024, 3, 5, 14, tzinfo=UTC))
    finally:
        await cached.close()
    assert len(decode_bi5(hour_file.data, "EURUSD", hour_file.hour)) == 6
    assert hits[flaky] == before[flaky]
