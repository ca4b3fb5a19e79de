"""Best price: tightest fresh spread, priority tie-break, consolidated top of book, expiry."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from app.core.best_price import UNKNOWN_PRIORITY, choose_best
from app.core.state import BestChoice, Quote

MS = 1_000_000
T0 = 1_796_029_200_000_000_000
PRIORITIES = {"ic_markets": 1, "pepperstone": 2, "fxcm": 3}
MAX_AGE = 3000 * MS


def q(event: int, bid: int, ask: int) -> Quote:
    return Quote(event, bid, ask, 0.0, 0.0, event, "", -1, -1, 0)


def test_tightest_spread_wins_with_consolidated_top_of_book():
    quotes = {
        "ic_markets": q(T0, 1_100_000_000, 1_100_200_000),  # spread 2 pips
        "pepperstone": q(T0, 1_100_050_000, 1_100_150_000),  # spread 1 pip
        "fxcm": q(T0, 1_100_120_000, 1_100_300_000),  # highest bid
    }
    assert choose_best(quotes, T0, MAX_AGE, PRIORITIES) == BestChoice(
        "pepperstone",
        1_100_050_000,
        1_100_150_000,
        1_100_120_000,
        "fxcm",
        1_100_150_000,
        "pepperstone",
    )


def test_equal_spread_goes_to_better_priority_and_unknown_is_last():
    quotes = {
        "unknown_feed": q(T0, 1_000, 1_010),
        "fxcm": q(T0, 1_000, 1_010),
        "pepperstone": q(T0, 1_000, 1_010),
    }
    best = choose_best(quotes, T0, MAX_AGE, PRIORITIES)
    assert best is not None
    assert best.source == "pepperstone"
    assert best.best_bid_source == "pepperstone" and best.best_ask_source == "pepperstone"
    del quotes["pepperstone"], quotes["fxcm"]
    assert choose_best(quotes, T0, MAX_AGE, PRIORITIES).source == "unknown_feed"


def test_stale_quote_is_ignored_and_next_broker_takes_over():
    quotes = {
        "ic_markets": q(T0, 1_000, 1_005),
        "pepperstone": q(T0 + 1000 * MS, 1_000, 1_010),
    }
    assert choose_best(quotes, T0 + 3000 * MS, MAX_AGE, PRIORITIES).source == "ic_markets"
    # ic_markets' last quote is now 3 s + 1 ns old: pepperstone takes over
    failover = choose_best(quotes, T0 + 3000 * MS + 1, MAX_AGE, PRIORITIES)
    assert failover == BestChoice(
        "pepperstone", 1_000, 1_010, 1_000, "pepperstone", 1_010, "pepperstone"
    )


def test_nothing_fresh_gives_none():
    assert choose_best({"fxcm": q(T0, 1, 2)}, T0 + MAX_AGE + 1, MAX_AGE, PRIORITIES) is None
    assert choose_best({}, T0, MAX_AGE, PRIORITIES) is None


quote_strategy = st.tuples(
    st.integers(0, 5000 * MS), st.integers(1, 10**6), st.integers(1, 10**4)
).map(lambda t: q(T0 + t[0], t[1], t[1] + t[2]))


@given(
    st.dictionaries(st.sampled_from(["ic_markets", "pepperstone", "fxcm", "other"]), quote_strategy)
)
def test_choice_is_the_minimum_fresh_spread_and_order_independent(quotes: dict):
    now = T0 + 5000 * MS
    best = choose_best(quotes, now, MAX_AGE, PRIORITIES)
    fresh = {s: v for s, v in quotes.items() if now - v.event_ns <= MAX_AGE}
    if not fresh:
        assert best is None
        return
    assert best is not None
    assert best.ask - best.bid == min(v.ask - v.bid for v in fresh.values())
    assert best.best_bid == max(v.bid for v in fresh.values())
    assert best.best_ask == min(v.ask for v in fresh.values())
    reversed_quotes = dict(reversed(list(quotes.items())))
    assert choose_best(reversed_quotes, now, MAX_AGE, PRIORITIES) == best


def _reference_choice(
    quotes: dict, now_ns: int, max_age_ns: int, priorities: dict
) -> BestChoice | None:
    """The rule as written in the module docstring: minimum of (value, priority, name)."""
    fresh = {s: (q.event_ns, q.bid, q.ask) for s, q in quotes.items()}
    fresh = {s: v for s, v in fresh.items() if v[0] >= now_ns - max_age_ns}
    if not fresh:
        return None

    def rank(s: str) -> int:
        return priorities.get(s, UNKNOWN_PRIORITY)

    chosen = min(fresh, key=lambda s: (fresh[s][2] - fresh[s][1], rank(s), s))
    best_bid = min(fresh, key=lambda s: (-fresh[s][1], rank(s), s))
    best_ask = min(fresh, key=lambda s: (fresh[s][2], rank(s), s))
    return BestChoice(
        chosen, fresh[chosen][1], fresh[chosen][2],
        fresh[best_bid][1], best_bid, fresh[best_ask][2], best_ask,
    )  # fmt: skip


def test_choice_matches_the_rule_on_random_books() -> None:
    """Ties everywhere (few price levels, equal priorities, unknown brokers, expiry)."""
    rng = random.Random(3)
    priorities = {"a": 1, "b": 2, "c": 2}
    for _ in range(20_000):
        names = rng.sample(["a", "b", "c", "d", "e"], rng.randint(0, 5))
        quotes = {
            s: q(rng.randint(0, 10), rng.choice([100, 101, 102]), rng.choice([102, 103, 104]))
            for s in names
        }
        now = rng.randint(5, 12)
        expected = _reference_choice(quotes, now, 5, priorities)
        assert choose_best(quotes, now, 5, priorities) == expected, (quotes, now)
