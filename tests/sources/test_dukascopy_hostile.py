"""Hostile .bi5 files through the decoder and the importer (issue #15).

An LZMA bomb, a tick 46 days after its hour, NaN/inf/negative volumes, a cut-off file and
random bytes: the importer never raises for them, each bad file or record is a reject
with its reason and raw bytes, and every good record (also the ones after a bad one)
arrives as a tick.
"""

from __future__ import annotations

import asyncio
import lzma
import math
import struct
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.core.errors import ParseError, ProviderError
from app.sources.dukascopy.bi5 import (
    FILE_FORMAT,
    LZMA_MEMLIMIT,
    MAX_FILE_BYTES,
    MAX_HOUR_BYTES,
    MS_PER_HOUR,
    RECORD_FORMAT,
    BadRecord,
    DirectoryHours,
    DukascopyImporter,
    HttpHours,
    decode_bi5,
    decompress_bi5,
    encode_bi5,
    hour_path,
    hour_start_ns,
)
from app.wire import codec
from tests.sources.test_dukascopy import Sent

BOMB = Path(__file__).parent.parent / "fixtures" / "dukascopy" / "bomb_400mib.bi5"
HOUR = datetime(2024, 3, 5, 10, tzinfo=UTC)
RECORD = struct.Struct(">IIIff")
FORTY_SIX_DAYS_MS = 46 * 24 * 3600 * 1000  # 3,974,400,000: fits the uint32 offset

Rec = tuple[int, int, int, float, float]


def good(n: int, offset: int = 0) -> list[Rec]:
    return [((offset + i) * 1000, 110_000 + i, 109_997 + i, 1.0, 2.0) for i in range(n)]


def is_good(rec: Rec) -> bool:
    ms, _ask, _bid, ask_vol, bid_vol = rec
    return ms < MS_PER_HOUR and all(0.0 <= v < math.inf for v in (ask_vol, bid_vol))


def lzma_alone(raw: bytes) -> bytes:
    return lzma.compress(raw, format=lzma.FORMAT_ALONE, preset=1)


async def import_files(
    tmp_path: Path, files: dict[int, bytes]
) -> tuple[object, list[codec.RawRecord], list[codec.Rejection]]:
    """Import hours 10.. of 2024-03-05 from a directory; returns summary, ticks, rejects."""
    for h, data in files.items():
        path = tmp_path / "tree" / hour_path("EURUSD", HOUR + timedelta(hours=h))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    sent, rejected = Sent(), Sent()
    importer = DukascopyImporter(
        DirectoryHours(tmp_path / "tree"),
        sent,
        tmp_path / "ck",
        batch_ticks=50,
        progress=None,
        reject=rejected,
    )
    summary = await importer.run("EURUSD", HOUR, HOUR + timedelta(hours=max(files) + 1))
    rejects = [codec.decode_rejection(value) for _key, value in rejected.messages]
    assert {key for key, _ in rejected.messages} <= {b"EURUSD"}
    return summary, sent.ticks(), rejects


