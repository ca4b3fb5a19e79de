"""The `market-last` JetStream key-value bucket: the latest best price and best candles.

The bridge offers each message the stream has stored (with its stream sequence) to
`LastValueWriter.offer`; the writer keeps the newest sequence per key and writes it to the
bucket in the background, so the bridge never waits for the KV (a burst of ticks of one
symbol becomes one put). A value is written only after its stream publish was acked, so a
KV entry never names a message the stream does not have: a consumer that reads the bucket
and then subscribes from the smallest sequence + 1 misses nothing (docs/last-value.md).

Value layout: `b"<stream_seq> <subject>\\n" + <the published payload bytes>`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats.errors
import nats.js.errors
from mode import Service
from nats.js.kv import KeyValue

from app.settings import NatsSettings

log = logging.getLogger(__name__)


def encode_entry(seq: int, subject: str, payload: bytes) -> bytes:
    return f"{seq} {subject}\n".encode() + payload


def decode_entry(value: bytes) -> tuple[int, str, bytes]:
    """(stream sequence, subject, payload) of a `market-last` value."""
    head, _, payload = value.partition(b"\n")
    seq, _, subject = head.decode().partition(" ")
    return int(seq), subject, payload


class LastValueWriter(Service):
    """Coalescing writer of the `market-last` bucket (a mode service, started with the app)."""

    def __init__(self, cfg: NatsSettings, publisher: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cfg = cfg
        self.publisher = publisher  # its JetStream context, once connected
        self.kv: KeyValue | None = None
        self.pending: dict[str, tuple[int, bytes]] = {}
        self.written: dict[str, int] = {}
        self.puts = 0
        self.failures = 0
        self._wake = asyncio.Event()

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.last_value_bucket) and self.cfg.mode == "jetstream"

    def offer(self, key: str, seq: int, subject: str, payload: bytes) -> None:
        """The message at `seq` is in the stream; keep it if it is the newest for `key`."""
        if not self.enabled:
            return
        current = self.pending.get(key)
        if current is not None and current[0] >= seq:
            return
        if self.written.get(key, 0) >= seq:
            return
        self.pending[key] = (seq, encode_entry(seq, subject, payload))
        self._wake.set()

    async def on_start(self) -> None:
        if self.enabled:
            self.add_future(self._run())

    async def _bucket(self) -> KeyValue:
        bucket = self.cfg.last_value_bucket
        while self.kv is None:
            await self.publisher._connected.wait()
            js = self.publisher.js
            try:
                self.kv = await js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                try:
                    self.kv = await js.create_key_value(bucket=bucket, history=1)
                except (nats.errors.Error, nats.js.errors.Error) as exc:
                    log.warning("nats: cannot create bucket %s: %r", bucket, exc)
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                log.warning("nats: cannot open bucket %s: %r", bucket, exc)
            if self.kv is None:
                await asyncio.sleep(self.cfg.reconnect_wait_s)
        return self.kv

    async def _run(self) -> None:
        while not self.should_stop:
            await self._wake.wait()
            self._wake.clear()
            kv = await self._bucket()
            batch, self.pending = self.pending, {}
            for key, (seq, value) in batch.items():
                try:
                    await kv.put(key, value)
                except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                    self.failures += 1
                    log.warning("nats: last value %s not written: %r", key, exc)
                    newer = self.pending.get(key)
                    if newer is None or newer[0] < seq:
                        self.pending[key] = (seq, value)
                    self._wake.set()
                    await asyncio.sleep(self.cfg.reconnect_wait_s)
                    continue
                self.puts += 1
                if seq > self.written.get(key, 0):
                    self.written[key] = seq

    def snapshot(self) -> dict[str, Any]:
        return {
            "bucket": self.cfg.last_value_bucket if self.enabled else None,
            "keys": len(self.written),
            "puts": self.puts,
            "pending": len(self.pending),
            "failures": self.failures,
        }
