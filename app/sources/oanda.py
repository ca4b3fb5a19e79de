"""OANDA v20 pricing stream: the wire format (this part) and the streaming client.

A line is one JSON object: PRICE or HEARTBEAT. Prices are decimal strings parsed exactly;
the best bid is the highest bid bucket and the best ask the lowest ask bucket, which are
not necessarily the first ones in the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.errors import ParseError
from app.models import Tick, normalise_symbol, parse_price, parse_rfc3339_ns

FORMAT = "oanda_v20"
MAX_LINE_BYTES = 64 * 1024


@dataclass(slots=True, frozen=True)
class Heartbeat:
    time_ns: int


def _best(buckets: Any, side: str, pick_max: bool) -> tuple[int, float]:
    if not isinstance(buckets, list):
        raise ParseError("missing_field", f"{side} is not a list")
    if not buckets:
        raise ParseError("empty_book", f"no {side}")
    best_price = -1
    best_liquidity = 0.0
    for bucket in buckets:
        if not isinstance(bucket, dict) or "price" not in bucket:
            raise ParseError("missing_field", f"{side} bucket without price: {bucket!r:.80}")
        try:
            price = parse_price(bucket["price"])
        except ValueError as exc:
            raise ParseError("bad_price", str(exc)) from None
        liquidity = bucket.get("liquidity", 0)
        if isinstance(liquidity, bool) or not isinstance(liquidity, int | float):
            raise ParseError("bad_liquidity", f"{side} liquidity {liquidity!r:.40}")
        if best_price < 0 or (price > best_price if pick_max else price < best_price):
            best_price, best_liquidity = price, float(liquidity)
    return best_price, best_liquidity


def parse_oanda_line(line: bytes, source: str, receive_time_ns: int) -> Tick | Heartbeat:
    """Parse one stream line; raise ParseError with a reason code for anything not a tick.

    A PRICE with `tradeable: false` or an empty side is a well-formed line that is still
    not a tradable tick: it raises ParseError("not_tradeable" / "empty_book") so that the
    caller records why instead of dropping it.
    """
    if len(line) > MAX_LINE_BYTES:
        raise ParseError("oversized_line", f"{len(line)} bytes")
    try:
        msg = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError("malformed_json", str(exc)[:200]) from None
    if not isinstance(msg, dict):
        raise ParseError("not_an_object", f"line is a {type(msg).__name__}")
    kind = msg.get("type")
    if kind == "HEARTBEAT":
        return Heartbeat(_time(msg))
    if kind != "PRICE":
        raise ParseError("unknown_type", f"type {kind!r:.40}")
    instrument = msg.get("instrument")
    if not isinstance(instrument, str) or not instrument:
        raise ParseError("missing_field", "instrument")
    symbol = normalise_symbol(instrument)
    if not symbol.isalnum() or not symbol.isascii() or len(symbol) > 32:
        raise ParseError("bad_instrument", f"instrument {instrument!r:.40}")
    time_ns = _time(msg)
    bid, bid_volume = _best(msg.get("bids"), "bids", pick_max=True)
    ask, ask_volume = _best(msg.get("asks"), "asks", pick_max=False)
    tradeable = msg.get("tradeable", msg.get("status", "tradeable") == "tradeable")
    if tradeable is not True:
        raise ParseError("not_tradeable", f"{symbol} tradeable={tradeable!r:.20}")
    return Tick(symbol, source, bid, ask, bid_volume, ask_volume, time_ns, receive_time_ns)


def _time(msg: dict[str, Any]) -> int:
    if "time" not in msg:
        raise ParseError("missing_field", "time")
    try:
        return parse_rfc3339_ns(msg["time"])
    except ValueError as exc:
        raise ParseError("bad_time", str(exc)) from None
