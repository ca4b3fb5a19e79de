"""Best price across brokers, NBBO-style but with quote expiry.

Pure: the clock is the event time of the tick being processed, never the wall clock, so
a replay makes the same choices. A quote is fresh while `now - its event time <= max_age`;
a broker whose feed stops therefore drops out on the next tick of any other broker, and
the next broker takes over without operator action.

Choice: the tightest spread among fresh quotes; ties go to the broker with the better
(lower) configured priority, then to the name, so the result never depends on dict order.
The consolidated best bid (highest) and best ask (lowest) are reported with their sources.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.validation import Q_ASK, Q_BID, Q_EVENT

UNKNOWN_PRIORITY = 1 << 30
"""Priority of a source that is not a configured broker: after every configured one."""

# Indexes into a best-price list (the value of the best-price table).
B_SOURCE, B_BID, B_ASK, B_BEST_BID, B_BEST_BID_SOURCE, B_BEST_ASK, B_BEST_ASK_SOURCE = range(7)


def choose_best(
    quotes: Mapping[str, list],
    now_ns: int,
    max_age_ns: int,
    priorities: Mapping[str, int],
) -> list | None:
    """[source, bid, ask, best_bid, best_bid_source, best_ask, best_ask_source] or None.

    `quotes` maps source -> last accepted quote [event_ns, bid, ask, ...]. None when no
    quote is fresh.
    """
    chosen_key: tuple[int, int, str] | None = None
    chosen: list | None = None
    chosen_source = ""
    bid_key: tuple[int, int, str] | None = None
    ask_key: tuple[int, int, str] | None = None
    oldest = now_ns - max_age_ns
    for source, quote in quotes.items():
        if quote[Q_EVENT] < oldest:
            continue
        bid = quote[Q_BID]
        ask = quote[Q_ASK]
        rank = priorities.get(source, UNKNOWN_PRIORITY)
        key = (ask - bid, rank, source)
        if chosen_key is None or key < chosen_key:
            chosen_key, chosen, chosen_source = key, quote, source
        key = (-bid, rank, source)
        if bid_key is None or key < bid_key:
            bid_key = key
        key = (ask, rank, source)
        if ask_key is None or key < ask_key:
            ask_key = key
    if chosen is None or bid_key is None or ask_key is None:
        return None
    return [
        chosen_source,
        chosen[Q_BID],
        chosen[Q_ASK],
        -bid_key[0],
        bid_key[2],
        ask_key[0],
        ask_key[2],
    ]
