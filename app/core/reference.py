"""Live broker prices against the historical reference (Dukascopy), per broker.

The design treats Dukascopy as the validation reference: a broker whose mid price sits
consistently away from it is quoting off-market. Each live tick is matched with the
reference tick at or just before its event time (the reference price that was current
when the broker quoted), and the mid-price difference is expressed in pips.
Pure functions only: the command and the quality tables decide where results go.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from app.core.models import Tick


@dataclass(slots=True)
class BrokerDeviation:
    """Mid-price deviation of one broker from the reference, in pips.

    `mean_pips` is signed (a broker quoting above the reference has a positive bias),
    `mean_abs_pips` and `max_abs_pips` measure how far off it is regardless of side.
    `unmatched` counts live ticks with no reference tick at most `max_age_ns` before them.
    """

    source: str
    matched: int = 0
    unmatched: int = 0
    mean_pips: float = 0.0
    mean_abs_pips: float = 0.0
    max_abs_pips: float = 0.0
    max_abs_at_ns: int = 0


@dataclass(slots=True)
class ReferenceComparison:
    """Result of one check: per-broker deviations for a symbol and time window."""

    symbol: str
    start_ns: int
    end_ns: int
    reference_ticks: int
    live_ticks: int
    brokers: dict[str, BrokerDeviation] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceComparison:
        brokers = {k: BrokerDeviation(**v) for k, v in data.get("brokers", {}).items()}
        return cls(**{**data, "brokers": brokers})


def compare_to_reference(
    live_ticks: Iterable[Tick],
    reference_ticks: Sequence[Tick],
    pip: int,
    max_age_ns: int | None = None,
) -> dict[str, BrokerDeviation]:
    """Per-broker (tick.source) mid-price deviation from the reference, in pips.

    `reference_ticks` must be in event-time order; `pip` is in fixed-point units
    (price_from_decimal(Decimal("0.0001")) for EURUSD). Mid differences are summed as
    exact integers (twice the mid, so no halving) and only turned into pips at the end.
    """
    if pip <= 0:
        raise ValueError(f"pip must be positive, got {pip}")
    ref_times = [t.event_time_ns for t in reference_ticks]
    ref_mid2 = [t.mid2 for t in reference_ticks]
    sums: dict[str, list[int]] = {}  # source -> [matched, unmatched, sum, sum_abs, max_abs, at]
    for tick in live_ticks:
        acc = sums.get(tick.source)
        if acc is None:
            acc = sums[tick.source] = [0, 0, 0, 0, -1, 0]
        i = bisect_right(ref_times, tick.event_time_ns) - 1
        if i < 0 or (max_age_ns is not None and tick.event_time_ns - ref_times[i] > max_age_ns):
            acc[1] += 1
            continue
        diff2 = tick.mid2 - ref_mid2[i]
        acc[0] += 1
        acc[2] += diff2
        acc[3] += abs(diff2)
        if abs(diff2) > acc[4]:
            acc[4] = abs(diff2)
            acc[5] = tick.event_time_ns
    two_pips = 2 * pip
    result = {}
    for source, (matched, unmatched, total, total_abs, max_abs, at) in sorted(sums.items()):
        result[source] = BrokerDeviation(
            source=source,
            matched=matched,
            unmatched=unmatched,
            mean_pips=total / matched / two_pips if matched else 0.0,
            mean_abs_pips=total_abs / matched / two_pips if matched else 0.0,
            max_abs_pips=max_abs / two_pips if matched else 0.0,
            max_abs_at_ns=at if matched else 0,
        )
    return result


def attach_reference(comparison: dict[str, Any], ref: ReferenceComparison) -> dict[str, Any]:
    """Add a reference check's deviations to a broker comparison (the quality view).

    Each ranked broker's metrics gain `reference_deviation_pips` (mean absolute mid
    deviation from Dukascopy) and `reference_max_deviation_pips` when the check saw it.
    """
    comparison["reference"] = {
        "source": "dukascopy",
        "start_ns": ref.start_ns,
        "end_ns": ref.end_ns,
        "reference_ticks": ref.reference_ticks,
    }
    for broker, metrics in comparison.get("metrics", {}).items():
        deviation = ref.brokers.get(broker)
        if deviation is not None and deviation.matched:
            metrics["reference_deviation_pips"] = round(deviation.mean_abs_pips, 3)
            metrics["reference_max_deviation_pips"] = round(deviation.max_abs_pips, 3)
    return comparison
