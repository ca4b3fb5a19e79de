"""`python -m app import-dukascopy` as a real subprocess against the test Kafka.

Checks that every tick of a small tree lands in raw.historical.ticks exactly once: on a
first run, on a re-run of the same range, and when a run was cut short (hours of a
partial run are checkpointed, so the full run imports only the rest).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from app.core.candle_feed import CANDLE_FLUSH_FORMAT
from app.pipeline.kafka_clients import topic_partitions
from app.sources.dukascopy.bi5 import encode_bi5, hour_path
from app.wire import codec
from devstack.stack import StackConfig
from tests.support.kafka import create_topics, produce
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOPIC = "raw.historical.ticks"
# hour -> tick count; 01h is an empty file, 03h is corrupt until the test fixes it
HOURS = {0: 180, 1: 0, 2: 150, 3: 120}


def hour(h: int) -> datetime:
    return datetime(2024, 1, 2, h, tzinfo=UTC)


def hour_records(h: int, n: int) -> list[tuple[int, int, int, float, float]]:
    return [
        (i * 997 % 3_600_000, 109_000 + h * 100 + i, 108_990 + h * 100 + i, 1.0, 1.0)
        for i in sorted(range(n), key=lambda i: i * 997 % 3_600_000)
    ]


def write_tree(root: Path, corrupt_last: bool) -> int:
    total = 0
    for h, n in HOURS.items():
        path = root / hour_path("EURUSD", hour(h))
        path.parent.mkdir(parents=True, exist_ok=True)
        if h == 3 and corrupt_last:
            path.write_bytes(b"\x5d\x00\x00" + b"\xff" * 64)
            continue
        path.write_bytes(encode_bi5(hour_records(h, n), streams=2 if h == 2 else 1))
        total += n
    return total


def run_import(
    stack: StackConfig, data_dir: Path, tree: Path, end: str
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "INGEST__KAFKA__BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "INGEST__SERVICE__DATA_DIR": str(data_dir),
        "INGEST__KAFKA__PARTITIONS": "4",
        "INGEST__HISTORICAL__BATCH_TICKS": "100",
    }
    cmd = [
        sys.executable,
        "-m",
        "app",
        "import-dukascopy",
        "EURUSD",
        "--from",
        "2024-01-02",
        "--to",
        end,
        "--source-dir",
        str(tree),
    ]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


async def read_all(bootstrap: str) -> list[ConsumerRecord]:
    """Every message of the topic, up to the end offsets (acks=all: all are there already).

    Not tests.support.kafka.read_topic: its unsubscribed consumer never learns the
    topic's partitions on aiokafka 0.14 and returns nothing.
    """
    partitions = await topic_partitions(bootstrap, TOPIC)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[ConsumerRecord] = []
    try:
        tps = [TopicPartition(TOPIC, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(messages)
    finally:
        await consumer.stop()
    return found


async def topic_ticks(stack: StackConfig) -> list[tuple[int, int, int]]:
    """(event time, ask, bid) of every record in the topic, in partition order."""
    found = await read_all(stack.kafka_bootstrap)
    out = []
    for message in found:
        assert message.key == b"EURUSD"
        for record in codec.decode_raw_batch(message.value).records:
            if record.format == CANDLE_FLUSH_FORMAT:  # end of a complete import (candles)
                continue
            assert (record.source, record.format) == ("dukascopy", "tick")
            out.append((record.tick.event_time_ns, record.tick.ask_e9, record.tick.bid_e9))
    return out


def expected_ticks() -> list[tuple[int, int, int]]:
    out = []
    for h, n in HOURS.items():
        start = int(hour(h).timestamp()) * 1_000_000_000
        for ms, ask, bid, _, _ in hour_records(h, n):
            out.append((start + ms * 1_000_000, ask * 10_000, bid * 10_000))
    return out


async def test_import_rerun_and_resume_without_duplicates(
    clean_kafka: StackConfig, tmp_path: Path
) -> None:
    tree, data_dir = tmp_path / "tree", tmp_path / "data"
    write_tree(tree, corrupt_last=True)

    # 1. interrupted run: only the first two hours (as if killed after hour 01)
    partial = run_import(clean_kafka, data_dir, tree, "2024-01-02T02")
    assert partial.returncode == 0, partial.stderr
    assert "ticks=180" in partial.stderr

    # 2. full range: resumes at hour 02; hour 03 is corrupt -> reported, exit 1
    full = run_import(clean_kafka, data_dir, tree, "2024-01-02T04")
    assert full.returncode == 1, full.stderr
    assert "2024-01-02T03" in full.stderr and "corrupt_lzma" in full.stderr
    assert "skipped=2" in full.stderr and "ticks=150" in full.stderr and "errors=1" in full.stderr
    got = await topic_ticks(clean_kafka)
    assert sorted(got) == sorted(expected_ticks()[:330])

    # 3. the file is fixed: only hour 03 is imported; then a re-run adds nothing
    write_tree(tree, corrupt_last=False)
    fixed = run_import(clean_kafka, data_dir, tree, "2024-01-02T04")
    assert fixed.returncode == 0, fixed.stderr
    assert "skipped=3" in fixed.stderr and "ticks=120" in fixed.stderr
    again = run_import(clean_kafka, data_dir, tree, "2024-01-02T04")
    assert again.returncode == 0, again.stderr
    assert "skipped=4" in again.stderr and "ticks=0" in again.stderr

    got = await topic_ticks(clean_kafka)
    assert len(got) == 450
    assert sorted(got) == sorted(expected_ticks())
    # in time order per symbol (one key -> one partition, hours sent in sequence)
    assert got == sorted(got)


async def test_reference_check_against_broker_ticks_in_kafka(
    clean_kafka: StackConfig, tmp_path: Path, app_id: str
) -> None:
    tree, data_dir = tmp_path / "tree", tmp_path / "data"
    write_tree(tree, corrupt_last=False)
    start = int(hour(0).timestamp()) * 1_000_000_000
    # reference at hour 0: ms 0 -> ask 109000/bid 108990 points, mid 1.08995
    live = []
    for source, offset_points in (("ic_markets", 2), ("fxcm", -5)):
        batch = codec.RawBatch()
        record = batch.records.add(source=source, format="oanda_v20")
        record.tick.CopyFrom(
            codec.MarketTick(
                symbol="EURUSD",
                source=source,
                bid_e9=(108_990 + offset_points) * 10_000,
                ask_e9=(109_000 + offset_points) * 10_000,
                event_time_ns=start + 500_000_000,  # 0.5 s: the reference at 0 ms applies
            )
        )
        live.append((b"EURUSD", batch.SerializeToString()))
    await create_topics(clean_kafka.kafka_bootstrap, ["raw.broker.ticks"], partitions=4)
    await produce(clean_kafka.kafka_bootstrap, "raw.broker.ticks", live)

    env = {
        **os.environ,
        "INGEST__KAFKA__BOOTSTRAP_SERVERS": clean_kafka.kafka_bootstrap,
        "INGEST__SERVICE__DATA_DIR": str(data_dir),
    }
    cmd = [
        sys.executable,
        "-m",
        "app",
        "reference-check",
        "EURUSD",
        "--from",
        "2024-01-02T00",
        "--to",
        "2024-01-02T01",
        "--source-dir",
        str(tree),
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| ic_markets | 1 | 0 | 0.200 |" in done.stdout
    assert "reference-check: raw.broker.ticks scanned " in done.stderr  # progress while scanning
    result = json.loads((data_dir / "dukascopy" / "reference" / "EURUSD.json").read_text())
    assert result["reference_ticks"] == 180 and result["live_ticks"] == 2
    assert result["brokers"]["fxcm"]["mean_pips"] == pytest.approx(-0.5)
    assert result["brokers"]["ic_markets"]["max_abs_pips"] == pytest.approx(0.2)

    # the worker's web view serves the latest result; an unchecked symbol is a 404
    with Worker(clean_kafka, data_dir, app_id) as worker:
        served = worker.get_json("/reference/EURUSD/")
        assert served == result
        with pytest.raises(urllib.error.HTTPError) as missing:
            worker.get_json("/reference/GBPUSD/")
        assert missing.value.code == 404
