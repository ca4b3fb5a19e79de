"""Replay by resetting consumer-group offsets on the raw topics.

A replay re-reads raw input; to give the same output bytes as the first run, the tables
must start from the same state, so by default the tables' changelog topics and this
worker's local RocksDB files are deleted as well (they are rebuilt by the replay itself).
The reset is refused while any member of the group is running: Kafka would reject the
offset commit, and a live worker would keep its in-memory table state.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from app.core.errors import IngestError
from app.pipeline.kafka_clients import kafka_options


class ReplayRefused(IngestError):
    """The reset cannot be done now (workers running, unknown topic ...)."""


@dataclass
class ReplayPlan:
    group: str
    offsets: dict[TopicPartition, int]
    deleted_topics: list[str] = field(default_factory=list)
    deleted_dirs: list[Path] = field(default_factory=list)


async def active_members(admin: AIOKafkaAdminClient, group: str) -> list[str]:
    """Client ids of the group's live members (empty when no worker of the group runs)."""
    (response,) = await admin.describe_consumer_groups([group])
    members: list[str] = []
    for described in response.groups:
        # (error_code, group_id, state, protocol_type, protocol, members, ...)
        state, group_members = described[2], described[5]
        if state not in ("Empty", "Dead", ""):
            members.extend(str(m[1]) for m in group_members)
    return members


async def partitions(admin: AIOKafkaAdminClient, topics: Sequence[str]) -> list[TopicPartition]:
    """The partitions of the topics that exist (from the cluster metadata)."""
    found: list[TopicPartition] = []
    for meta in await admin.describe_topics(list(topics)):
        found.extend(TopicPartition(meta["topic"], p["partition"]) for p in meta["partitions"])
    return sorted(found)


async def target_offsets(
    bootstrap: str, tps: Sequence[TopicPartition], at: datetime | None
) -> dict[TopicPartition, int]:
    """Earliest offsets, or the first offset at/after `at` (end of partition if none)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, **kafka_options(), enable_auto_commit=False
    )
    await consumer.start()
    try:
        if at is None:
            return dict(await consumer.beginning_offsets(tps))
        found = await consumer.offsets_for_times({tp: int(at.timestamp() * 1000) for tp in tps})
        ends = await consumer.end_offsets(tps)
        return {tp: (found[tp].offset if found[tp] else ends[tp]) for tp in tps}
    finally:
        await consumer.stop()


async def commit_offsets(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit offsets for an idle group with a consumer that never joins it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, **kafka_options(), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(off, "") for tp, off in offsets.items()})
    finally:
        await consumer.stop()


async def _wait_deleted(admin: AIOKafkaAdminClient, topics: Sequence[str]) -> None:
    """Deletion is asynchronous; a worker started too early would find the old changelog."""
    for _ in range(150):
        if not set(topics) & set(await admin.list_topics()):
            return
        await asyncio.sleep(0.2)
    raise ReplayRefused(f"topics still exist after deletion: {sorted(topics)}")


async def replay(
    bootstrap: str,
    group: str,
    topics: Sequence[str],
    at: datetime | None,
    changelog_topics: Sequence[str] = (),
    table_dir: Path | None = None,
) -> ReplayPlan:
    """Reset `group` on `topics` (and clear table state); refuse while workers run."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options())
    await admin.start()
    try:
        members = await active_members(admin, group)
        if members:
            raise ReplayRefused(
                f"consumer group {group!r} has {len(members)} running member(s) "
                f"({', '.join(sorted(members))}): stop every worker first"
            )
        tps = await partitions(admin, topics)
        missing = set(topics) - {tp.topic for tp in tps}
        if missing:
            raise ReplayRefused(f"no such topic(s): {', '.join(sorted(missing))}")
        plan = ReplayPlan(group, await target_offsets(bootstrap, tps, at))
        existing = set(await admin.list_topics())
        plan.deleted_topics = [t for t in changelog_topics if t in existing]
        if plan.deleted_topics:
            await admin.delete_topics(plan.deleted_topics)
            await _wait_deleted(admin, plan.deleted_topics)
    finally:
        await admin.close()
    await commit_offsets(bootstrap, group, plan.offsets)
    if table_dir is not None and table_dir.exists():
        shutil.rmtree(table_dir)
        plan.deleted_dirs.append(table_dir)
    return plan
