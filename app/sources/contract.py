"""What every source shares: the service's one backoff, live connection state, the sink.

A client (one per configured broker) reads a provider stream and hands raw records to a
`RecordSink`; in the worker that is the batching `RawWriter`, in unit tests a list. The
`ConnectionState` is what `/health` shows under `broker_connections`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.wire import codec

NS_PER_S = 1_000_000_000
RATE_WINDOW_NS = NS_PER_S


class RecordSink(Protocol):
    """Where a source puts what it read. `put`/`reject` never block: no await per tick."""

    def put(self, key: bytes, record: codec.RawRecord) -> None: ...

    def reject(self, key: bytes, rejection: bytes) -> None: ...

    @property
    def full(self) -> bool:
        """True when the buffer is over its bound: the reader must `await wait_for_room()`."""
        ...

    async def wait_for_room(self) -> None: ...


class Backoff:
    """Capped exponential backoff with jitter, so that reconnecting clients do not stampede.

    The n-th delay is drawn from [cap_n / 2, cap_n] with cap_n = min(maximum, initial * 2**n):
    never zero (no tight loop), never above `maximum`.
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = self.delay(self.attempt)
        self.attempt += 1
        return delay

    def delay(self, attempt: int) -> float:
        """The delay before retry number `attempt` (0 = the first), for callers that count
        their own attempts. The exponent stops at 32: no overflow however many failures."""
        cap = min(self.maximum, self.initial * 2 ** min(max(attempt, 0), 32))
        return self._rng.uniform(cap / 2, cap)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class ConnectionState:
    """Live state of one broker connection; updated by the client, read by /health."""

    broker: str
    kind: str
    priority: int
    symbols: list[str]
    status: str = "starting"
    last_error: str | None = None
    last_error_time: float | None = None
    last_message_time: float | None = None
    connected_since: float | None = None
    connect_attempts: int = 0
    reconnects: int = 0
    ticks_total: int = 0
    rejects_total: int = 0
    heartbeats_total: int = 0
    active_symbols: set[str] = field(default_factory=set)
    ticks_per_s: float = 0.0
    latency_ms: float | None = None
    _window_start_ns: int = 0
    _window_ticks: int = 0
    _window_latency_ns: int = 0

    def set_status(self, status: str) -> None:
        self.status = status
        if status == "connected":
            self.connected_since = time.time()
            self.active_symbols = set()
        else:
            self.connected_since = None

    def set_error(self, status: str, error: str) -> None:
        self.set_status(status)
        self.last_error = error
        self.last_error_time = time.time()

    def on_ticks(self, count: int, latency_ns: int, now_ns: int) -> None:
        """Account a chunk's ticks; ticks/s and latency are over the last full second."""
        self.ticks_total += count
        self._window_ticks += count
        self._window_latency_ns += latency_ns
        elapsed = now_ns - self._window_start_ns
        if elapsed >= RATE_WINDOW_NS:
            if self._window_start_ns:
                self.ticks_per_s = round(self._window_ticks * NS_PER_S / elapsed, 1)
                if self._window_ticks:
                    avg = self._window_latency_ns / self._window_ticks / 1e6
                    self.latency_ms = round(avg, 3)
            self._window_start_ns = now_ns
            self._window_ticks = 0
            self._window_latency_ns = 0

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        idle = now - self.last_message_time if self.last_message_time else None
        if idle is not None and idle >= 2 * RATE_WINDOW_NS / NS_PER_S:
            rate = 0.0  # no chunk arrived to roll the window over: the feed is quiet
        else:
            rate = self.ticks_per_s
        return {
            "kind": self.kind,
            "priority": self.priority,
            "status": self.status,
            "connected_since": self.connected_since,
            "last_message_time": self.last_message_time,
            "seconds_since_last_message": round(idle, 3) if idle is not None else None,
            "last_error": self.last_error,
            "last_error_time": self.last_error_time,
            "connect_attempts": self.connect_attempts,
            "reconnects": self.reconnects,
            "ticks_total": self.ticks_total,
            "rejects_total": self.rejects_total,
            "heartbeats_total": self.heartbeats_total,
            "ticks_per_s": rate,
            "latency_ms": self.latency_ms,
            "symbols": self.symbols,
            "active_symbols": sorted(self.active_symbols),
        }


class Closable:
    """A client's reconnect loop that `close()` ends: `_sleep` waits out a backoff delay
    unless the client is closed meanwhile. Subclasses set `self._closing`."""

    _closing: asyncio.Event

    async def close(self) -> None:
        self._closing.set()

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay)
