"""compare_to_reference: per-broker mid-price deviation from Dukascopy, in pips."""

from __future__ import annotations

import json

import pytest

from app.core.models import Tick, parse_price
from app.core.reference import (
    BrokerDeviation,
    ReferenceComparison,
    attach_reference,
    compare_to_reference,
)

PIP = parse_price("0.0001")
S = 1_000_000_000


def tick(source: str, t_s: float, bid: str, ask: str) -> Tick:
    t = int(t_s * S)
    return Tick("EURUSD", source, parse_price(bid), parse_price(ask), 1.0, 1.0, t, t)


REFERENCE = [
    tick("dukascopy", 10, "1.10000", "1.10002"),  # mid 1.10001
    tick("dukascopy", 20, "1.10010", "1.10012"),  # mid 1.10011
    tick("dukascopy", 30, "1.10020", "1.10022"),  # mid 1.10021
]


def test_matches_reference_at_or_just_before_each_live_tick() -> None:
    live = [
        tick("ic", 10, "1.10001", "1.10003"),  # same instant as ref@10: +0.1 pip
        tick("ic", 25, "1.10011", "1.10013"),  # ref@20 (mid 1.10011): +0.1 pip
        tick("ic", 30, "1.09991", "1.09993"),  # ref@30 (mid 1.10021): -2.9 pips
        tick("fx", 19.999, "1.10031", "1.10033"),  # ref@10 (mid 1.10001): +3.1 pips
    ]
    result = compare_to_reference(live, REFERENCE, PIP)
    ic, fx = result["ic"], result["fx"]
    assert (ic.matched, ic.unmatched) == (3, 0)
    assert ic.mean_pips == pytest.approx((0.1 + 0.1 - 2.9) / 3)
    assert ic.mean_abs_pips == pytest.approx((0.1 + 0.1 + 2.9) / 3)
    assert ic.max_abs_pips == pytest.approx(2.9)
    assert ic.max_abs_at_ns == 30 * S
    assert (fx.matched, fx.mean_pips, fx.max_abs_pips) == (1, pytest.approx(3.1), 3.1)


def test_ticks_before_the_reference_or_too_far_after_are_unmatched() -> None:
    live = [tick("ic", 5, "1.1", "1.1"), tick("ic", 95, "1.10020", "1.10022")]
    assert compare_to_reference(live, REFERENCE, PIP)["ic"] == BrokerDeviation(
        "ic", matched=1, unmatched=1, max_abs_at_ns=95 * S
    )
    limited = compare_to_reference(live, REFERENCE, PIP, max_age_ns=60 * S)["ic"]
    assert (limited.matched, limited.unmatched) == (0, 2)


def test_jpy_pip_and_empty_inputs() -> None:
    ref = [Tick("USDJPY", "dukascopy", 150_000 * 10**6, 150_002 * 10**6, 1, 1, 0, 0)]
    live = [Tick("USDJPY", "ic", 150_010 * 10**6, 150_012 * 10**6, 1, 1, 1, 1)]
    (dev,) = compare_to_reference(live, ref, parse_price("0.01")).values()
    assert dev.mean_pips == pytest.approx(1.0)  # 150.011 - 150.001 = 0.010 = 1 pip
    assert compare_to_reference([], ref, PIP) == {}
    assert compare_to_reference(live, [], PIP)["ic"].unmatched == 1
    with pytest.raises(ValueError):
        compare_to_reference(live, ref, 0)


def test_result_round_trips_through_json() -> None:
    result = ReferenceComparison(
        "EURUSD", 0, 3600 * S, 3, 4, compare_to_reference([REFERENCE[1]], REFERENCE, PIP)
    )
    again = ReferenceComparison.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result


def test_reference_deviation_is_attached_to_the_broker_comparison() -> None:
    comparison = {
        "symbol": "EURUSD",
        "metrics": {"ic_markets": {"ticks": 10}, "fxcm": {"ticks": 4}, "pepperstone": {}},
    }
    ref = ReferenceComparison(
        "EURUSD",
        1,
        2,
        50,
        14,
        brokers={
            "ic_markets": BrokerDeviation(
                "ic_markets", matched=10, mean_abs_pips=0.4321, max_abs_pips=1.25
            ),
            "fxcm": BrokerDeviation("fxcm", matched=0, unmatched=4),
        },
    )
    out = attach_reference(comparison, ref)
    assert out["metrics"]["ic_markets"]["reference_deviation_pips"] == 0.432
    assert out["metrics"]["ic_markets"]["reference_max_deviation_pips"] == 1.25
    assert "reference_deviation_pips" not in out["metrics"]["fxcm"]  # nothing matched
    assert "reference_deviation_pips" not in out["metrics"]["pepperstone"]
    assert out["reference"]["reference_ticks"] == 50
