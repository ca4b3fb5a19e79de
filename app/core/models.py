"""Record types the agents see. Agents never see a provider's JSON, only these.

Prices are exact fixed-point integers (value * PRICE_SCALE) parsed from the provider's
decimal strings, so nothing is rounded through binary floats on the way in; times are
integer nanoseconds since the epoch (UTC); symbols are normalised ("EUR_USD" -> "EURUSD").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

PRICE_SCALE = 1_000_000_000
PRICE_DECIMALS = 9
NS_PER_SECOND = 1_000_000_000
NS_PER_MS = 1_000_000
# int64 holds 9.2e18, so with 9 decimals a price may have up to 9 whole digits.
MAX_WHOLE_DIGITS = 9
# Times travel as int64 nanoseconds (protobuf): 1677-09-21 .. 2262-04-11.
MIN_TIME_NS, MAX_TIME_NS = -(2**63), 2**63 - 1


def parse_price(text: str) -> int:
    """Parse a decimal price string exactly into fixed-point units; ValueError if it is not one.

    Done by string surgery rather than Decimal because it is on the per-tick hot path.
    """
    if not isinstance(text, str) or not 0 < len(text) <= 32:
        raise ValueError(f"price must be a decimal string, got {text!r}")
    whole, dot, frac = text.partition(".")
    if not whole.isdigit() or (dot and not frac.isdigit()) or not whole.isascii():
        raise ValueError(f"price is not a plain positive decimal: {text!r}")
    if len(whole) > MAX_WHOLE_DIGITS or len(frac) > PRICE_DECIMALS:
        raise ValueError(f"price out of range or too precise: {text!r}")
    return int(whole) * PRICE_SCALE + int(frac.ljust(PRICE_DECIMALS, "0") or 0)


def format_price(units: int) -> str:
    """Render fixed-point units as the shortest exact decimal string."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), PRICE_SCALE)
    frac_text = f"{frac:09d}".rstrip("0")
    return f"{sign}{whole}.{frac_text}" if frac_text else f"{sign}{whole}"


def price_from_decimal(value: Decimal) -> int:
    """Fixed-point units of a Decimal (config values such as pip sizes)."""
    return int(value.scaleb(PRICE_DECIMALS).to_integral_exact())


def normalise_symbol(instrument: str) -> str:
    """Provider instrument name to the service's symbol: "EUR_USD" / "eur/usd" -> "EURUSD"."""
    return instrument.replace("_", "").replace("/", "").replace("-", "").upper()


_EPOCH_NS_CACHE: dict[str, int] = {}


def parse_rfc3339_ns(text: str) -> int:
    """RFC 3339 UTC time with up to nanosecond fraction -> integer ns since the epoch.

    datetime keeps only microseconds, so the fraction is parsed separately; the seconds
    part is cached because consecutive ticks share it.
    """
    if not isinstance(text, str) or not text.endswith("Z") or len(text) < 20:
        raise ValueError(f"time is not RFC 3339 UTC: {text!r}")
    head, dot, frac = text[:-1].partition(".")
    if dot and (not frac.isdigit() or len(frac) > 9):
        raise ValueError(f"time has a bad fraction: {text!r}")
    seconds_ns = _EPOCH_NS_CACHE.get(head)
    if seconds_ns is None:
        try:
            moment = datetime.fromisoformat(head + "+00:00")
        except ValueError as exc:
            raise ValueError(f"time is not RFC 3339 UTC: {text!r}") from exc
        seconds_ns = int(moment.timestamp()) * NS_PER_SECOND
        if len(_EPOCH_NS_CACHE) > 4096:
            _EPOCH_NS_CACHE.clear()
        _EPOCH_NS_CACHE[head] = seconds_ns
    ns = seconds_ns + (int(frac.ljust(9, "0")) if dot else 0)
    if not MIN_TIME_NS <= ns <= MAX_TIME_NS:
        raise ValueError(f"time is outside the int64 nanosecond range: {text!r}")
    return ns


@dataclass(slots=True)
class Tick:
    """One parsed quote of one instrument from one source, with where it was read from."""

    symbol: str
    source: str
    bid: int
    ask: int
    bid_volume: float
    ask_volume: float
    event_time_ns: int
    receive_time_ns: int
    topic: str = ""
    partition: int = -1
    offset: int = -1
    index: int = 0

    @property
    def mid2(self) -> int:
        """Twice the mid price: exact in integers."""
        return self.ask + self.bid


@dataclass(slots=True, frozen=True)
class BestPrice:
    """The chosen quote for a symbol plus the consolidated top of book across fresh sources."""

    tick: Tick
    best_bid: int
    best_bid_source: str
    best_ask: int
    best_ask_source: str
