"""Mirror market-data-stream and market-context-stream to NATS, unchanged bytes, none lost.

Offsets are committed only after NATS has the message: the agents iterate a `noack()`
stream, so faust does not ack an event when the loop moves on; each event is acked
(`event.ack()`, which lets faust commit its offset) from the publisher's ack callback.
faust commits per partition only up to the first offset not yet acked, so a message
still waiting for NATS holds back the commit of everything after it. A crash therefore
re-sends at most what was in flight, and the Nats-Msg-Id (a digest of the bytes, see
app.sinks.nats.subjects.message_id) makes JetStream drop those copies - also the copies that
the processing agents re-produce at new offsets after a crash of their own.

JetStream drops copies only within its duplicate window, so the bridge does not rely on
it for its own re-sends: after each ack it stores the end of the contiguous acked prefix
per input partition (table nats-bridge-published), and skips offsets at or below it when
it reads a partition again, however long it was down. What that cannot catch: a crash
between the NATS ack and that table write reaching Kafka (milliseconds), and copies of
the same bytes at new offsets - those two still rely on the window (docs/downstream.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from faust.types import EventT, StreamT

from app.compat.faust_kafka import in_event
from app.core.redact import redact_url
from app.ops.runtime import health
from app.pipeline.faust_app import app, settings
from app.pipeline.topics import market_candles, market_context_stream, market_data_stream
from app.sinks.nats.last_value import LastValueWriter
from app.sinks.nats.publisher import NatsPublisher
from app.sinks.nats.resume import AckedPrefix
from app.sinks.nats.subjects import (
    WireFormatError,
    candle_message_id,
    candle_subject,
    context_subject,
    last_value_key,
    market_data_subject,
    message_id,
    subject_token,
)
from app.tables.bridge import bridge_published
from app.wire import codec

log = logging.getLogger(__name__)

# Before the first connect has had a chance, "not connected yet" is not a problem.
CONNECT_GRACE_S = 10.0

publisher = NatsPublisher(settings.nats)
app.service(publisher)  # type: ignore[arg-type]  # faust starts/stops instances too
last_values = LastValueWriter(settings.nats, publisher)
app.service(last_values)  # type: ignore[arg-type]


class BridgeProgress:
    """Kafka offsets consumed vs acked by NATS, per topic-partition (for /health)."""

    def __init__(self) -> None:
        self.consumed: dict[str, int] = {}
        self.acked: dict[str, int] = {}
        self.consumed_total = 0
        self.acked_total = 0
        self.undecodable = 0
        self.skipped_published = 0  # re-read offsets already on NATS (not sent again)

    def on_consumed(self, tp: str, offset: int) -> None:
        self.consumed[tp] = offset
        self.consumed_total += 1

    def on_acked(self, tp: str, offset: int) -> None:
        if offset > self.acked.get(tp, -1):
            self.acked[tp] = offset
        self.acked_total += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "lag_messages": self.consumed_total - self.acked_total,
            "consumed": self.consumed_total,
            "acked": self.acked_total,
            "undecodable": self.undecodable,
            "skipped_published": self.skipped_published,
            "offsets": {
                tp: {"consumed": off, "acked": self.acked.get(tp, -1)}
                for tp, off in sorted(self.consumed.items())
            },
        }


progress = BridgeProgress()
acked_prefix: AckedPrefix[EventT] = AckedPrefix()


def published_offset(event: EventT, tp: str) -> int:
    """The last offset of `tp` stored as acked by NATS (-1: none)."""
    with in_event(event):  # RocksDB reads come from the current event's partition
        stored = bridge_published.get(tp.encode())
    return int(stored) if stored else -1


def _ack_callback(event: EventT, tp: str, offset: int) -> Callable[[], None]:
    def acked() -> None:
        event.ack()
        progress.on_acked(tp, offset)
        moved = acked_prefix.acked(tp, offset)
        if moved is not None:
            done, done_event = moved
            with in_event(done_event):  # the changelog partition of the bridged message
                bridge_published[tp.encode()] = str(done).encode()

    return acked


def _last_value(key: str, message_key: bytes | None, subject: str, payload: bytes) -> Any:
    """`on_stored` that offers the message to the `market-last` bucket (docs/last-value.md).

    A best-price message of several symbols is the latest for each of them."""
    if key == "best":
        keys = [f"best.{subject_token(symbol)}" for symbol in codec.key_symbols(message_key)]
    else:
        keys = [key]

    def stored(seq: int) -> None:
        for each in keys:
            last_values.offer(each, seq, subject, payload)

    return stored


async def _bridge(
    stream: StreamT,
    subject_of: Callable[[str, bytes], str],
    id_of: Callable[[bytes], str] = message_id,
) -> None:
    prefix = settings.nats.subject_prefix
    async for event in stream.noack().events():
        message = event.message
        payload: bytes = event.value
        tp = f"{message.topic}/{message.partition}"
        if message.offset <= published_offset(event, tp):
            progress.on_consumed(tp, message.offset)
            progress.skipped_published += 1
            progress.on_acked(tp, message.offset)
            event.ack()
            continue
        try:
            subject = subject_of(prefix, payload)
        except WireFormatError as exc:
            # Still forwarded (no loss), under the "unknown" source/provider token.
            progress.undecodable += 1
            subject = subject_of(prefix, b"")
            log.warning(
                "nats bridge: %s[%d]@%d is not a protobuf message (%s), sent to %s",
                message.topic,
                message.partition,
                message.offset,
                exc,
                subject,
            )
        progress.on_consumed(tp, message.offset)
        acked_prefix.submitted(tp, message.offset, event)
        last = last_value_key(subject, prefix) if last_values.enabled else None
        await publisher.submit(
            subject,
            payload,
            id_of(payload),
            _ack_callback(event, tp, message.offset),
            None if last is None else _last_value(last, event.key, subject, payload),
        )


@app.agent(market_data_stream)
async def bridge_market_data(stream: StreamT) -> None:
    """market-data-stream -> `<prefix>.<source>.ticks`."""
    await _bridge(stream, market_data_subject)


@app.agent(market_context_stream)
async def bridge_market_context(stream: StreamT) -> None:
    """market-context-stream -> `<prefix>.context.<provider>`."""
    await _bridge(stream, context_subject)


@app.agent(market_candles)
async def bridge_candles(stream: StreamT) -> None:
    """market-candles -> `<prefix>.candles.<timeframe>.<symbol>[.<source>]`."""
    await _bridge(stream, candle_subject, candle_message_id)


def _health_section() -> dict[str, Any]:
    return {**publisher.snapshot(), **progress.snapshot(), "last_value": last_values.snapshot()}


def _health_check() -> str | None:
    if publisher.connected:
        return None
    if not publisher.ever_connected:
        if time.monotonic() - health.started < CONNECT_GRACE_S:
            return None
        error = publisher.refusal or publisher.last_error
        reason = f": {error}" if error else ""
        return f"not connected to NATS at {redact_url(settings.nats.url)} since start-up{reason}"
    return f"NATS {publisher.connection_state}, {publisher.in_flight} publishes waiting"


health.add_section("nats_bridge", _health_section)
health.add_check("nats_bridge", _health_check)
