"""Supervision of the worker's source tasks: nothing a source runs can end unnoticed.

A source (a broker stream, a collector's polling loop) is a coroutine that should run
until it is stopped. `Supervised` runs it as the worker's own task and, when it raises
or returns on its own, logs the traceback, counts a restart in `/metrics`, marks the
source down on `/health` (its status is `crashed` and the service `degraded` until it
runs again) and starts it again after a capped, jittered `Backoff`. `SourceSupervisor`
holds the supervised sources of one service and is the `/health` check that names the
ones that are down. `run_with_restarts` is the same for a step that ends (an import):
restarted after a crash, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from app.ops.metrics import SOURCE_RESTARTS
from app.sources.contract import Backoff

log = logging.getLogger(__name__)
T = TypeVar("T")

# A run that lasted this long was healthy: the next crash starts the backoff from the
# beginning instead of from where the last crash streak left it.
STABLE_AFTER_S = 60.0


class Supervised:
    """One source coroutine kept running until `stop()`; restarted after any ending.

    `run` is called again for every restart (the source object keeps its own counters);
    `close` asks the source to finish (the task is cancelled if it does not);
    `mark_down(error)` lets the source's own status (shown on /health) say it is down.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        run: Callable[[], Awaitable[None]],
        backoff: Backoff,
        *,
        close: Callable[[], Awaitable[None]] | None = None,
        mark_down: Callable[[str], None] | None = None,
        stable_after_s: float = STABLE_AFTER_S,
    ) -> None:
        self.name = name
        self.kind = kind
        self._run = run
        self._close = close
        self._mark_down = mark_down
        self.backoff = backoff
        self.stable_after_s = stable_after_s
        self.status = "new"
        self.restarts = 0
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self.restart_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Run the source in a task of the current loop (no-op when already running)."""
        if self.running:
            return
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"source:{self.kind}:{self.name}"
        )

    async def stop(self, timeout: float = 1.0) -> None:
        """Ask the source to close, then cancel it if it has not ended within `timeout`."""
        self._stopping = True
        task = self._task
        if task is None:
            return
        if self._close is not None and self.status == "running" and not task.done():
            try:
                await self._close()
            except Exception:
                log.exception("source %s (%s): close failed", self.name, self.kind)
            await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            task.cancel()  # waiting for its restart, or not closing in time
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # our own caller is being cancelled
        self._task = None
        self.status = "stopped"
        self.restart_at = None

    async def _supervise(self) -> None:
        while not self._stopping:
            self.status = "running"
            self.restart_at = None
            started = time.monotonic()
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    break
                error = f"{type(exc).__name__}: {exc}"[:500]
                log.exception("source %s (%s) crashed: %s", self.name, self.kind, error)
            else:
                if self._stopping:
                    break
                error = "returned while it should be running"
                log.error("source %s (%s) %s", self.name, self.kind, error)
            if time.monotonic() - started >= self.stable_after_s:
                self.backoff.reset()
            delay = self.backoff.next_delay()
            self.restarts += 1
            self.status = "crashed"
            self.last_error = error
            self.last_error_time = time.time()
            self.restart_at = self.last_error_time + delay
            SOURCE_RESTARTS.labels(self.name, self.kind).inc()
            if self._mark_down is not None:
                self._mark_down(f"crashed: {error}; restart in {delay:.1f}s")
            log.warning("source %s (%s): restart in %.2fs", self.name, self.kind, delay)
            await asyncio.sleep(delay)
        self.status = "stopped"

    def snapshot(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": self.status,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_error_time": self.last_error_time,
            "restart_at": self.restart_at,
        }


class SourceSupervisor:
    """The supervised sources of one service: started, stopped, reported together."""

    def __init__(self) -> None:
        self.sources: dict[str, Supervised] = {}

    def add(self, source: Supervised) -> Supervised:
        if source.name in self.sources:
            raise ValueError(f"source {source.name!r} is supervised twice")
        self.sources[source.name] = source
        return source

    def start(self, name: str) -> None:
        self.sources[name].start()

    async def stop(self, name: str) -> None:
        await self.sources[name].stop()

    def running(self) -> set[str]:
        return {name for name, s in self.sources.items() if s.running}

    async def stop_all(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.sources.values()))

    def report(self) -> dict[str, Any]:
        return {name: s.snapshot() for name, s in sorted(self.sources.items())}

    def problem(self) -> str | None:
        """A /health problem naming every source that crashed and waits for its restart."""
        down = [
            f"{name}: crashed ({s.last_error}), restart {s.restarts}"
            for name, s in sorted(self.sources.items())
            if s.status == "crashed"
        ]
        return "; ".join(down) or None


async def run_with_restarts(
    name: str, kind: str, step: Callable[[], Awaitable[T]], backoff: Backoff, attempts: int
) -> T:
    """`await step()`, run again after an unexpected exception, at most `attempts` times.

    For steps that end and can resume (the Dukascopy import of one symbol resumes from
    its checkpoint): each crash is logged with its traceback and counted like a source
    restart; the last one is raised to the caller.
    """
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if attempt >= attempts:
                log.exception("%s (%s) failed %d times, giving up", name, kind, attempt)
                raise
            delay = backoff.next_delay()
            SOURCE_RESTARTS.labels(name, kind).inc()
            log.exception(
                "%s (%s) crashed (%s: %s); attempt %d of %d in %.2fs",
                name,
                kind,
                type(exc).__name__,
                exc,
                attempt + 1,
                attempts,
                delay,
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises
