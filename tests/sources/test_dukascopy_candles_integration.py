"""Dukascopy import -> raw.historical.ticks -> worker -> market-candles, against an independent
OHLC of the same ticks. The import ends with a candle flush marker, so every window of the
range leaves, the last hour included; a re-run of the import changes nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from app.pipeline.topics import MARKET_CANDLES, RAW_HISTORICAL_TICKS
from app.sources.dukascopy.bi5 import encode_bi5, hour_path
from app.wire import codec
from devstack.stack import StackConfig
from tests.sources.test_dukascopy_import_integration import hour, run_import
from tests.support.candles import fields, final_revisions, independent
from tests.support.pipeline import read_all
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

HOURS = {0: 400, 1: 250}  # ticks per hour of 2024-01-02


def records(h: int, n: int) -> list[tuple[int, int, int, float, float]]:
    """Irregular times (some equal), prices wandering: (ms, ask, bid, ask vol, bid vol)."""
    out = []
    ms = 0
    for i in range(n):
        ms += (i * 7919) % 17_000  # 0 (a repeated time) up to 17 s apart
        mid = 109_000 + ((i * 37) % 41) - 20 + h * 30
        out.append((min(ms, 3_599_999), mid + 3 + i % 4, mid - 3, 1.0, 1.0))
    return out


async def historical_ticks(bootstrap: str) -> list[tuple[int, int, int]]:
    """(event time, bid, ask) of the ticks in raw.historical.ticks, in topic order."""
    out = []
    for _key, value in await read_all(bootstrap, RAW_HISTORICAL_TICKS):
        for record in codec.decode_raw_batch(value).records:
            if record.HasField("tick"):
                t = record.tick
                out.append((t.event_time_ns, t.bid_e9, t.ask_e9))
    return out


async def test_import_candles_match_an_independent_computation(
    clean_kafka: StackConfig, app_id: str, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    for h, n in HOURS.items():
        path = tree / hour_path("EURUSD", hour(h))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_bi5(records(h, n)))
    done = run_import(clean_kafka, tmp_path / "import", tree, "2024-01-02T02")
    assert done.returncode == 0, done.stderr
    boot = clean_kafka.kafka_bootstrap
    ticks = await historical_ticks(boot)
    assert len(ticks) == sum(HOURS.values())

    with Worker(clean_kafka, tmp_path / "w", app_id):
        deadline = time.monotonic() + 90
        expected = independent(ticks)
        while True:
            candles = [codec.decode_candle(v) for _, v in await read_all(boot, MARKET_CANDLES)]
            if len(final_revisions(candles)) >= len(expected):
                break
            assert time.monotonic() < deadline, f"{len(candles)} of {len(expected)} candles"
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # nothing more may come
        candles = [codec.decode_candle(v) for _, v in await read_all(boot, MARKET_CANDLES)]

    assert {c.source for c in candles} == {"dukascopy"}
    final = final_revisions(candles)
    got = {(tf, start): fields(c) for (_src, _sym, tf, start), c in final.items()}
    # every window, the last ones too (flushed at 02:00): 1h x2, 5m x24, 1m and 1s as ticked
    assert set(got) == set(expected)
    assert got == expected
    assert sum(1 for tf, _ in got if tf == "1h") == 2
    assert all(c.revision == 0 for c in candles)  # in-order history: no revisions
    assert len(candles) == len(expected)
