"""Replay by resetting consumer-group offsets on raw topics, clearing only derived state.

A replay re-reads raw input; to give the same output bytes as the first run, the tables
DERIVED FROM THAT INPUT must start from the same (empty) state, so their changelog topics
and this host's local RocksDB files are deleted as well (the replay rebuilds them). State
derived from other raw topics is kept: `replay --topic raw.broker.ticks` keeps the
historical and context tables. Each table belongs to exactly one raw topic (the caller's
`derived` map); that is why partition clocks are one table per input topic.

The steps are idempotent and recorded first, so a crash anywhere leaves a state that the
next `replay` run repairs:

1. refuse while the group has members;
2. write the plan (offsets, changelogs, table files) to a marker file in the data dir;
   from now on a worker of this data dir refuses to start (`check_no_pending_replay`);
3. commit the offsets - Kafka itself rejects a commit from outside the group while the
   group has members, so a worker that joined after step 1 makes the replay fail here,
   before any state is deleted (the old check-then-delete-then-commit race);
4. delete the changelog topics and wait until they are gone;
5. delete the local table files;
6. remove the marker.

A run that finds a marker finishes THAT plan first (same offsets, same tables), then does
what it was asked unless that is the same replay.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from app.core.errors import IngestError
from app.pipeline.kafka_clients import kafka_options

MARKER_NAME = "replay-pending.json"
STEPS = ("planned", "offsets", "changelogs", "local")
# Fault injection for tests: SIGKILL this process right after the named step.
KILL_AFTER_ENV = "INGEST_TEST_REPLAY_KILL_AFTER"


class ReplayRefused(IngestError):
    """The reset cannot be done now (workers running, unknown topic ...)."""


@dataclass
class DerivedState:
    """What a replay of one raw topic must clear: changelog topics and local table names."""

    changelogs: list[str]
    tables: list[str]


@dataclass
class ReplayPlan:
    group: str
    topics: list[str]
    at: str | None  # ISO time, None = earliest
    offsets: dict[TopicPartition, int]
    changelogs: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    table_dir: str | None = None
    resumed: bool = False
    deleted_topics: list[str] = field(default_factory=list)
    deleted_files: list[Path] = field(default_factory=list)

    def to_json(self) -> str:
        offsets = [[tp.topic, tp.partition, off] for tp, off in sorted(self.offsets.items())]
        return json.dumps(
            {
                "group": self.group,
                "topics": self.topics,
                "at": self.at,
                "offsets": offsets,
                "changelogs": self.changelogs,
                "tables": self.tables,
                "table_dir": self.table_dir,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> ReplayPlan:
        data = json.loads(text)
        return cls(
            data["group"],
            data["topics"],
            data["at"],
            {TopicPartition(t, p): off for t, p, off in data["offsets"]},
            data["changelogs"],
            data["tables"],
            data["table_dir"],
            resumed=True,
        )


def marker_path(data_dir: Path) -> Path:
    return Path(data_dir) / MARKER_NAME


def check_no_pending_replay(data_dir: Path) -> None:
    """A worker must not start on half-cleared state: refuse while a replay is unfinished."""
    marker = marker_path(data_dir)
    if marker.exists():
        raise ReplayRefused(
            f"an interrupted replay is recorded in {marker}: run `replay` again "
            "(it finishes the recorded plan) before starting a worker"
        )


def _write_marker(path: Path, plan: ReplayPlan) -> None:
    """Atomically (rename) and durably: the marker is what makes a crash repairable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as out:
        out.write(plan.to_json())
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _step_done(step: str) -> None:
    if os.environ.get(KILL_AFTER_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


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
    """Commit offsets for an idle group with a consumer that never joins it.

    Kafka accepts such a commit (generation -1) only while the group is Empty: with a
    member joined, it fails, which is what makes the earlier member check race-free.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, **kafka_options(), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        try:
            await consumer.commit({tp: OffsetAndMetadata(off, "") for tp, off in offsets.items()})
        except Exception as exc:  # aiokafka's CommitFailedError, UnknownMemberIdError ...
            raise ReplayRefused(
                f"offset commit refused ({exc!r}): a worker of {group!r} is running? "
                "stop every worker and run replay again"
            ) from exc
    finally:
        await consumer.stop()


async def _wait_deleted(admin: AIOKafkaAdminClient, topics: Sequence[str]) -> None:
    """Deletion is asynchronous; a worker started too early would find the old changelog."""
    for _ in range(150):
        if not set(topics) & set(await admin.list_topics()):
            return
        await asyncio.sleep(0.2)
    raise ReplayRefused(f"topics still exist after deletion: {sorted(topics)}")


def table_files(table_dir: Path, tables: Sequence[str]) -> list[Path]:
    """`<table>-<partition>.db` and `<table>-backups` of exactly these tables (no prefix match:
    `partition-state` must not take `historical-partition-state` with it)."""
    if not table_dir.exists():
        return []
    names = "|".join(re.escape(t) for t in tables)
    pattern = re.compile(rf"^(?:{names})-(?:\d+\.db|backups)$")
    return sorted(p for p in table_dir.iterdir() if pattern.match(p.name))


async def _execute(bootstrap: str, plan: ReplayPlan, marker: Path) -> None:
    """Steps 3-6 of the module doc; each is a no-op when already done."""
    await commit_offsets(bootstrap, plan.group, plan.offsets)
    _step_done("offsets")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        plan.deleted_topics = [t for t in plan.changelogs if t in existing]
        if plan.deleted_topics:
            await admin.delete_topics(plan.deleted_topics)
            await _wait_deleted(admin, plan.deleted_topics)
    finally:
        await admin.close()
    _step_done("changelogs")
    if plan.table_dir is not None:
        for path in table_files(Path(plan.table_dir), plan.tables):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            plan.deleted_files.append(path)
    _step_done("local")
    marker.unlink()


async def _refuse_if_running(bootstrap: str, group: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options())
    await admin.start()
    try:
        members = await active_members(admin, group)
    finally:
        await admin.close()
    if members:
        raise ReplayRefused(
            f"consumer group {group!r} has {len(members)} running member(s) "
            f"({', '.join(sorted(members))}): stop every worker first"
        )


async def replay(
    bootstrap: str,
    group: str,
    topics: Sequence[str],
    at: datetime | None,
    derived: Mapping[str, DerivedState],
    data_dir: Path,
    table_dir: Path | None,
) -> list[ReplayPlan]:
    """Reset `group` on `topics` and clear the state derived from them; refuse while
    workers run. `table_dir=None` keeps all table state. Returns the plans executed: an
    interrupted one found in `data_dir` first, then this one (unless it is the same)."""
    marker = marker_path(data_dir)
    await _refuse_if_running(bootstrap, group)
    done: list[ReplayPlan] = []
    request = (group, sorted(topics), at.isoformat() if at else None)
    if marker.exists():
        pending = ReplayPlan.from_json(marker.read_text())
        await _execute(bootstrap, pending, marker)
        done.append(pending)
        if (pending.group, sorted(pending.topics), pending.at) == request:
            return done
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options())
    await admin.start()
    try:
        tps = await partitions(admin, topics)
    finally:
        await admin.close()
    missing = set(topics) - {tp.topic for tp in tps}
    if missing:
        raise ReplayRefused(f"no such topic(s): {', '.join(sorted(missing))}")
    plan = ReplayPlan(group, sorted(topics), request[2], await target_offsets(bootstrap, tps, at))
    if table_dir is not None:
        plan.table_dir = str(table_dir)
        for topic in plan.topics:
            state = derived.get(topic, DerivedState([], []))
            plan.changelogs += state.changelogs
            plan.tables += state.tables
    _write_marker(marker, plan)
    _step_done("planned")
    await _execute(bootstrap, plan, marker)
    done.append(plan)
    return done
