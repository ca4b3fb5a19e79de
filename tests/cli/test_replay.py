"""Replay by resetting offsets: the second output is byte-identical to the first."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from app.cli import replay_offsets
from app.wire import codec
from devstack.stack import StackConfig
from tests.support.kafka import create_topics, produce, read_topic
from tests.support.pipeline import end_offsets, group_lag
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MS = 1_000_000
T0 = 1_796_029_200_000_000_000  # 2026-11-30T09:00:00Z
SYMBOLS = {"EURUSD": 1_100_000_000, "USDJPY": 157_000_000_000, "GBPUSD": 1_270_000_000}
DERIVED_NAMES = (
    "symbol-state",
    "partition-state",
    "historical-symbol-state",
    "historical-partition-state",
)
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
        refused = run_app(clean_kafka, worker.env, "replay", "--to-earliest", "--yes")
        assert refused.returncode == 1
        assert "replay refused" in refused.stderr and "running member" in refused.stderr
    assert len(first) >= 20

    done = run_app(clean_kafka, worker.env, "replay", "--to-earliest", "--yes")
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


def is_broker_output(value: bytes) -> bool:
    """A market-data-stream message derived from raw.broker.ticks (by its lineage)."""
    ticks = codec.decode_market_data(value).ticks
    return bool(ticks) and ticks[0].lineage.topic == "raw.broker.ticks"


async def changelog_ends(bootstrap: str, topics: list[str]) -> dict[str, dict[int, int] | None]:
    """End offsets of each topic, None for a topic that does not exist."""
    existing = await list_topics(bootstrap)
    return {t: (await end_offsets(bootstrap, t)) if t in existing else None for t in topics}


async def list_topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_replay_of_one_topic_survives_kills_and_keeps_other_state(
    clean_kafka: StackConfig, tmp_path: Path, app_id: str
) -> None:
    """`replay --topic raw.broker.ticks`, SIGKILLed after each of its steps in turn (each
    run resuming the recorded plan), then finished: the broker state is rebuilt and its
    output repeats byte for byte; history's state and offsets are untouched; a worker
    refuses to start while the plan is unfinished."""
    bootstrap = clean_kafka.kafka_bootstrap
    await create_topics(bootstrap, ["raw.broker.ticks", "raw.historical.ticks"], partitions=4)
    await produce(bootstrap, "raw.broker.ticks", recorded_input())
    await produce(bootstrap, "raw.historical.ticks", recorded_input(seed=11))
    worker = Worker(clean_kafka, tmp_path, app_id)
    with worker:
        first = await read_topic(bootstrap, "market-data-stream", 1, idle=4.0)
    first_by_partition: dict[int, list] = defaultdict(list)
    for rec in sorted(first, key=lambda r: (r.partition, r.offset)):
        first_by_partition[rec.partition].append((rec.key, rec.value))
    broker_first = {
        p: [item for item in items if is_broker_output(item[1])]
        for p, items in first_by_partition.items()
    }
    assert sum(map(len, broker_first.values())) >= 20
    assert sum(map(len, broker_first.values())) < len(first), "history gave no output"

    changelog = {t: f"{app_id}-{t}-changelog" for t in DERIVED_NAMES}
    kept = [changelog["historical-symbol-state"], changelog["historical-partition-state"]]
    cleared = [changelog["symbol-state"], changelog["partition-state"]]
    before = await changelog_ends(bootstrap, kept + cleared)
    assert all(before[t] for t in kept + cleared), before
    history_done = await group_lag(bootstrap, app_id, ["raw.historical.ticks"])
    assert history_done == {}
    tables = tmp_path / "v1" / "tables"
    assert list(tables.glob("symbol-state-*.db")) and list(tables.glob("partition-state-*.db"))

    marker = tmp_path / replay_offsets.MARKER_NAME
    args = ("replay", "--to-earliest", "--topic", "raw.broker.ticks", "--yes")
    for step in replay_offsets.STEPS:
        killed = run_app(clean_kafka, {**worker.env, replay_offsets.KILL_AFTER_ENV: step}, *args)
        assert killed.returncode == -signal.SIGKILL, (step, killed.stderr)
        assert marker.exists(), step
        if step == "planned":
            refused = run_app(clean_kafka, worker.env, "worker", "-l", "info")
            assert refused.returncode == 3, refused.stderr
            assert "interrupted replay" in refused.stderr
    done = run_app(clean_kafka, worker.env, *args)
    assert done.returncode == 0, done.stderr
    assert "finished the interrupted replay of raw.broker.ticks" in done.stdout
    assert not marker.exists()

    after = await changelog_ends(bootstrap, kept + cleared)
    assert after == {**before, **{t: None for t in cleared}}, "history's changelogs changed"
    assert await group_lag(bootstrap, app_id, ["raw.historical.ticks"]) == {}
    assert not list(tables.glob("symbol-state-*.db"))
    assert not list(tables.glob("partition-state-*.db"))
    assert list(tables.glob("historical-symbol-state-*.db"))
    assert list(tables.glob("historical-partition-state-*.db"))

    replayed_count = sum(map(len, broker_first.values()))
    with Worker(clean_kafka, tmp_path, app_id):
        both = await wait_for_output(clean_kafka, len(first) + replayed_count)
        await asyncio.sleep(3)  # anything beyond (history re-processed) would show now
        both = await read_topic(bootstrap, "market-data-stream", idle=1.0)
    assert len(both) == len(first) + replayed_count
    for partition, items in first_by_partition.items():
        now = [
            (r.key, r.value)
            for r in sorted(both, key=lambda r: r.offset)
            if r.partition == partition
        ]
        assert now[: len(items)] == items
        assert now[len(items) :] == broker_first[partition], f"partition {partition} differs"
