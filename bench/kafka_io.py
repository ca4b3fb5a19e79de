"""Kafka plumbing of the benchmarks: topics, loading the backlog, waiting, reading outputs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.pipeline.kafka_clients import kafka_options

log = logging.getLogger("bench")


@contextlib.asynccontextmanager
async def admin_client(bootstrap: str):  # type: ignore[no-untyped-def]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options())
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def reset_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    """Delete every non-internal topic (old outputs, old changelogs), then create `names`."""
    async with admin_client(bootstrap) as admin:
        old = [t for t in await admin.list_topics() if not t.startswith("__")]
        if old:
            await admin.delete_topics(old)
            deadline = time.monotonic() + 60
            while set(old) & set(await admin.list_topics()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topics not deleted: {old}")
                await asyncio.sleep(0.2)
        for _ in range(50):  # deletion is asynchronous in the broker: retry creation
            try:
                await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
                break
            except Exception as exc:  # TopicAlreadyExists while the delete completes
                log.debug("create topics: %r, retrying", exc)
                await asyncio.sleep(0.5)
        else:
            raise TimeoutError(f"could not create {names}")
        # Producing before every partition has a leader only logs NotLeaderForPartition noise.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            metas = await admin.describe_topics(list(names))
            if all(
                m["partitions"] and all(p["leader"] >= 0 for p in m["partitions"]) for m in metas
            ):
                return
            await asyncio.sleep(0.2)


async def produce_all(bootstrap: str, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> float:
    """Send every (key, value) as fast as the producer allows; seconds taken."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        **kafka_options(),
        acks="all",
        linger_ms=5,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_options())
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(await _partitions(bootstrap, topic))]
        ends = await consumer.end_offsets(parts)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    async with admin_client(bootstrap) as admin:
        (meta,) = await admin.describe_topics([topic])
        return [p["partition"] for p in meta["partitions"]]


async def wait_committed(
    bootstrap: str,
    group: str,
    topic: str,
    timeout: float,
    alive: Callable[[], str | None] = lambda: None,
) -> float:
    """Wait until `group` has committed the end offset of every partition of `topic`.

    `alive` returns a problem (the process under test died) to stop waiting early.
    Returns the seconds waited.
    """
    ends = await end_offsets(bootstrap, topic)
    started = time.monotonic()
    async with admin_client(bootstrap) as admin:
        while True:
            committed = await admin.list_consumer_group_offsets(group)
            done = {tp.partition: m.offset for tp, m in committed.items() if tp.topic == topic}
            if all(done.get(p, -1) >= end for p, end in ends.items() if end > 0):
                return time.monotonic() - started
            problem = alive()
            if problem:
                raise RuntimeError(problem)
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{group} committed {done}, end offsets {ends}")
            await asyncio.sleep(0.25)


@dataclass
class Output:
    """What a topic holds: message count, a per-message tick count, CreateTime span (ms)."""

    messages: int = 0
    ticks: int = 0
    first_ms: int = 0
    last_ms: int = 0

    @property
    def span_s(self) -> float:
        return max(self.last_ms - self.first_ms, 1) / 1000


async def read_output(
    bootstrap: str, topic: str, count_ticks: Callable[[bytes], int], idle: float = 1.0
) -> Output:
    """Every message of `topic` from the start up to its current end offsets."""
    ends = await end_offsets(bootstrap, topic)
    out = Output()
    if not any(ends.values()):
        return out
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **kafka_options(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in ends]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        left = {tp: ends[tp.partition] for tp in parts if ends[tp.partition] > 0}
        first, last = None, 0
        while left:
            batch = await consumer.getmany(timeout_ms=int(idle * 1000), max_records=5000)
            if not batch:
                break
            for tp, records in batch.items():
                for rec in records:
                    out.messages += 1
                    out.ticks += count_ticks(rec.value)
                    first = rec.timestamp if first is None else min(first, rec.timestamp)
                    last = max(last, rec.timestamp)
                if records and records[-1].offset + 1 >= left.get(tp, 0):
                    left.pop(tp, None)
        out.first_ms, out.last_ms = first or 0, last
        return out
    finally:
        await consumer.stop()
