"""Tick validation rules: pure functions over integers, one call per tick on the hot path.

Thresholds come from `settings.validation` in layers (defaults <- asset class <- symbol)
and are resolved once per symbol into fixed-point units (`Limits`), so that the per-tick
work is a handful of integer comparisons. An instrument without an entry in
`settings.instruments` has no pip size, and guessing one would make the spread rule
wrong by a factor of 100 for JPY pairs: such ticks are rejected as `unknown_instrument`.

State per (broker, symbol) is the last ACCEPTED quote (`LastQuote`): event time, bid,
ask. Rejected ticks never move it, so one bad print cannot make the next good one look
like a jump.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from app.core.models import NS_PER_MS, Tick, price_from_decimal
from app.core.reasons import (
    CROSSED_QUOTE,
    DUPLICATE,
    FUTURE_DATED,
    NON_POSITIVE_PRICE,
    OUT_OF_ORDER,
    PRICE_JUMP,
    SPREAD_TOO_WIDE,
    STALE,
    TOO_FREQUENT,
)
from app.core.state import Quote
from app.settings import Settings, ValidationLimits

PPM = 1_000_000


@dataclass(slots=True, frozen=True)
class Limits:
    """One symbol's thresholds in the units the rules compare: price units, ns, ppm."""

    pip: int
    max_spread: int
    max_move_ppm: int
    min_interval_ns: int
    max_stale_ns: int
    max_future_ns: int


def _layered(settings: Settings, symbol: str, asset_class: str) -> dict[str, float]:
    layers: list[ValidationLimits] = [settings.validation.defaults]
    if asset_class in settings.validation.asset_classes:
        layers.append(settings.validation.asset_classes[asset_class])
    if symbol in settings.validation.symbols:
        layers.append(settings.validation.symbols[symbol])
    merged: dict[str, float] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.model_dump().items() if v is not None})
    return merged


def resolve_limits(settings: Settings, symbol: str) -> Limits | None:
    """The symbol's limits, or None when the instrument is not configured."""
    instrument = settings.instruments.get(symbol)
    if instrument is None:
        return None
    values = _layered(settings, symbol, instrument.asset_class)
    missing = {"max_spread_pips", "max_move_pct", "max_stale_ms", "max_future_ms"} - set(values)
    if missing:
        raise ValueError(f"validation limits for {symbol} lack {sorted(missing)}")
    pip = price_from_decimal(instrument.pip)
    spread = Decimal(str(values["max_spread_pips"])) * pip
    return Limits(
        pip=pip,
        max_spread=int(spread.to_integral_value()),
        max_move_ppm=round(values["max_move_pct"] * PPM / 100),
        min_interval_ns=round(values.get("min_interval_ms", 0) * NS_PER_MS),
        max_stale_ns=round(values["max_stale_ms"] * NS_PER_MS),
        max_future_ns=round(values["max_future_ms"] * NS_PER_MS),
    )


class LimitsBook:
    """Limits per symbol, resolved on first use and then cached (config is immutable)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cache: dict[str, Limits | None] = {}

    def get(self, symbol: str) -> Limits | None:
        try:
            return self._cache[symbol]
        except KeyError:
            limits = self._cache[symbol] = resolve_limits(self._settings, symbol)
            return limits


def validate_tick(
    tick: Tick, last: Quote | None, broker_newest_ns: int, limits: Limits
) -> list[str]:
    """Every rule the tick breaks, as reason codes; an empty list means accept.

    `last` is the broker's last accepted quote of this symbol
    and `broker_newest_ns` the newest accepted event time of the broker (0 if unknown).
    """
    reasons: list[str] = []
    bid = tick.bid
    ask = tick.ask
    event = tick.event_time_ns
    if bid <= 0 or ask <= 0:
        reasons.append(NON_POSITIVE_PRICE)
    if bid >= ask:
        reasons.append(CROSSED_QUOTE)
    elif ask - bid > limits.max_spread:
        reasons.append(SPREAD_TOO_WIDE)
    if event - tick.receive_time_ns > limits.max_future_ns:
        reasons.append(FUTURE_DATED)
    if broker_newest_ns and broker_newest_ns - event > limits.max_stale_ns:
        reasons.append(STALE)
    if last is not None:
        last_event = last.event_ns
        if event == last_event and bid == last.bid and ask == last.ask:
            reasons.append(DUPLICATE)
            return reasons
        if event < last_event:
            reasons.append(OUT_OF_ORDER)
        elif event - last_event < limits.min_interval_ns:
            reasons.append(TOO_FREQUENT)
        last_mid2 = last.bid + last.ask
        if abs(bid + ask - last_mid2) * PPM > last_mid2 * limits.max_move_ppm:
            reasons.append(PRICE_JUMP)
    return reasons
