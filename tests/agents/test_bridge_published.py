"""The bridge's stored NATS-acked offsets: read once per partition and consumer generation,
written at most once per partition and write interval, never for a revoked partition."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.types import TP

from app.agents import nats_bridge

TP0, TP1 = TP("market-data-stream", 0), TP("market-data-stream", 1)


class _Message:
    def __init__(self, tp: TP, offset: int, generation_id: int) -> None:
        self.tp, self.topic, self.partition = tp, tp.topic, tp.partition
        self.offset, self.generation_id = offset, generation_id


class _Event:
    """What the bridge reads of a faust event (weakly referenced as faust's current event)."""

    def __init__(self, tp: TP, offset: int, generation_id: int = 1) -> None:
        self.message = _Message(tp, offset, generation_id)


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> dict[bytes, bytes]:
    stored: dict[bytes, bytes] = {}
    monkeypatch.setattr(nats_bridge, "bridge_published", stored)
    monkeypatch.setattr(nats_bridge.app.assignor, "assigned_actives", lambda: {TP0, TP1})
    return stored


def test_stored_offset_is_read_once_per_generation(
    table: dict[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []

    def read(event: Any, tp: str) -> int:
        reads.append(tp)
        return 41

    monkeypatch.setattr(nats_bridge, "published_offset", read)
    published = nats_bridge.PublishedOffsets(0.05)
    for offset in range(100):
        assert published.stored(_Event(TP0, offset), "market-data-stream/0") == 41
    assert reads == ["market-data-stream/0"]
    published.stored(_Event(TP0, 5, generation_id=2), "market-data-stream/0")  # a rebalance
    assert reads == ["market-data-stream/0"] * 2


async def test_acked_offsets_are_written_once_per_interval_newest_value(
    table: dict[bytes, bytes],
) -> None:
    published = nats_bridge.PublishedOffsets(0.05)
    for offset in range(100):
        published.acked_through("market-data-stream/0", offset, _Event(TP0, offset))
        published.acked_through("market-data-stream/1", offset + 7, _Event(TP1, offset + 7))
    assert table == {}  # nothing before the interval is over
    await asyncio.sleep(0.2)
    assert table == {b"market-data-stream/0": b"99", b"market-data-stream/1": b"106"}
    published.acked_through("market-data-stream/0", 100, _Event(TP0, 100))
    await asyncio.sleep(0.2)
    assert table[b"market-data-stream/0"] == b"100"


async def test_revoked_partition_is_not_written(
    table: dict[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    published = nats_bridge.PublishedOffsets(0.05)
    published.acked_through("market-data-stream/0", 3, _Event(TP0, 3))
    published.acked_through("market-data-stream/1", 4, _Event(TP1, 4))
    monkeypatch.setattr(nats_bridge.app.assignor, "assigned_actives", lambda: {TP1})
    await asyncio.sleep(0.2)
    assert table == {b"market-data-stream/1": b"4"}


def test_stop_writes_what_is_waiting(table: dict[bytes, bytes]) -> None:
    async def scenario() -> None:
        published = nats_bridge.PublishedOffsets(60.0)
        published.acked_through("market-data-stream/0", 9, _Event(TP0, 9))
        published.write()  # what the bridge does when its agent stops
        assert table == {b"market-data-stream/0": b"9"}
        assert published.timer is None

    asyncio.run(scenario())
