"""Replay by resetting offsets: the second output is byte-identical to the first."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from app.wire import codec
from devstack.stack import StackConfig
from tests.support.kafka import create_topics, produce, read_topic
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MS = 1_000_000
T0 = 1_796_029_200_000_000_000  # 2026-11-30T09:00:00Z
SYMBOLS = {"EURUSD": 1_100_000_000, "USDJPY": 157_000_000_000, "GBPUSD": 1_270_000_000}
PIP = {"EURUSD": 100_000, "USDJPY": 10_000_000, "GBPUSD": 100_000}


def recorded_input(seed: int = 7) -> list[tuple[bytes, bytes]]:
    """Three brokers, three symbols, random walks with a few bad ticks, in RawBatches."""
    rng = random.Random(seed)
    messages = []
    for symbol, mid in SYMBOLS.items():
        pip = PIP[symbol]
        for batch in range(12):
            records = []
            for i in range(rng.randint(1, 25)):
                at = T0 + (batch * 1000 + i * 30) * MS
                broker = rng.choice(["ic_markets", "pepperstone", "fxcm"])
                mid += rng.randint(-2, 2) * pip // 10
                half = rng.randint(1, 12) * pip // 10
                if rng.random() < 0.05:
                    half = -half  # crossed
                tick = codec.MarketTick(
                    symbol=symbol,
                    source=broker,
                    bid_e9=mid - half,
                    ask_e9=mid + half,
                    bid_volume=1e6,
                    ask_volume=1e6,
                    event_time_ns=at,
                    receive_time_ns=at + rng.randint(1, 40) * MS,
                )
                records.append(codec.RawRecord(source=broker, format="tick", tick=tick))
            messages.append((symbol.encode(), codec.encode_raw_batch(records)))
    return messages


def run_app(stack: StackConfig, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def wait_for_output(stack: StackConfig, count: int) -> list:
    deadline = time.monotonic() + 60
    records: list = []
    while time.monotonic() < deadline:
        records = await read_topic(stack.kafka_bootstrap, "market-data-stream", idle=1.0)
        if len(records) >= count:
            break
        await asyncio.sleep(1)
    return records


async def test_replay_gives_byte_identical_output(
    clean_kafka: StackConfig, tmp_path: Path, app_id: str
) -> None:
    await create_topics(clean_kafka.kafka_bootstrap, ["raw.broker.ticks"], partitions=4)
    await produce(clean_kafka.kafka_bootstrap, "raw.broker.ticks", recorded_input())
    worker = Worker(clean_kafka, tmp_path, app_id)
    with worker:
        # complete once it stops growing for a few seconds
        first = await read_topic(clean_kafka.kafka_bootstrap, "market-data-stream", 1, idle=4.0)
        refused = run_app(clean_kafka, worker.env, "replay", "--to-earliest")
        assert refused.returncode == 1
        assert "replay refused" in refused.stderr and "running member" in refused.stderr
    assert len(first) >= 20

    done = run_app(clean_kafka, worker.env, "replay", "--to-earliest")
    assert done.returncode == 0, done.stderr
    assert "raw.broker.ticks[0] -> offset 0" in done.stdout
    assert "deleted changelog" in done.stdout

    with Worker(clean_kafka, tmp_path, app_id):
        both = await wait_for_output(clean_kafka, 2 * len(first))
    assert len(both) == 2 * len(first)
    per_partition: dict[int, list] = defaultdict(list)
    for rec in sorted(both, key=lambda r: (r.partition, r.offset)):
        per_partition[rec.partition].append((rec.key, rec.value))
    for partition, items in per_partition.items():
        half = len(items) // 2
        assert items[:half] == items[half:], f"partition {partition} differs after replay"
