"""Produce to and read back from the real test Kafka."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 8) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def delete_all_topics(bootstrap: str, timeout: float = 30.0) -> None:
    """Drop every non-internal topic so that each test starts from empty topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if not t.startswith("__")]
        if names:
            await admin.delete_topics(names)
        deadline = time.monotonic() + timeout
        while names and time.monotonic() < deadline:
            left = set(names) & set(await admin.list_topics())
            if not left:
                return
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, items: Iterable[tuple[bytes | None, bytes]]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    count = 0
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in items]
        for fut in futures:
            await fut
            count += 1
    finally:
        await producer.stop()
    return count


async def partitions_of(bootstrap: str, topic: str, timeout: float = 30.0) -> list[int]:
    """Partition ids of a topic, from the cluster metadata (waits for it to exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            (meta,) = await admin.describe_topics([topic])
            parts = sorted(p["partition"] for p in meta["partitions"])
            if parts or time.monotonic() >= deadline:
                return parts
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def read_topic(
    bootstrap: str, topic: str, expect: int | None = None, timeout: float = 30.0, idle: float = 2.0
) -> list[ConsumerRecord]:
    """All records of a topic from the start: until `expect` are read, else until idle.

    With `expect`, waits up to `timeout` for that many and then keeps reading for
    `idle` seconds more, so that a surplus (duplicates) is seen too.
    """
    parts = await partitions_of(bootstrap, topic, timeout)
    records: list[ConsumerRecord] = []
    if not parts:
        return records
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        await consumer.seek_to_beginning()
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            got = [r for rs in batch.values() for r in rs]
            if got:
                records.extend(got)
                last_new = time.monotonic()
            done = expect is not None and len(records) >= expect
            if (expect is None or done) and time.monotonic() - last_new >= idle:
                break
    finally:
        await consumer.stop()
    return records
