"""Deterministic raw input for the benchmarks: OANDA-like ticks of 3 brokers x 10 symbols.

Each record is what the broker source writes: the exact v20 JSON line as payload plus
the MarketTick it parsed, so the pipeline takes the `record.tick` path as in production.
Records are grouped per symbol into RawBatch messages the way the source's adaptive
writer does under load (one message per symbol, up to `batch` records, in time order,
brokers interleaved), or one record per message (`batch=1`, the low-rate case).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.core.models import NS_PER_SECOND
from app.wire import codec

BROKERS = ("ic_markets", "pepperstone", "fxcm")
# symbol -> (start mid, decimals quoted by OANDA); all are configured instruments.
SYMBOLS = {
    "EURUSD": ("1.08500", 5),
    "GBPUSD": ("1.27100", 5),
    "USDCHF": ("0.88200", 5),
    "AUDUSD": ("0.65800", 5),
    "USDCAD": ("1.36400", 5),
    "NZDUSD": ("0.60900", 5),
    "EURGBP": ("0.85300", 5),
    "USDJPY": ("157.300", 3),
    "EURJPY": ("170.600", 3),
    "GBPJPY": ("199.800", 3),
}
START_NS = 1_767_607_200 * NS_PER_SECOND  # 2026-01-05T10:00:00Z, fixed: same bytes every run
STEP_NS = 100_000  # market time between two ticks of the whole feed (10,000 ticks/s)


def rfc3339(ns: int) -> str:
    seconds, frac = divmod(ns, NS_PER_SECOND)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def oanda_line(instrument: str, time_ns: int, bid: str, ask: str) -> bytes:
    """A v20 PRICE line in the order and shape the stream sends it."""
    return json.dumps(
        {
            "type": "PRICE",
            "time": rfc3339(time_ns),
            "bids": [{"price": bid, "liquidity": 1000000}, {"price": bid, "liquidity": 5000000}],
            "asks": [{"price": ask, "liquidity": 1000000}, {"price": ask, "liquidity": 5000000}],
            "closeoutBid": bid,
            "closeoutAsk": ask,
            "status": "tradeable",
            "tradeable": True,
            "instrument": instrument,
        },
        separators=(",", ":"),
    ).encode()


@dataclass
class TickSource:
    """Random walk per symbol; each broker quotes it with its own spread."""

    seed: int = 7
    bad_every: int = 1000  # every n-th tick is crossed (bid > ask): the reject path runs too
    rng: random.Random = field(init=False)
    mids: dict[str, int] = field(init=False)
    count: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.mids = {s: int(p.replace(".", "")) for s, (p, _) in SYMBOLS.items()}

    def record(self, symbol: str, broker: str, event_ns: int, receive_ns: int) -> codec.RawRecord:
        """One RawRecord as the broker source writes it (payload line + parsed tick)."""
        decimals = SYMBOLS[symbol][1]
        mid = self.mids[symbol] = self.mids[symbol] + self.rng.randint(-3, 3)
        half = 4 + BROKERS.index(broker) * 2 + self.rng.randint(0, 2)  # 0.4-1.0 pip half spread
        self.count += 1
        if self.bad_every and self.count % self.bad_every == 0:
            half = -half
        scale = 10**decimals
        bid_units, ask_units = mid - half, mid + half
        bid = f"{bid_units // scale}.{bid_units % scale:0{decimals}d}"
        ask = f"{ask_units // scale}.{ask_units % scale:0{decimals}d}"
        instrument = f"{symbol[:3]}_{symbol[3:]}"
        line = oanda_line(instrument, event_ns, bid, ask)
        factor = 10 ** (9 - decimals)
        tick = codec.MarketTick(
            symbol=symbol,
            source=broker,
            bid_e9=bid_units * factor,
            ask_e9=ask_units * factor,
            bid_volume=1000000.0,
            ask_volume=1000000.0,
            event_time_ns=event_ns,
            receive_time_ns=receive_ns,
        )
        return codec.RawRecord(
            source=broker, format="oanda_v20", payload=line, receive_time_ns=receive_ns, tick=tick
        )


def backlog(ticks: int, batch: int, seed: int = 7) -> list[tuple[bytes, bytes, int]]:
    """`ticks` records as (key, RawBatch bytes, records in it), in the order to produce.

    A symbol's batch is flushed when it holds `batch` records; the rest at the end.
    """
    source = TickSource(seed=seed)
    rng = random.Random(seed + 1)
    pending: dict[str, list[codec.RawRecord]] = {s: [] for s in SYMBOLS}
    out: list[tuple[bytes, bytes, int]] = []
    symbols = list(SYMBOLS)
    for i in range(ticks):
        symbol = rng.choice(symbols)
        broker = rng.choice(BROKERS)
        event_ns = START_NS + i * STEP_NS
        receive_ns = event_ns + rng.randint(2_000_000, 6_000_000)
        records = pending[symbol]
        records.append(source.record(symbol, broker, event_ns, receive_ns))
        if len(records) >= batch:
            out.append((symbol.encode(), codec.encode_raw_batch(records), len(records)))
            records.clear()
    for symbol, records in pending.items():
        if records:
            out.append((symbol.encode(), codec.encode_raw_batch(records), len(records)))
    return out


def live_ticks(seed: int = 11) -> Iterator[tuple[bytes, codec.RawRecord]]:
    """Endless live ticks (symbol key, record); times are stamped by the caller."""
    source = TickSource(seed=seed, bad_every=0)
    rng = random.Random(seed + 1)
    symbols = list(SYMBOLS)
    while True:
        symbol = rng.choice(symbols)
        now = time.time_ns()
        yield symbol.encode(), source.record(symbol, rng.choice(BROKERS), now - 2_000_000, now)
