"""The tables' value types, each with one encoding (msgspec JSON, ints exact).

A table stores bytes; `encode`/`decode` are the only way in and out, so a view, an agent
and a test all read the same typed record. Quotes, choices and broker stats are positional
arrays inside the JSON (`array_like`), which keeps a symbol's value small: it is written to
the changelog on every merged write.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from app.core.state import BestChoice, BrokerStats, Quote


class SymbolStateValue(msgspec.Struct, omit_defaults=True):
    """symbol-state / historical-symbol-state: everything the rules keep per symbol.

    `applied` maps input partition -> offset of the last raw message of this symbol whose
    effects are in this value: state and applied offset in one changelog record, so a crash
    never leaves one ahead of the other. History keeps quotes and rejects only.
    """

    quotes: dict[str, Quote] = {}
    quality: dict[str, BrokerStats] = {}
    best: BestChoice | None = None
    rejects: dict[str, int] = {}
    applied: dict[str, int] = {}
    # candle book per source (app.core.candles.encode_book): in the same record as
    # `applied`, so a replay after a crash rebuilds exactly the same candles
    candles: dict[str, dict[str, Any]] = {}


class CandleHistoryValue(msgspec.Struct, omit_defaults=True):
    """candle-history "<symbol>:<timeframe>": the last closed candles per source, oldest
    first, each as `candle_row` (a revision replaces the row of its window)."""

    rows: dict[str, list[list[int]]] = {}


class PartitionClocks(msgspec.Struct):
    """partition-state: newest accepted event time per source in one input partition."""

    clocks: dict[str, int] = {}


V = TypeVar("V", SymbolStateValue, PartitionClocks, CandleHistoryValue)

_encoder = msgspec.json.Encoder()
_decoders = {
    t: msgspec.json.Decoder(t) for t in (SymbolStateValue, PartitionClocks, CandleHistoryValue)
}


def encode(value: SymbolStateValue | PartitionClocks | CandleHistoryValue) -> bytes:
    return _encoder.encode(value)


def decode(kind: type[V], data: bytes | None) -> V:
    """The stored value, or an empty one for a key never written."""
    if not data:
        return kind()
    return _decoders[kind].decode(data)


def to_builtins(value: SymbolStateValue | PartitionClocks) -> object:
    """The value as plain JSON types, for a store that serialises by itself (bench's Quix)."""
    return msgspec.to_builtins(value)


def from_builtins(kind: type[V], data: object) -> V:
    return kind() if data is None else msgspec.convert(data, kind)
