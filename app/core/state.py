"""The typed state the rules work on and the tables store: one record type per value.

msgspec Structs: as cheap to build and read on the per-tick path as the positional lists
they replace, with named fields everywhere else. Quotes, choices and broker stats are
`array_like`, so a stored value is as compact as a list (see app.tables.values).
"""

from __future__ import annotations

import msgspec

from app.core.models import Tick


class Quote(msgspec.Struct, array_like=True, gc=False):
    """A broker's last ACCEPTED quote of a symbol, with where it was read from."""

    event_ns: int
    bid: int
    ask: int
    bid_volume: float
    ask_volume: float
    receive_ns: int
    topic: str
    partition: int
    offset: int
    index: int

    @classmethod
    def of(cls, tick: Tick) -> Quote:
        return cls(
            tick.event_time_ns,
            tick.bid,
            tick.ask,
            tick.bid_volume,
            tick.ask_volume,
            tick.receive_time_ns,
            tick.topic,
            tick.partition,
            tick.offset,
            tick.index,
        )

    def tick(self, symbol: str, source: str) -> Tick:
        return Tick(
            symbol,
            source,
            self.bid,
            self.ask,
            self.bid_volume,
            self.ask_volume,
            self.event_ns,
            self.receive_ns,
            self.topic,
            self.partition,
            self.offset,
            self.index,
        )


class BestChoice(msgspec.Struct, array_like=True, gc=False):
    """The chosen broker's quote plus the consolidated top of book across fresh brokers."""

    source: str
    bid: int
    ask: int
    best_bid: int
    best_bid_source: str
    best_ask: int
    best_ask_source: str


class BrokerStats(msgspec.Struct, array_like=True, gc=False):
    """Raw quality counters of one (broker, symbol); see app.core.quality."""

    accepted: int = 0
    rejected: int = 0
    latency_ms: float = 0.0
    spread_sum: int = 0
    first_ns: int = 0
    last_ns: int = 0
    gaps: int = 0
    missing: int = 0
    fresh_ns: int = 0
    observed_ns: int = 0
