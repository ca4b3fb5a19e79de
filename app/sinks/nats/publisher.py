"""Publishes to NATS with a bounded in-flight window, retrying until each message is acked.

JetStream mode: every message carries a `Nats-Msg-Id`; up to `max_in_flight` publishes
wait for their acks at once (`js.publish_async`, measured ~38k msg/s on loopback against
~8k awaiting each ack), and `on_acked` runs only once the stream has stored the message.
A publish lost with a dropped connection (its ack never comes) is sent again after
`ack_timeout_s` with the same id, so the stream keeps exactly one copy.
Core mode: at-most-once, `on_acked` runs once the client has taken the message.

The connection is made in the background and retried forever, so a worker starts while
NATS is down; `submit` then waits (back-pressure) instead of dropping.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import nats.js.errors
from mode import Service
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType, StreamConfig

from app.core.redact import redact_url, scrub
from app.settings import NatsSettings
from app.sinks.nats.connect import connect_options, secret_values
from app.sources.contract import Backoff

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
AckCallback = Callable[[], None]


@dataclass(slots=True)
class _Pending:
    """One message between submit and its JetStream ack (survives re-sends)."""

    subject: str
    payload: bytes
    msg_id: str
    on_acked: AckCallback
    # Called with the stream sequence before `on_acked` (JetStream only).
    on_stored: Callable[[int], None] | None = None
    # Local key of the pending map: two Kafka messages may carry the same bytes (a
    # re-produced duplicate) and so the same msg_id, and each needs its own ack.
    seq: int = 0
    sent_at: float = 0.0
    attempts: int = 0
    future: asyncio.Future[PubAck] | None = field(default=None, repr=False)


class NatsPublisher(Service):
    """The bridge's one NATS connection (a faust/mode service: started and drained with the app)."""

    def __init__(self, cfg: NatsSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cfg = cfg
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.connection_state = "connecting"
        self.reconnects = 0
        self.ever_connected = False
        self.acked = 0
        self.duplicates = 0
        self.resends = 0
        self.last_error = ""
        # Why the server refuses us (auth, TLS): kept until a connect succeeds, because
        # the broken pipe that follows a refusal would otherwise hide the reason.
        self.refusal = ""
        self.publish_rate = 0.0
        self._connected = asyncio.Event()
        self._slots = asyncio.Semaphore(cfg.max_in_flight)
        self._pending: dict[int, _Pending] = {}  # insertion order = send order
        self._seq = itertools.count()
        self._retry_tasks: set[asyncio.Task[None]] = set()
        self._stream_ready = False
        # A failed publish is re-sent after a capped, jittered delay (grows per attempt).
        self._resend_backoff = Backoff(cfg.reconnect_wait_s, max(cfg.reconnect_wait_s, 30.0))

    @property
    def jetstream(self) -> bool:
        return self.cfg.mode == "jetstream"

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def on_start(self) -> None:
        self.add_future(self._connect())
        self.add_future(self._watch_acks())

    async def on_stop(self) -> None:
        """Give in-flight publishes a moment to be acked, then drain (flush + close)."""
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while self._pending and self.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self._retry_tasks:
            task.cancel()
        if self._pending:
            # Their Kafka offsets stay uncommitted: the next worker re-sends, JetStream dedups.
            log.warning("nats: stopping with %d publishes unacked", len(self._pending))
        if self.nc is not None and self.nc.is_connected:
            try:
                await asyncio.wait_for(self.nc.drain(), self.cfg.drain_timeout_s)
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("nats: drain failed: %r", exc)
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()
        self.connection_state = "closed"

    async def submit(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        on_acked: AckCallback,
        on_stored: Callable[[int], None] | None = None,
    ) -> None:
        """Hand one message over; returns when it is in flight (waits while the window is full).

        `on_acked` is called exactly once, after the stream stored the message (JetStream)
        or after the client took it (core). It is never called for a message that was not.
        """
        await self._slots.acquire()
        item = _Pending(subject, payload, msg_id, on_acked, on_stored, next(self._seq))
        if not self.jetstream:
            await self._publish_core(item)
            return
        self._pending[item.seq] = item
        await self._send(item)

    async def _publish_core(self, item: _Pending) -> None:
        try:
            while True:
                await self._connected.wait()
                assert self.nc is not None
                try:
                    await self.nc.publish(item.subject, item.payload)
                    break
                except nats.errors.OutboundBufferLimitError:
                    await asyncio.sleep(self.cfg.reconnect_wait_s)
            self.acked += 1
            item.on_acked()
        finally:
            self._slots.release()

    async def _send(self, item: _Pending) -> None:
        """Publish without waiting for the ack; `_on_done` sees it (or the watchdog)."""
        await self._connected.wait()
        assert self.js is not None
        item.attempts += 1
        item.sent_at = time.monotonic()
        try:
            future = await self.js.publish_async(
                item.subject, item.payload, headers={MSG_ID_HEADER: item.msg_id}
            )
        except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            self._retry_later(item, exc)
            return
        item.future = future
        future.add_done_callback(lambda fut: self._on_done(item, fut))

    def _on_done(self, item: _Pending, future: asyncio.Future[PubAck]) -> None:
        if item.future is not future or item.seq not in self._pending:
            return  # a superseded attempt
        if future.cancelled():
            self._retry_later(item, TimeoutError(f"no ack in {self.cfg.ack_timeout_s}s"))
            return
        exc = future.exception()
        if exc is not None:
            self._retry_later(item, exc)
            return
        del self._pending[item.seq]
        self._slots.release()
        self.acked += 1
        ack = future.result()
        if ack.duplicate:
            self.duplicates += 1
        if item.on_stored is not None:
            item.on_stored(ack.seq)
        item.on_acked()

    def _retry_later(self, item: _Pending, exc: BaseException) -> None:
        if self.should_stop:
            return
        self.resends += 1
        self.last_error = repr(exc)
        if isinstance(exc, nats.js.errors.NoStreamResponseError):
            self._stream_ready = False
        log.debug("nats: re-sending %s (attempt %d): %r", item.msg_id, item.attempts, exc)
        # Re-queue at the end so the watchdog's oldest-first scan stays ordered.
        self._pending.pop(item.seq, None)
        self._pending[item.seq] = item
        item.future = None
        task = asyncio.ensure_future(self._resend(item))
        self._retry_tasks.add(task)
        task.add_done_callback(self._retry_tasks.discard)

    async def _resend(self, item: _Pending) -> None:
        await asyncio.sleep(self._resend_backoff.delay(item.attempts - 1))
        while not self._stream_ready:
            await self._connected.wait()
            await self._ensure_stream()
            if not self._stream_ready:
                await asyncio.sleep(self.cfg.reconnect_wait_s)
        await self._send(item)

    async def _watch_acks(self) -> None:
        """Cancel publishes whose ack is overdue (lost with a connection) and measure the rate."""
        interval = min(1.0, self.cfg.ack_timeout_s / 2)
        last_acked, last_time, last_resends = self.acked, time.monotonic(), self.resends
        while not self.should_stop:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if self.resends != last_resends:
                # One line per interval, not one per message of a lost window.
                log.warning(
                    "nats: re-sent %d publishes (%d in flight): %s",
                    self.resends - last_resends,
                    len(self._pending),
                    self.last_error,
                )
                last_resends = self.resends
            self.publish_rate = (self.acked - last_acked) / (now - last_time)
            last_acked, last_time = self.acked, now
            overdue = now - self.cfg.ack_timeout_s
            for item in list(self._pending.values()):
                if item.sent_at > overdue:
                    break
                if item.future is not None and not item.future.done():
                    item.future.cancel()  # -> _on_done -> re-send

    async def _connect(self) -> None:
        """Connect once; nats-py itself keeps retrying (also the first connect) forever."""
        self.nc = await nats.connect(
            self.cfg.url,
            **connect_options(self.cfg),
            name="data-ingestion-bridge",
            max_reconnect_attempts=-1,
            reconnect_time_wait=self.cfg.reconnect_wait_s,
            connect_timeout=2,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
        )
        log.info("nats: connected to %s (%s mode)", self.shown_url(), self.cfg.mode)
        if self.jetstream:
            self.js = self.nc.jetstream(
                timeout=self.cfg.ack_timeout_s,
                publish_async_max_pending=max(self.cfg.max_in_flight, 4000),
            )
            while not self._stream_ready and not self.should_stop:
                await self._ensure_stream()
                if not self._stream_ready:
                    await asyncio.sleep(self.cfg.reconnect_wait_s)
        self.connection_state = "connected"
        self.ever_connected = True
        self.refusal = ""
        self._connected.set()

    async def _ensure_stream(self) -> None:
        """Create the stream capturing `<prefix>.>` unless it exists (its settings are kept)."""
        assert self.js is not None
        name = self.cfg.stream_name
        try:
            await self.js.stream_info(name)
        except nats.js.errors.NotFoundError:
            config = StreamConfig(
                name=name,
                subjects=[f"{self.cfg.subject_prefix}.>"],
                storage=StorageType.FILE,
                max_age=self.cfg.max_age_s,
                max_bytes=self.cfg.max_bytes,
                duplicate_window=self.cfg.duplicate_window_s,
            )
            try:
                await self.js.add_stream(config)
                log.info("nats: created stream %s for %s.>", name, self.cfg.subject_prefix)
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                log.warning("nats: cannot create stream %s: %r", name, exc)
                self.last_error = repr(exc)
                return
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            log.warning("nats: cannot look up stream %s: %r", name, exc)
            self.last_error = repr(exc)
            return
        self._stream_ready = True

    def shown_url(self) -> str | None:
        """The connected server's URL without userinfo (nats-py keeps user:pass in it)."""
        url = self.nc.connected_url if self.nc is not None else None
        return redact_url(url.geturl()) if url is not None else redact_url(self.cfg.url)

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = scrub(repr(exc), secret_values(self.cfg))
        text = self.last_error.lower()
        if isinstance(exc, ssl.SSLError) or "authorization" in text or "authentication" in text:
            self.refusal = self.last_error
        log.warning("nats: %s", self.last_error)

    async def _on_disconnected(self) -> None:
        if self.connection_state != "closed":
            self.connection_state = "disconnected"
        self._connected.clear()
        log.warning("nats: disconnected, %d publishes in flight", len(self._pending))

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        self.connection_state = "connected"
        if self.js is not None or not self.jetstream:
            self._connected.set()
        log.info(
            "nats: reconnected to %s (reconnect #%d)",
            self.shown_url(),
            self.reconnects,
        )

    async def _on_closed(self) -> None:
        self.connection_state = "closed"
        self._connected.clear()
        log.info("nats: connection closed")

    def snapshot(self) -> dict[str, Any]:
        return {
            "mode": self.cfg.mode,
            "url": redact_url(self.cfg.url),
            "stream": self.cfg.stream_name if self.jetstream else None,
            "state": self.connection_state,
            "reconnects": self.reconnects,
            "in_flight": self.in_flight,
            "acked": self.acked,
            "duplicates_dropped": self.duplicates,
            "resends": self.resends,
            "publish_rate_per_s": round(self.publish_rate, 1),
            "last_error": self.last_error or None,
        }
