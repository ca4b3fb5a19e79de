"""End-to-end latency at a steady rate: raw-topic produce -> receipt on the NATS subject.

A paced producer writes single-tick RawBatch messages (what the live source writes at a
low rate: nothing else is in flight for the key) at `rate` ticks/s, stamping
`receive_time_ns` (record and tick) with the wall clock right before `send`. A nats-py
subscriber on `<prefix>.data-ingestion.ticks`, in the same process and clock, takes
receipt time - `receive_time_ns` of every tick in each MarketDataStream.

Best price is emitted only when the choice changes, and the emitted tick is the chosen
quote, which may be an older one. To attribute every output to the tick that caused it,
the worker runs with best_price.max_age_ms = 1: only the tick being processed is fresh,
so every accepted tick is emitted as itself (the worst case: every tick makes an output
message, a Kafka send, a NATS publish). The first `warmup_s` seconds are discarded.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import nats
from aiokafka import AIOKafkaProducer

from app.pipeline.kafka_clients import kafka_options
from app.pipeline.topics import ALL_TOPIC_NAMES, RAW_BROKER_TICKS
from app.settings import get_settings
from app.sinks.nats.connect import connect_options
from app.wire import codec
from bench.data import live_ticks
from bench.kafka_io import reset_topics
from bench.throughput import faust_worker
from devstack.stack import StackConfig

SUBJECT = f"market.{codec.OUTPUT_SOURCE}.ticks"


@dataclass
class LatencyResult:
    rate: int
    seconds: float
    sent: int
    received: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def run(
    stack: StackConfig, run_dir: Path, partitions: int,
    rate: int = 1000, seconds: float = 20.0, warmup_s: float = 3.0,
) -> LatencyResult:  # fmt: skip
    await reset_topics(
        stack.kafka_bootstrap, list(ALL_TOPIC_NAMES), partitions,
    )  # fmt: skip
    app_id = f"bench-latency-{uuid.uuid4().hex[:8]}"
    worker = faust_worker(
        stack, app_id, run_dir, partitions,
        extra_env={"INGEST__BEST_PRICE__MAX_AGE_MS": "1"},
    )  # fmt: skip
    samples: list[float] = []
    measuring = False

    async def on_message(msg: nats.aio.msg.Msg) -> None:
        now = time.time_ns()
        if not measuring:
            return
        for tick in codec.decode_market_data(msg.data).ticks:
            samples.append((now - tick.receive_time_ns) / 1e6)

    nc = await nats.connect(stack.nats_url, **connect_options(get_settings().nats))
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap, **kafka_options(), acks="all", linger_ms=0
    )
    try:
        await asyncio.to_thread(worker.start_ready)
        await nc.subscribe(SUBJECT, cb=on_message)
        await producer.start()
        ticks = live_ticks()
        total = sent = 0
        started = time.monotonic()
        end = started + warmup_s + seconds
        interval = 1.0 / rate
        while (now := time.monotonic()) < end:
            measuring = now - started >= warmup_s
            for _ in range(int((now - started) / interval) - total):
                key, record = next(ticks)
                stamp = time.time_ns()
                record.receive_time_ns = record.tick.receive_time_ns = stamp
                record.tick.event_time_ns = stamp - 2_000_000
                await producer.send(RAW_BROKER_TICKS, codec.encode_raw_batch([record]), key=key)
                total += 1
                sent += measuring
            await asyncio.sleep(0.001)
        await asyncio.sleep(2.0)  # the last ticks' way through
        measuring = False
    finally:
        await producer.stop()
        await nc.drain()
        await asyncio.to_thread(worker.stop)
    values = sorted(samples)
    return LatencyResult(
        rate=rate, seconds=seconds, sent=sent, received=len(values),
        p50_ms=percentile(values, 0.5), p90_ms=percentile(values, 0.9),
        p99_ms=percentile(values, 0.99), max_ms=values[-1] if values else float("nan"),
    )  # fmt: skip
