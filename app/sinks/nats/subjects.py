"""Where a Kafka message goes on NATS: subject and de-duplication id, as pure functions.

The bridge forwards protobuf bytes unchanged; it decodes a message only to read the one
field that names the subject (`MarketDataStream.source`, `MarketContext.provider`).
(The upb decoder does that for a 200-tick batch in ~26 us, 4x faster than the
hand-written wire scan it replaced.)
"""

from __future__ import annotations

import hashlib
import re

from google.protobuf.message import DecodeError

from app.wire import codec

UNKNOWN_TOKEN = "unknown"
# NATS tokens are separated by '.', and '*' / '>' are wildcards; whitespace ends a subject.
# Anything outside this conservative set becomes '_' so a feed name can never widen a subject.
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


class WireFormatError(ValueError):
    """The bytes are not a protobuf message (truncated or corrupt)."""


def subject_token(name: str) -> str:
    """One safe NATS subject token from a free-form name ('' -> 'unknown')."""
    token = _UNSAFE.sub("_", name.strip())
    return token or UNKNOWN_TOKEN


def market_data_subject(prefix: str, payload: bytes) -> str:
    """`<prefix>.<source>.ticks` for a serialized MarketDataStream."""
    try:
        source = codec.decode_market_data(payload).source
    except DecodeError as exc:
        raise WireFormatError(f"not a MarketDataStream: {exc}") from exc
    return f"{prefix}.{subject_token(source)}.ticks"


def context_subject(prefix: str, payload: bytes) -> str:
    """`<prefix>.context.<provider>` for a serialized MarketContext."""
    try:
        provider = codec.decode_market_context(payload).provider
    except DecodeError as exc:
        raise WireFormatError(f"not a MarketContext: {exc}") from exc
    return f"{prefix}.context.{subject_token(provider)}"


def candle_subject(prefix: str, payload: bytes) -> str:
    """`<prefix>.candles.<timeframe>.<symbol>` for a best-price candle (source
    `data-ingestion`), `<prefix>.candles.<timeframe>.<symbol>.<source>` for a broker's or a
    history source's: `<prefix>.candles.1m.*` is every best-price 1 min candle and
    `<prefix>.candles.1m.EURUSD.>` every per-source one of EURUSD."""
    try:
        c = codec.decode_candle(payload)
    except DecodeError as exc:
        raise WireFormatError(f"not a Candle: {exc}") from exc
    subject = f"{prefix}.candles.{subject_token(c.timeframe)}.{subject_token(c.symbol)}"
    if c.source == codec.OUTPUT_SOURCE:
        return subject
    return f"{subject}.{subject_token(c.source)}"


def candle_message_id(payload: bytes) -> str:
    """`candle:<source>:<symbol>:<timeframe>:<start_ns>:<revision>`: one id per revision of
    a window, the same whenever the pipeline re-produces it; bytes that are not a Candle
    fall back to the digest."""
    try:
        c = codec.decode_candle(payload)
    except DecodeError:
        return message_id(payload)
    return f"candle:{c.source}:{c.symbol}:{c.timeframe}:{c.start_ns}:{c.revision}"


def last_value_key(subject: str, prefix: str) -> str | None:
    """The `market-last` KV key a published subject updates, or None.

    `<prefix>.data-ingestion.ticks` (key: the symbol, read from the Kafka key by the
    caller) -> "best"; `<prefix>.candles.<tf>.<symbol>` -> "candle.<tf>.<symbol>".
    """
    rest = subject[len(prefix) + 1 :]
    if rest == f"{codec.OUTPUT_SOURCE}.ticks":
        return "best"
    parts = rest.split(".")
    if len(parts) == 3 and parts[0] == "candles":
        return f"candle.{parts[1]}.{parts[2]}"
    return None


def message_id(payload: bytes) -> str:
    """`Nats-Msg-Id` of one message: a digest of its bytes.

    The pipeline's output bytes are a function of its input (they carry the lineage of
    the raw record), so a message produced twice - re-sent by the bridge after a lost
    ack or a crash, or re-produced by the processing agents after a crash, at another
    Kafka offset - has the same id, and JetStream's duplicate window drops the copy.
    """
    return hashlib.blake2b(payload, digest_size=16).hexdigest()