def tick_tuple(record: codec.RawRecord, hour: int = 0) -> tuple[int, int, int]:
    start = hour_start_ns(HOUR + timedelta(hours=hour))
    t = record.tick
    return ((t.event_time_ns - start) // 1_000_000, t.ask_e9, t.bid_e9)


# --- the named inputs of the issue ---


def test_the_400_mib_bomb_is_refused_after_the_hour_bound() -> None:
    data = BOMB.read_bytes()
    assert len(data) < 60 * 1024  # 58 KiB that inflate to 400 MiB of zeros
    tracemalloc.start()
    try:
        with pytest.raises(ParseError) as err:
            decompress_bi5(data)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.reason == "too_large" and str(MAX_HOUR_BYTES) in err.value.detail
    # never inflated: the output stops one byte past the hour bound (7.2 MB), not 400 MiB;
    # the rest is the decoder's dictionary (64 MiB for this preset-9 file, <= memlimit)
    assert peak < LZMA_MEMLIMIT + 4 * MAX_HOUR_BYTES, f"peak {peak} bytes while decompressing"


async def test_bomb_hour_is_a_reject_and_the_next_hour_still_arrives(tmp_path: Path) -> None:
    bomb = BOMB.read_bytes()
    summary, ticks, rejects = await import_files(tmp_path, {0: bomb, 1: b""})
    assert summary.errors == 1 and any("too_large" in p for p in summary.problems)
    [rejection] = rejects
    assert list(rejection.reasons) == ["too_large"] and rejection.stage == "source"
    assert rejection.record.format == FILE_FORMAT and rejection.record.payload == bomb
    summary, ticks, rejects = await import_files(tmp_path / "b", {0: bomb, 1: encode_bi5(good(3))})
    assert [tick_tuple(r, 1) for r in ticks] == [
        (i * 1000, (110_000 + i) * 10_000, (109_997 + i) * 10_000) for i in range(3)
    ]
    assert summary.errors == 1 and summary.ticks == 3


async def test_tick_46_days_ahead_is_rejected_and_the_ticks_after_it_arrive(
    tmp_path: Path,
) -> None:
    records = [*good(2), (FORTY_SIX_DAYS_MS, 110_500, 110_497, 1.0, 1.0), *good(2, offset=2)]
    summary, ticks, rejects = await import_files(tmp_path, {0: encode_bi5(records)})
    assert [tick_tuple(r)[0] for r in ticks] == [0, 1000, 2000, 3000]
    [rejection] = rejects
    assert list(rejection.reasons) == ["bad_offset"]
    assert rejection.record.format == RECORD_FORMAT
    assert rejection.record.payload == RECORD.pack(FORTY_SIX_DAYS_MS, 110_500, 110_497, 1.0, 1.0)
    assert "record 2" in rejection.detail and "3974400000" in rejection.detail
    assert summary.bad_records == 1 and summary.errors == 0 and summary.ticks == 4
    assert "bad_records=1" in summary.line()


@pytest.mark.parametrize("volume", [math.nan, math.inf, -math.inf, -1.0])
@pytest.mark.parametrize("side", [3, 4])
async def test_nan_inf_and_negative_volumes_are_rejected(
    tmp_path: Path, volume: float, side: int
) -> None:
    bad = list(good(1, offset=1)[0])
    bad[side] = volume
    records = [*good(1), tuple(bad), *good(1, offset=2)]
    _summary, ticks, rejects = await import_files(tmp_path, {0: encode_bi5(records)})
    assert [tick_tuple(r)[0] for r in ticks] == [0, 2000]
    [rejection] = rejects
    assert list(rejection.reasons) == ["bad_volume"]


async def test_file_not_a_multiple_of_20_keeps_its_whole_records(tmp_path: Path) -> None:
    raw = b"".join(RECORD.pack(*r) for r in good(3)) + b"\x01" * 7
    summary, ticks, rejects = await import_files(tmp_path, {0: lzma_alone(raw)})
    assert len(ticks) == 3 and summary.bad_records == 1
    [rejection] = rejects
    assert list(rejection.reasons) == ["bad_record_length"]
    assert rejection.record.payload == b"\x01" * 7 and "67 bytes" in rejection.detail


async def test_cut_off_lzma_file_is_a_whole_file_reject(tmp_path: Path) -> None:
    data = encode_bi5(good(500))
    summary, ticks, rejects = await import_files(tmp_path, {0: data[: len(data) // 2]})
    assert not ticks and summary.errors == 1
    [rejection] = rejects
    assert list(rejection.reasons) == ["truncated"]


def test_strict_decoding_without_a_bad_list_raises_parse_error() -> None:
    records = [*good(1), (FORTY_SIX_DAYS_MS, 1, 1, 1.0, 1.0)]
    with pytest.raises(ParseError) as err:
        decode_bi5(encode_bi5(records), "EURUSD", HOUR)
    assert err.value.reason == "bad_offset"
    bad: list[BadRecord] = []
    assert len(decode_bi5(encode_bi5(records), "EURUSD", HOUR, bad)) == 1
    assert [b.index for b in bad] == [1]


# --- properties ---

volumes = st.one_of(
    st.floats(0, 1000, width=32),
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0]),
    st.floats(width=32),
)
offsets = st.one_of(
    st.integers(0, MS_PER_HOUR - 1),
    st.integers(MS_PER_HOUR, 2**32 - 1),
    st.sampled_from([MS_PER_HOUR - 1, MS_PER_HOUR, FORTY_SIX_DAYS_MS, 2**32 - 1]),
)
records_st = st.tuples(
    offsets, st.integers(1, 2**32 - 1), st.integers(1, 2**32 - 1), volumes, volumes
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    hours=st.lists(
        st.tuples(
            st.lists(records_st, max_size=40),
            st.binary(max_size=19),  # a cut-off last record
            st.integers(1, 3),  # concatenated LZMA streams
        ),
        min_size=1,
        max_size=3,
    )
)
@example(hours=[([(FORTY_SIX_DAYS_MS, 2, 1, 1.0, 1.0), (5, 2, 1, math.nan, 1.0)], b"", 1)])
def test_random_records_good_ones_arrive_bad_ones_are_rejects(
    tmp_path_factory: pytest.TempPathFactory, hours: list[tuple[list[Rec], bytes, int]]
) -> None:
    tmp_path = tmp_path_factory.mktemp("bi5")
    files = {}
    for h, (records, tail, streams) in enumerate(hours):
        data = encode_bi5(records, streams) if records else b""
        if tail:
            data += lzma_alone(tail) if not records else b""
            if records:  # the tail inside the last stream
                raw = b"".join(RECORD.pack(*r) for r in records) + tail
                data = lzma_alone(raw)
        files[h] = data
    summary, ticks, rejects = asyncio.run(import_files(tmp_path, files))
    want_ticks, want_bad = [], []
    for h, (records, tail, _streams) in enumerate(hours):
        want_ticks += [(h, r[0], r[1], r[2]) for r in records if is_good(r)]
        want_bad += [RECORD.pack(*r) for r in records if not is_good(r)]
        if tail:
            want_bad.append(tail)
    start = hour_start_ns(HOUR)
    got = [
        (
            (r.tick.event_time_ns - start) // 3_600_000_000_000,
            (r.tick.event_time_ns - start) // 1_000_000 % MS_PER_HOUR,
            r.tick.ask_e9 // 10_000,
            r.tick.bid_e9 // 10_000,
        )
        for r in ticks
    ]
    assert got == want_ticks
    assert [r.record.payload for r in rejects] == want_bad
    assert all(r.reasons and r.reasons[0] for r in rejects)
    assert summary.errors == 0 and summary.bad_records == len(want_bad)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.builds(lambda b: lzma_alone(b), st.binary(max_size=400)),
        st.builds(
            lambda b, cut: lzma_alone(b)[:cut], st.binary(min_size=1, max_size=400), st.integers(0)
        ),
        st.builds(
            lambda b, i, x: (lambda d: d[:i] + bytes([x]) + d[i + 1 :])(lzma_alone(b)),
            st.binary(max_size=200),
            st.integers(0, 40),
            st.integers(0, 255),
        ),
    )
)
def test_random_bytes_never_raise_out_of_the_importer(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    tmp_path = tmp_path_factory.mktemp("bi5")
    summary, ticks, rejects = asyncio.run(import_files(tmp_path, {0: data, 1: encode_bi5(good(2))}))
    assert [tick_tuple(r, 1)[0] for r in ticks[-2:]] == [0, 1000]  # the next hour arrives
    assert summary.errors == sum(1 for r in rejects if r.record.format == FILE_FORMAT)
    assert all(r.reasons and r.reasons[0] for r in rejects)


async def test_http_file_over_the_bound_is_refused_without_retry(tmp_path: Path) -> None:
    hits = 0

    async def serve(request: web.Request) -> web.StreamResponse:
        nonlocal hits
        hits += 1
        resp = web.StreamResponse()
        await resp.prepare(request)
        block = b"\0" * (1024 * 1024)
        for _ in range(MAX_FILE_BYTES // len(block) + 2):  # never ends before the bound
            await resp.write(block)
        return resp

    app = web.Application()
    app.router.add_get("/{rel:.*}", serve)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    hours = HttpHours(str(server.make_url("")), tmp_path / "cache", retries=2, backoff_s=0.01)
    try:
        with pytest.raises(ProviderError, match=f"over {MAX_FILE_BYTES} bytes"):
            await hours.fetch("EURUSD", HOUR)
    finally:
        await hours.close()
        await server.close()
    assert hits == 1 and not (tmp_path / "cache").exists()
