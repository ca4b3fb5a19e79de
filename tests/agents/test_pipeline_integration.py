"""Raw batches from two brokers through a real worker and Kafka: exact outputs and rejects,
then the tables survive a restart (RocksDB) and a lost data dir (changelog rebuild)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from app.wire import codec
from devstack.stack import StackConfig
from tests.support.kafka import produce, read_topic
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

MS = 1_000_000
T0 = 1_796_029_200_000_000_000  # 2026-11-30T09:00:00Z
IC, PEP = "ic_markets", "pepperstone"  # priorities 1 and 2 in config/service.yaml


def tick(source: str, bid: str, ask: str, at_ms: int, symbol: str = "EURUSD") -> codec.RawRecord:
    event = T0 + at_ms * MS
    t = codec.MarketTick(
        symbol=symbol,
        source=source,
        bid_e9=round(float(bid) * 1e9),
        ask_e9=round(float(ask) * 1e9),
        bid_volume=1e6,
        ask_volume=1e6,
        event_time_ns=event,
        receive_time_ns=event + 5 * MS,
    )
    return codec.RawRecord(source=source, format="tick", receive_time_ns=event + 5 * MS, tick=t)


def oanda(source: str, payload: bytes, at_ms: int) -> codec.RawRecord:
    return codec.RawRecord(
        source=source, format="oanda_v20", payload=payload, receive_time_ns=T0 + at_ms * MS
    )


PEP_LINE_3600 = (
    b'{"type":"PRICE","time":"2026-11-30T09:00:03.600000000Z","instrument":"EUR_USD",'
    b'"tradeable":true,"bids":[{"price":"1.10007","liquidity":1000000}],'
    b'"asks":[{"price":"1.10011","liquidity":1000000}]}'
)

MESSAGES: list[tuple[bytes, bytes]] = [
    (
        b"EURUSD",
        codec.encode_raw_batch(
            [
                tick(IC, "1.10000", "1.10010", 0),  # A: first quote, chosen
                tick(PEP, "1.10000", "1.10020", 50),  # wider, bid tie -> ic: no change
                tick(IC, "1.10000", "1.10010", 0),  # duplicate
                tick(IC, "1.10020", "1.10010", 100),  # crossed_quote
            ]
        ),
    ),
    (
        b"EURUSD",
        codec.encode_raw_batch(
            [
                tick(PEP, "1.10005", "1.10010", 300),  # B: pep tighter
                tick(IC, "1.13000", "1.13010", 400),  # price_jump
                tick(IC, "1.10000", "1.10100", 450),  # spread_too_wide
            ]
        ),
    ),
    (b"EURUSD", b"\xff\xff\xff not a RawBatch"),  # malformed_batch
    (
        b"EURUSD",
        codec.encode_raw_batch(
            [
                tick(IC, "1.10001", "1.10004", 500),  # C: ic tighter again
                tick(PEP, "1.10006", "1.10010", 600),  # D: consolidated best bid moves
            ]
        ),
    ),
    (
        b"EURUSD",
        codec.encode_raw_batch(
            [
                tick(PEP, "1.10006", "1.10010", 3000),  # ic 2.5 s old: still fresh, no change
                tick(PEP, "1.10006", "1.10010", 3501),  # E: ic 3.001 s old -> failover to pep
                oanda(PEP, PEP_LINE_3600, 3605),  # F: parsed from payload, price moves
                oanda(PEP, b"{not json", 3700),  # malformed_json (stage parse)
            ]
        ),
    ),
    (b"EURUSD", codec.encode_raw_batch([tick(IC, "1.10001", "1.10004", 4000)])),  # G: ic back
    (b"FOOBAR", codec.encode_raw_batch([tick(IC, "1.0", "1.1", 0, symbol="FOOBAR")])),
]


def e9(price: str) -> int:
    return round(float(price) * 1e9)


def out(src: str, bid: str, ask: str, at: int, bb: str, bbs: str, ba: str, bas: str) -> tuple:
    return (src, e9(bid), e9(ask), T0 + at * MS, e9(bb), bbs, e9(ba), bas)


EXPECTED_STREAM = [
    [out(IC, "1.10000", "1.10010", 0, "1.10000", IC, "1.10010", IC)],
    [out(PEP, "1.10005", "1.10010", 300, "1.10005", PEP, "1.10010", IC)],
    [
        out(IC, "1.10001", "1.10004", 500, "1.10005", PEP, "1.10004", IC),
        out(IC, "1.10001", "1.10004", 500, "1.10006", PEP, "1.10004", IC),
    ],
    [
        out(PEP, "1.10006", "1.10010", 3501, "1.10006", PEP, "1.10010", PEP),
        out(PEP, "1.10007", "1.10011", 3600, "1.10007", PEP, "1.10011", PEP),
    ],
    [out(IC, "1.10001", "1.10004", 4000, "1.10007", PEP, "1.10004", IC)],
]

EXPECTED_REJECTS = [
    ("EURUSD", "validate", ["duplicate"]),
    ("EURUSD", "validate", ["crossed_quote"]),
    ("EURUSD", "validate", ["price_jump"]),
    ("EURUSD", "validate", ["spread_too_wide"]),
    ("EURUSD", "parse", ["malformed_batch"]),
    ("EURUSD", "parse", ["malformed_json"]),
    ("FOOBAR", "validate", ["unknown_instrument"]),
]


def summary(value: bytes) -> list[tuple]:
    stream = codec.decode_market_data(value)
    assert stream.source == "data-ingestion"
    assert stream.batch_time_ns == stream.ticks[-1].event_time_ns
    return [
        (
            t.source,
            t.bid_e9,
            t.ask_e9,
            t.event_time_ns,
            t.best_bid_e9,
            t.best_bid_source,
            t.best_ask_e9,
            t.best_ask_source,
        )
        for t in stream.ticks
    ]


def rejects_summary(records: list) -> list[tuple]:
    got = []
    for r in records:
        rej = codec.decode_rejection(r.value)
        got.append((r.key.decode(), rej.stage, list(rej.reasons)))
    return sorted(got, key=lambda g: (g[0], EXPECTED_REJECTS.index(g)))


def last_eurusd_reasons(records: list) -> list[str]:
    """Reasons of the newest EURUSD reject (topic order holds within a partition only)."""
    eurusd = [r for r in records if r.key == b"EURUSD"]
    return list(codec.decode_rejection(eurusd[-1].value).reasons)


def tables(worker: Worker) -> dict[str, Any]:
    return {
        path: worker.get_json(f"/tables/{path}")
        for path in ("last-price", "best-price", "quality", "rejects")
    }


async def wait_for(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.3)


async def test_two_brokers_exact_outputs_rejects_and_restart(
    clean_kafka: StackConfig, tmp_path: Path, app_id: str
):
    bootstrap = clean_kafka.kafka_bootstrap
    data_dir = tmp_path / "worker"
    with Worker(clean_kafka, data_dir, app_id) as worker:
        await produce(bootstrap, "raw.broker.ticks", MESSAGES)
        stream = await read_topic(bootstrap, "market-data-stream", expect=len(EXPECTED_STREAM))
        assert all(r.key == b"EURUSD" for r in stream)
        assert [summary(r.value) for r in stream] == EXPECTED_STREAM
        lineage = codec.decode_market_data(stream[0].value).ticks[0].lineage
        assert (lineage.topic, lineage.offset, lineage.index) == ("raw.broker.ticks", 0, 0)

        rejects = await read_topic(bootstrap, "market-data-rejects", expect=len(EXPECTED_REJECTS))
        assert rejects_summary(rejects) == EXPECTED_REJECTS
        jump = next(
            codec.decode_rejection(r.value)
            for r in rejects
            if "price_jump" in codec.decode_rejection(r.value).reasons
        )
        assert jump.record.tick.bid_e9 == e9("1.13000")
        assert (jump.lineage.offset, jump.lineage.index) == (1, 1)

        before = await wait_for(
            lambda: (
                tables(worker)
                if worker.get_json("/tables/rejects")["live"]["by_reason"].get("unknown_instrument")
                else None
            )
        )
        assert before["best-price"]["EURUSD"]["source"] == IC
        assert before["rejects"]["live"]["by_reason"] == {
            "crossed_quote": 1,
            "duplicate": 1,
            "malformed_batch": 1,
            "malformed_json": 1,
            "price_jump": 1,
            "spread_too_wide": 1,
            "unknown_instrument": 1,
        }
        eur_quality = before["quality"]["EURUSD"]
        assert set(eur_quality["ranking"]) == {IC, PEP}
        assert eur_quality["metrics"][IC]["ticks"] == 3
        assert eur_quality["metrics"][IC]["rejected"] == 4
        compare = worker.get_json("/brokers/compare/EURUSD")
        assert (
            compare["recommendation"] == f"Use {compare['ranking'][0]} as primary source for EURUSD"
        )
        health = worker.health()
        assert health["aggregation_metrics"]["total_symbols_tracked"] == 1
        assert health["quality_metrics"]["broker_sync_status"][PEP]["status"] == "in_sync"

    # Restart on the same data dir: RocksDB holds the tables.
    with Worker(clean_kafka, data_dir, app_id) as worker:
        assert tables(worker) == before
        await produce(bootstrap, "raw.broker.ticks", [(b"EURUSD", MESSAGES[5][1])])  # G again
        rejects = await read_topic(
            bootstrap, "market-data-rejects", expect=len(EXPECTED_REJECTS) + 1
        )
        assert len(rejects) == len(EXPECTED_REJECTS) + 1
        assert last_eurusd_reasons(rejects) == ["duplicate"]
        after_dup = await wait_for(
            lambda: (
                t
                if (t := tables(worker))["rejects"]["live"]["by_reason"]["duplicate"] == 2
                else None
            )
        )
        assert after_dup

    # Lost data dir: the tables are rebuilt from their changelogs.
    shutil.rmtree(data_dir)
    with Worker(clean_kafka, data_dir, app_id) as worker:
        assert tables(worker) == after_dup
        await produce(bootstrap, "raw.broker.ticks", [(b"EURUSD", MESSAGES[5][1])])
        rejects = await read_topic(
            bootstrap, "market-data-rejects", expect=len(EXPECTED_REJECTS) + 2
        )
        assert len(rejects) == len(EXPECTED_REJECTS) + 2
        assert last_eurusd_reasons(rejects) == ["duplicate"]
    stream = await read_topic(bootstrap, "market-data-stream", expect=len(EXPECTED_STREAM), idle=1)
    assert len(stream) == len(EXPECTED_STREAM)  # nothing emitted again after the restarts
