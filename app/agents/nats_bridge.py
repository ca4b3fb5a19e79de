"""Mirror market-data-stream and market-context-stream to NATS, unchanged bytes, none lost.

Offsets are committed only after NATS has the message: the agents iterate a `noack()`
stream, so faust does not ack an event when the loop moves on; each event is acked
(`event.ack()`, which lets faust commit its offset) from the publisher's ack callback.
faust commits per partition only up to the first offset not yet acked, so a message
still waiting for NATS holds back the commit of everything after it. A crash therefore
re-sends at most what was in flight, and the Nats-Msg-Id (a digest of the bytes, see
app.sinks.nats.subjects.message_id) makes JetStream drop those copies - also the copies that
the processing agents re-produce at new offsets after a crash of their own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from faust.types import EventT, StreamT

from app.ops.runtime import health
from app.pipeline.faust_app import app, settings
from app.pipeline.topics import market_candles, market_context_stream, market_data_stream
from app.sinks.nats.last_value import LastValueWriter
from app.sinks.nats.publisher import NatsPublisher
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
            "offsets": {
                tp: {"consumed": off, "acked": self.acked.get(tp, -1)}
                for tp, off in sorted(self.consumed.items())
            },
        }


progress = BridgeProgress()


def _ack_callback(event: EventT, tp: str, offset: int) -> Callable[[], None]:
    def acked() -> None:
        event.ack()
        progress.on_acked(tp, offset)

    return acked


def _last_value(key: str, symbol: bytes | None, subject: str, payload: bytes) -> Any:
    """`on_stored` that offers the message to the `market-last` bucket (docs/last-value.md)."""
    if key == "best":
        key = f"best.{subject_token((symbol or b'').decode('utf-8', 'replace'))}"

    def stored(seq: int) -> None:
        last_values.offer(key, seq, subject, payload)

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
        tp = f"{message.topic}/{message.partition}"
        progress.on_consumed(tp, message.offset)
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
        return f"not connected to NATS at {settings.nats.url} since start-up"
    return f"NATS {publisher.connection_state}, {publisher.in_flight} publishes waiting"


health.add_section("nats_bridge", _health_section)
health.add_check("nats_bridge", _health_check)
