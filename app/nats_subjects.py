"""Where a Kafka message goes on NATS: subject and de-duplication id, as pure functions.

The bridge forwards protobuf bytes unchanged, so it reads only the one top-level field
that names the subject (`MarketDataStream.source`, `MarketContext.provider`) straight
from the wire format instead of decoding a batch of many ticks it never looks at.
"""

from __future__ import annotations

import hashlib
import re

from app import codec

UNKNOWN_TOKEN = "unknown"
# NATS tokens are separated by '.', and '*' / '>' are wildcards; whitespace ends a subject.
# Anything outside this conservative set becomes '_' so a feed name can never widen a subject.
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")

_SOURCE_FIELD = codec.MarketDataStream.DESCRIPTOR.fields_by_name["source"].number
_PROVIDER_FIELD = codec.MarketContext.DESCRIPTOR.fields_by_name["provider"].number

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class WireFormatError(ValueError):
    """The bytes are not a protobuf message (truncated or corrupt)."""


def subject_token(name: str) -> str:
    """One safe NATS subject token from a free-form name ('' -> 'unknown')."""
    token = _UNSAFE.sub("_", name.strip())
    return token or UNKNOWN_TOKEN


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireFormatError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def top_level_string(data: bytes, field_number: int) -> str:
    """The last value of a top-level string field ('' when absent), skipping all others.

    Protobuf keeps the last occurrence of a repeated scalar, so this matches a full decode.
    """
    value = b""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            _, pos = _varint(data, pos)
        elif wire_type == _FIXED64:
            pos += 8
        elif wire_type == _FIXED32:
            pos += 4
        elif wire_type == _LEN:
            length, pos = _varint(data, pos)
            if number == field_number:
                value = data[pos : pos + length]
            pos += length
        else:
            raise WireFormatError(f"unsupported wire type {wire_type} for field {number}")
        if pos > end:
            raise WireFormatError("field runs past the end of the message")
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise WireFormatError(f"field {field_number} is not UTF-8") from exc


def market_data_subject(prefix: str, payload: bytes) -> str:
    """`<prefix>.<source>.ticks` for a serialized MarketDataStream."""
    return f"{prefix}.{subject_token(top_level_string(payload, _SOURCE_FIELD))}.ticks"


def context_subject(prefix: str, payload: bytes) -> str:
    """`<prefix>.context.<provider>` for a serialized MarketContext."""
    return f"{prefix}.context.{subject_token(top_level_string(payload, _PROVIDER_FIELD))}"


def message_id(payload: bytes) -> str:
    """`Nats-Msg-Id` of one message: a digest of its bytes.

    The pipeline's output bytes are a function of its input (they carry the lineage of
    the raw record), so a message produced twice - re-sent by the bridge after a lost
    ack or a crash, or re-produced by the processing agents after a crash, at another
    Kafka offset - has the same id, and JetStream's duplicate window drops the copy.
    """
    return hashlib.blake2b(payload, digest_size=16).hexdigest()
