"""The highest Kafka offset per partition below which every message is acked by NATS.

The bridge has many publishes in flight and NATS acks them in any order (a lost ack is
re-sent later), so "offset N acked" does not mean everything before N is on NATS. This
tracks, per input partition, the contiguous acked prefix of what was submitted: only its
end may be stored as "published", or a crash could skip a message that never arrived.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class AckedPrefix(Generic[T]):
    """Per partition key: submitted offsets in order, and how far they are all acked."""

    def __init__(self) -> None:
        self._pending: dict[str, deque[list]] = {}  # key -> [[offset, acked, tag], ...]

    def submitted(self, key: str, offset: int, tag: T) -> None:
        """An offset handed to NATS; a lower offset than the last one means the partition
        was re-read from an earlier position (rebalance, seek): start over."""
        queue = self._pending.setdefault(key, deque())
        if queue and offset <= queue[-1][0]:
            queue.clear()
        queue.append([offset, False, tag])

    def acked(self, key: str, offset: int) -> tuple[int, T] | None:
        """Mark `offset` acked; returns (offset, tag) of the new end of the acked prefix
        when it moved, else None. An offset no longer tracked (dropped by a re-read) is
        ignored."""
        queue = self._pending.get(key)
        if not queue:
            return None
        for entry in queue:
            if entry[0] == offset:
                entry[1] = True
                break
        else:
            return None
        last: tuple[int, T] | None = None
        while queue and queue[0][1]:
            done = queue.popleft()
            last = (done[0], done[2])
        return last
