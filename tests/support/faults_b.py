"""Helpers of the fault scenarios 3, 6, 7: hostile raw records, the simulator, topic reads.

The hostile generator is seeded and uses no wall clock, so a failing run can be replayed
record for record; every record carries the category it was drawn from, which says
whether it must be rejected (`must_reject`) or may go either way.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from app.wire import codec
from tests.support.simulator import SimulatorProcess

BROKERS = ("ic_markets", "pepperstone", "fxcm")
SYMBOLS = {"EURUSD": ("EUR_USD", 1.08), "GBPUSD": ("GBP_USD", 1.27), "USDJPY": ("USD_JPY", 151.2)}
BASE_NS = 1_700_000_000_000_000_000  # fixed, so the records do not depend on the clock
OANDA_MAX_LINE = 64 * 1024


async def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.3) -> Any:
    """Poll `check` until it returns something truthy (a deadline, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


# ------------------------------------------------------------------ hostile raw records


@dataclass(slots=True)
class HostileRecord:
    category: str
    must_reject: bool
    record: codec.RawRecord


def rfc3339(ns: int) -> str:
    second, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{frac:09d}Z"


def price_line(instrument: str, ns: int, bid: str, ask: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "PRICE",
        "instrument": instrument,
        "time": rfc3339(ns),
        "bids": [{"price": bid, "liquidity": 1000000}],
        "asks": [{"price": ask, "liquidity": 1000000}],
        "tradeable": True,
        **extra,
    }


class HostileGenerator:
    """Seeded mix of valid OANDA lines and every kind of broken input we could think of."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.clock: dict[tuple[str, str], int] = {}

    def _next_ns(self, symbol: str, source: str) -> int:
        ns = self.clock.get((symbol, source), BASE_NS) + self.rng.randint(1, 50) * 1_000_000
        self.clock[(symbol, source)] = ns
        return ns

    def _quote(self, symbol: str) -> tuple[str, str]:
        mid = SYMBOLS[symbol][1] * (1 + self.rng.uniform(-0.0005, 0.0005))
        digits = 3 if symbol.endswith("JPY") else 5
        half = 0.00004 * mid
        return f"{mid - half:.{digits}f}", f"{mid + half:.{digits}f}"

    def _valid(self, symbol: str, source: str) -> dict[str, Any]:
        ns = self._next_ns(symbol, source)
        bid, ask = self._quote(symbol)
        return price_line(SYMBOLS[symbol][0], ns, bid, ask)

    def _broken_json(self, symbol: str, source: str) -> bytes:
        """A valid line mutated into something that is not a tick."""
        rng = self.rng
        line = self._valid(symbol, source)
        kind = rng.randrange(16)
        if kind == 0:  # truncated JSON
            text = json.dumps(line).encode()
            return text[: rng.randrange(1, len(text) - 1)]
        if kind == 1:  # random bytes, often not UTF-8
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        if kind == 2:  # bad UTF-8 inside a string
            return json.dumps(line).encode().replace(b'"PRICE"', b'"PR\xff\xfeICE"')
        if kind == 3:  # huge numbers
            line["bids"][0]["price"] = rng.choice(["1e400", "9" * 40, "1" * 5000 + ".5"])
        elif kind == 4:  # NaN / Infinity tokens
            line["asks"][0][rng.choice(["price", "liquidity"])] = float(rng.choice(["nan", "inf"]))
        elif kind == 5:  # negative / zero / signed prices
            line["bids"][0]["price"] = rng.choice(["-1.08", "0", "+1.08", "-0.0"])
            line["asks"][0]["price"] = "-0.5"
        elif kind == 6:  # wrong types
            field = rng.choice(["bids", "asks", "time", "instrument", "tradeable"])
            line[field] = rng.choice([12345, None, {"price": "1.1"}, ["x"], 1.5, True])
            if field == "tradeable":
                line[field] = rng.choice(["yes", 1, None])
        elif kind == 7:  # oversized line
            line["pad"] = "x" * (OANDA_MAX_LINE + rng.randrange(1, 1000))
        elif kind == 8:  # deeply nested JSON under the size limit
            depth = rng.choice([2000, 10000, 30000])
            return b"[" * depth + b"]" * depth
        elif kind == 9:  # time out of the int64 nanosecond range, or garbage time
            line["time"] = rng.choice(
                ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "2024-13-45T99:00:00Z",
                 "1600-01-01T00:00:00.5Z", "2024-01-01T00:00:00.\u0661Z", "now"]
            )  # fmt: skip
        elif kind == 10:
            line["tradeable"] = False
        elif kind == 11:
            line[rng.choice(["bids", "asks"])] = []
        elif kind == 12:
            line["type"] = rng.choice(["HEARTBEAT", "price", "", None, 7])
            if line["type"] == "HEARTBEAT":
                line = {"type": "HEARTBEAT", "time": line["time"]}
        elif kind == 13:
            line["instrument"] = rng.choice(["", "EUR USD", "€UR_USD", "A" * 40, "EUR_USD\n"])
        elif kind == 14:  # a bucket without price / bad liquidity
            line["bids"] = [
                rng.choice([{"liquidity": 1}, "1.1", {"price": "1.1", "liquidity": "a"}])
            ]
        else:  # not an object at all
            return rng.choice([b"[]", b"42", b'"PRICE"', b"null", b"true", b"   "])
        return json.dumps(line).encode()

    def _bad_values(self, symbol: str, source: str) -> bytes:
        """Well-formed ticks that validation must refuse: crossed or far too wide."""
        line = self._valid(symbol, source)
        bid, ask = line["bids"][0]["price"], line["asks"][0]["price"]
        if self.rng.random() < 0.5:
            line["bids"][0]["price"], line["asks"][0]["price"] = ask, bid
        else:
            line["asks"][0]["price"] = f"{float(ask) * 1.05:.5f}"
        return json.dumps(line).encode()

    def _garbage_tick(self, symbol: str) -> codec.RawRecord:
        rng = self.rng
        int64 = (-(2**63), 2**63 - 1, 0, -1, 1, rng.randrange(-(2**63), 2**63))
        record = codec.RawRecord(
            source=rng.choice(["", "ic_markets", "\u0000", "x" * 300]),
            format=rng.choice(["oanda_v20", "tick", "", "unknown"]),
            payload=bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))),
            receive_time_ns=rng.choice(int64),
        )
        tick = record.tick
        tick.symbol = rng.choice([symbol, symbol, "", "ZZZZZZ", "eurusd", "\udcff".encode(
            "utf-8", "surrogatepass").decode("utf-8", "replace")])  # fmt: skip
        tick.source = rng.choice(["", "fxcm", "pepperstone", "??"])
        tick.bid_e9 = rng.choice(int64)
        tick.ask_e9 = rng.choice(int64)
        tick.bid_volume = rng.choice([float("nan"), float("inf"), -1.0, 1e308, 0.0])
        tick.ask_volume = rng.choice([float("nan"), float("-inf"), 1.0])
        tick.event_time_ns = rng.choice(int64)
        tick.receive_time_ns = rng.choice(int64)
        return record

    def record(self, symbol: str) -> HostileRecord:
        rng = self.rng
        source = rng.choice(BROKERS)
        roll = rng.random()
        if roll < 0.08:
            return HostileRecord("garbage_tick", False, self._garbage_tick(symbol))
        if roll < 0.45:
            payload, category, must = (
                json.dumps(self._valid(symbol, source)).encode(),
                "valid",
                False,
            )
        elif roll < 0.52:
            payload, category, must = self._bad_values(symbol, source), "bad_values", True
        else:
            payload, category, must = self._broken_json(symbol, source), "broken", True
        record = codec.RawRecord(
            source=source, format="oanda_v20", payload=payload, receive_time_ns=BASE_NS
        )
        # receive time: just after the newest event of the stream, never "future dated"
        record.receive_time_ns = self.clock.get((symbol, source), BASE_NS) + 1_000_000
        return HostileRecord(category, must, record)

    def batches(self, total: int) -> Iterator[tuple[bytes, list[HostileRecord]]]:
        """RawBatch contents keyed by symbol, 1..60 records each, `total` records in all."""
        left = total
        while left:
            symbol = self.rng.choice(sorted(SYMBOLS))
            size = min(left, self.rng.randint(1, 60))
            left -= size
            yield symbol.encode(), [self.record(symbol) for _ in range(size)]

    def not_raw_batches(self, count: int) -> list[tuple[bytes | None, bytes | None]]:
        """Kafka messages that are not a RawBatch: junk bytes, text, empty, a tombstone."""
        fixed: list[tuple[bytes | None, bytes | None]] = [
            (b"EURUSD", b""),
            (b"EURUSD", None),
            (None, b'{"type":"PRICE"}'),
            (b"\xff\xfe", b"\x0a\xff\xff\xff\xff\x0f"),
            (b"GBPUSD", b"hello world"),
        ]
        while len(fixed) < count:
            junk = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 300)))
            fixed.append((self.rng.choice([b"USDJPY", b"", None]), junk))
        return fixed[:count]


def decoded_records(value: bytes | None) -> int:
    """Records the worker finds in one raw Kafka message (0: undecodable or empty)."""
    try:
        return len(codec.decode_raw_batch(value).records)  # type: ignore[arg-type]
    except Exception:
        return 0


def records_in(value: bytes | None) -> int:
    """How many records the worker must account for in one raw Kafka message: those of a
    decodable RawBatch, else (undecodable or empty) one malformed_batch reject."""
    return decoded_records(value) or 1


async def produce_located(
    bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes | None]]
) -> list[tuple[int, int]]:
    """Produce and return each message's (partition, offset), in order."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in items]
        metas = [await f for f in futures]
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metas]


def accepted_by_quality(quality_view: dict[str, Any]) -> int:
    """Accepted ticks per the worker's quality table (/tables/quality): an independent
    count from the Rejection messages, kept by the same pass over each record."""
    return sum(
        m["ticks"] for entry in quality_view.values() for m in entry.get("metrics", {}).values()
    )


# ------------------------------------------------------------------ simulator


def broker_env(sim: SimulatorProcess, **knobs: str) -> dict[str, str]:
    """Worker env enabling the three brokers against the simulator (tests disable them)."""
    env = {}
    for name in BROKERS:
        prefix = f"INGEST__BROKERS__{name.upper()}__"
        env[prefix + "ENABLED"] = "true"
        env[prefix + "STREAM_URL"] = f"{sim.url}/{name}"
        env[f"OANDA_TOKEN_{name.upper()}"] = f"token-of-{name}"
        for knob, value in knobs.items():
            env[prefix + knob.upper()] = value
    return env


def crash_lines(log_text: str) -> list[str]:
    """Lines of a worker log that show an agent crash or an unhandled exception."""
    return [line for line in log_text.splitlines() if "Crashed" in line or "Traceback" in line]
