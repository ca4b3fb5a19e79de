"""OANDA v20-compatible price simulator for demos and tests: `python -m devstack.simulator`.

Serves `GET /{profile}/v3/accounts/{account}/pricing/stream?instruments=EUR_USD,...`
(profile = broker name) with chunked JSON lines like OANDA's: PRICE lines with a random
walk per instrument at the instrument's precision (JPY pairs 3 decimals, XAU 3, others
5), several buckets per side with the best one LAST, and HEARTBEATs. Each profile has its
own spread and latency, so a best-price selection has something to choose from.

Faults per profile, from `--profile NAME:key=value,...` or mid-stream via
`POST /control/{profile}` (JSON; profile "all" = every profile and later ones):
`drop_after` (close each connection after N lines), `stall` (send nothing, not even
heartbeats), `paused` (heartbeats only), `malformed_every` (every Nth line is malformed),
`malformed_next` (the next N lines are malformed), `auth_fail` (answer 401 with OANDA's
error JSON), `token` (only this bearer token is accepted), `rate`, `heartbeat_s`,
`spread_mult`, `latency_ms`.

`GET /stats` counts exactly what was written: PRICE lines per profile and instrument,
malformed lines, heartbeats, connections (and how many were open at once), drops,
refused requests. `--seed` makes the
prices of the n-th connection of a profile the same on every run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from app.settings import load_settings
from app.sources.brokers.oanda import oanda_instrument

log = logging.getLogger("simulator")

AUTH_ERROR = {"errorMessage": "Insufficient authorization to perform request."}
BAD_INSTRUMENTS = {"errorMessage": "Invalid value specified for 'instruments'"}


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    start_mid: float
    decimals: int
    pip: float
    spread_pips: float  # typical best-bucket spread


# What only the simulation needs: where each instrument's walk starts and its typical
# spread in pips. Pip size and quoted decimals come from the service's instrument table
# (config/service.yaml `instruments:`), the one place instrument facts live.
WALKS: dict[str, tuple[float, float]] = {
    "EURUSD": (1.08450, 0.8),
    "GBPUSD": (1.27020, 1.0),
    "USDJPY": (157.312, 0.9),
    "USDCHF": (0.90110, 1.2),
    "AUDUSD": (0.66230, 1.0),
    "USDCAD": (1.36480, 1.3),
    "NZDUSD": (0.60110, 1.4),
    "EURGBP": (0.85370, 1.1),
    "EURJPY": (169.540, 1.6),
    "GBPJPY": (199.810, 2.5),
    "XAUUSD": (2650.150, 30.0),
    "XAGUSD": (30.51200, 25.0),
}


def instrument_specs() -> dict[str, InstrumentSpec]:
    """OANDA instrument name -> spec, for every configured instrument with a walk."""
    instruments = load_settings(os.environ.get("INGEST_CONFIG"), environ={}).instruments
    return {
        oanda_instrument(symbol): InstrumentSpec(
            start, facts.decimals, float(facts.pip), spread_pips
        )
        for symbol, (start, spread_pips) in WALKS.items()
        if (facts := instruments.get(symbol)) is not None
    }


INSTRUMENTS: dict[str, InstrumentSpec] = instrument_specs()


@dataclass
class Profile:
    """How one simulated broker quotes, and which faults it injects."""

    spread_mult: float = 1.0
    latency_ms: float = 20.0
    rate: float = 4.0  # PRICE lines per second per instrument (OANDA conflates to 250 ms)
    heartbeat_s: float = 5.0
    buckets: int = 3
    drop_after: int = 0
    stall: bool = False
    paused: bool = False
    auth_fail: bool = False
    malformed_every: int = 0
    malformed_next: int = 0
    token: str | None = None


DEFAULT_PROFILES: dict[str, dict[str, Any]] = {
    "ic_markets": {"spread_mult": 0.8, "latency_ms": 5.0},
    "pepperstone": {"spread_mult": 1.0, "latency_ms": 15.0},
    "fxcm": {"spread_mult": 1.5, "latency_ms": 40.0},
}


@dataclass
class ProfileStats:
    requests: int = 0
    connections: int = 0
    auth_failures: int = 0
    drops: int = 0
    price_lines: int = 0
    malformed_lines: int = 0
    heartbeats: int = 0
    # Streams open at once: more than one means two clients stream the same account.
    open_streams: int = 0
    max_open_streams: int = 0
    # PRICE lines written on each connection, in connection order.
    connection_lines: list[int] = field(default_factory=list)
    instruments: Counter[str] = field(default_factory=Counter)


class _Clock:
    """RFC 3339 with nanoseconds, with the seconds part cached (it changes once a second)."""

    def __init__(self) -> None:
        self._second = -1
        self._head = ""

    def format(self, ns: int) -> str:
        second, frac = divmod(ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._head}.{frac:09d}Z"


class Market:
    """One "true" mid per instrument, shared by every profile and connection.

    Brokers quote the same market, each with its own spread, noise and latency, so the
    best-price selection compares like with like (independent walks per broker drift
    apart and make the consolidated book cross for minutes).
    """

    STEP_NS = 50_000_000  # the walk moves in 50 ms steps of wall time
    MAX_STEPS = 400

    def __init__(self, seed: str) -> None:
        self._rng = random.Random(f"{seed}:market")
        self._mids: dict[str, float] = {}
        self._at: dict[str, int] = {}
        self._lock = threading.Lock()

    def mid(self, instrument: str, now_ns: int) -> float:
        with self._lock:  # MT5 terminals (devstack.mt5_terminal) ask from their threads
            return self._mid(instrument, now_ns)

    def _mid(self, instrument: str, now_ns: int) -> float:
        spec = INSTRUMENTS[instrument]
        mid = self._mids.get(instrument, spec.start_mid)
        at = self._at.get(instrument, now_ns)
        if now_ns < at:
            return mid  # a late asker (a terminal catching up) never rewinds the walk
        steps = (now_ns - at) // self.STEP_NS
        for _ in range(min(steps, self.MAX_STEPS)):
            mid += self._rng.gauss(0.0, 0.3) * spec.pip
        self._mids[instrument] = mid
        self._at[instrument] = at + steps * self.STEP_NS if steps <= self.MAX_STEPS else now_ns
        return mid


@functools.lru_cache(maxsize=256)
def _template(instrument: str, decimals: int, depth: int) -> str:
    """A PRICE line with %-placeholders: the time, `depth` bids, `depth` asks, closeouts."""
    price = f"%.{decimals}f"
    bids = ",".join(
        f'{{"price":"{price}","liquidity":{(k + 1) * 500000}}}' for k in reversed(range(depth))
    )
    return (
        f'{{"type":"PRICE","time":"%s","bids":[{bids}],"asks":[{bids}],'
        f'"closeoutBid":"{price}","closeoutAsk":"{price}",'
        f'"status":"tradeable","tradeable":true,"instrument":"{instrument}"}}\n'
    )


class Quoter:
    """One connection's quotes around the shared market; deterministic for a seed string."""

    def __init__(
        self, seed: str, instruments: list[str], profile: Profile, market: Market | None = None
    ) -> None:
        self._rng = random.Random(seed)
        self._market = market or Market(seed)
        self._profile = profile
        self._clock = _Clock()
        self.malformed_kind = 0

    def price_line(self, instrument: str, now_ns: int) -> bytes:
        spec = INSTRUMENTS[instrument]
        rng = self._rng
        profile = self._profile
        mid = self._market.mid(instrument, now_ns) + rng.gauss(0.0, 0.1) * spec.pip
        unit = 10.0**-spec.decimals
        spread = max(unit, spec.spread_pips * spec.pip * profile.spread_mult)
        spread *= rng.uniform(0.8, 1.3)
        bid = round((mid - spread / 2) / unit)
        ask = max(bid + 1, round((mid + spread / 2) / unit))
        step = max(1, round(spec.pip * 0.2 / unit))
        depth = max(1, profile.buckets)
        latency_ns = int(profile.latency_ms * rng.uniform(0.5, 1.5) * 1e6)
        stamp = self._clock.format(now_ns - latency_ns)
        # One %-format of a cached template per line instead of one format per price: the
        # same text, measured ~1.5x faster (bench/e2e.py asks one process for 50,000 lines/s).
        # Deeper (worse) buckets first, best last: consumers must pick by price.
        prices = [(bid - k * step) * unit for k in range(depth - 1, -1, -1)]
        prices += [(ask + k * step) * unit for k in range(depth - 1, -1, -1)]
        prices += [(bid - depth * step) * unit, (ask + depth * step) * unit]
        return (_template(instrument, spec.decimals, depth) % (stamp, *prices)).encode()

    def malformed_line(self, instrument: str, now_ns: int) -> bytes:
        """Alternately a truncated line and one with a non-numeric price."""
        line = self.price_line(instrument, now_ns)
        self.malformed_kind += 1
        if self.malformed_kind % 2:
            return line[: len(line) // 2] + b"\n"
        head, sep, tail = line.partition(b'"price":"')
        return head + sep + b"not-a-price" + tail[tail.index(b'"') :]

    def heartbeat_line(self, now_ns: int) -> bytes:
        return f'{{"type":"HEARTBEAT","time":"{self._clock.format(now_ns)}"}}\n'.encode()


class Simulator:
    """The profiles, their counters and the aiohttp application serving them."""

    def __init__(self, seed: int = 1, defaults: dict[str, Any] | None = None) -> None:
        self.seed = seed
        self.market = Market(str(seed))
        self.defaults = dict(defaults or {})
        self.profiles: dict[str, Profile] = {}
        self.stats: dict[str, ProfileStats] = {}
        for name, overrides in DEFAULT_PROFILES.items():
            self.profile(name, **overrides)

    def profile(self, name: str, **overrides: Any) -> Profile:
        """The named profile (created from the defaults when new), updated with `overrides`."""
        profile = self.profiles.get(name)
        if profile is None:
            profile = self.profiles[name] = Profile(**self.defaults)
            self.stats[name] = ProfileStats()
        valid = {f.name: f.type for f in dataclasses.fields(Profile)}
        for key, value in overrides.items():
            if key not in valid:
                raise ValueError(f"unknown profile setting {key!r}; known: {sorted(valid)}")
            setattr(profile, key, value)
        return profile

    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_get(
            "/{profile}/v3/accounts/{account}/pricing/stream", self.handle_stream
        )
        application.router.add_get("/stats", self.handle_stats)
        application.router.add_post("/control/{profile}", self.handle_control)
        return application

    def stats_report(self) -> dict[str, Any]:
        profiles = {
            name: {**dataclasses.asdict(s), "instruments": dict(s.instruments)}
            for name, s in self.stats.items()
        }
        totals = {
            key: sum(p[key] for p in profiles.values())
            for key in ("price_lines", "malformed_lines", "connections", "drops", "requests")
        }
        return {"profiles": profiles, "totals": totals}

    async def handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats_report())

    async def handle_control(self, request: web.Request) -> web.Response:
        name = request.match_info["profile"]
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object")
            if name == "all":
                self.profile("__probe__", **changes)  # validate before applying anywhere
                del self.profiles["__probe__"], self.stats["__probe__"]
                self.defaults.update(changes)
                for profile_name in list(self.profiles):
                    self.profile(profile_name, **changes)
                return web.json_response({"all": changes})
            profile = self.profile(name, **changes)
        except ValueError as exc:
            return web.json_response({"errorMessage": str(exc)}, status=400)
        log.info("control %s: %s", name, changes)
        return web.json_response(dataclasses.asdict(profile))

    async def handle_stream(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["profile"]
        profile = self.profile(name)
        stats = self.stats[name]
        stats.requests += 1
        auth = request.headers.get("Authorization", "")
        token_ok = auth.startswith("Bearer ") and len(auth) > 7
        if profile.token is not None:
            token_ok = auth == f"Bearer {profile.token}"
        if profile.auth_fail or not token_ok:
            stats.auth_failures += 1
            return web.json_response(AUTH_ERROR, status=401)
        instruments = [i for i in request.query.get("instruments", "").split(",") if i]
        if not instruments or any(i not in INSTRUMENTS for i in instruments):
            return web.json_response(BAD_INSTRUMENTS, status=400)
        stats.connections += 1
        quoter = Quoter(
            f"{self.seed}:{name}:{stats.connections}", instruments, profile, self.market
        )
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        resp.force_close()
        await resp.prepare(request)
        stats.open_streams += 1
        stats.connection_lines.append(0)
        connection = len(stats.connection_lines) - 1
        stats.max_open_streams = max(stats.max_open_streams, stats.open_streams)
        try:
            dropped = await self._stream(
                request, resp, profile, stats, quoter, instruments, connection
            )
        except (ConnectionError, asyncio.CancelledError):
            return resp
        finally:
            stats.open_streams -= 1
        if dropped:
            stats.drops += 1
            await resp.write_eof()
        return resp

    async def _stream(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        profile: Profile,
        stats: ProfileStats,
        quoter: Quoter,
        instruments: list[str],
        connection: int,
    ) -> bool:
        """Write lines until the client goes away (False) or a drop is due (True)."""
        loop = asyncio.get_running_loop()
        next_due = loop.time()
        last_heartbeat = loop.time()
        lines_on_connection = 0
        line_no = 0
        while request.transport is not None and not request.transport.is_closing():
            now = loop.time()
            if profile.stall:
                next_due = last_heartbeat = now
                await asyncio.sleep(0.05)
                continue
            out: list[bytes] = []
            prices: list[str] = []
            malformed = 0
            now_ns = time.time_ns()
            slots = 0
            if profile.paused:
                # heartbeats only; a paused fast feed need not wake every 1/rate s
                next_due = now + max(1.0 / profile.rate, 0.05)
            if next_due < now - 1.0:
                next_due = now  # after a stall or rate change: no burst of old slots
            while next_due <= now and slots < 2000:
                for instrument in instruments:
                    if profile.drop_after and lines_on_connection >= profile.drop_after:
                        break
                    line_no += 1
                    lines_on_connection += 1
                    bad = profile.malformed_next > 0 or (
                        profile.malformed_every and line_no % profile.malformed_every == 0
                    )
                    if bad:
                        profile.malformed_next = max(0, profile.malformed_next - 1)
                        out.append(quoter.malformed_line(instrument, now_ns))
                        malformed += 1
                    else:
                        out.append(quoter.price_line(instrument, now_ns))
                        prices.append(instrument)
                next_due += 1.0 / profile.rate
                slots += 1
            heartbeat = now - last_heartbeat >= profile.heartbeat_s
            if heartbeat:
                out.append(quoter.heartbeat_line(now_ns))
                last_heartbeat = now
            if out:
                await resp.write(b"".join(out))
                stats.price_lines += len(prices)
                stats.connection_lines[connection] += len(prices)
                stats.instruments.update(prices)
                stats.malformed_lines += malformed
                stats.heartbeats += heartbeat
            if profile.drop_after and lines_on_connection >= profile.drop_after:
                return True
            wait = min(next_due, last_heartbeat + profile.heartbeat_s) - loop.time()
            await asyncio.sleep(max(wait, 0.001))
        return False


def _parse_profile_arg(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME:key=value,...`; values are JSON scalars (3, 0.5, true) or plain strings."""
    name, _, settings = text.partition(":")
    values: dict[str, Any] = {}
    for item in filter(None, settings.split(",")):
        key, _, raw = item.partition("=")
        try:
            values[key.strip()] = json.loads(raw)
        except ValueError:
            values[key.strip()] = raw  # a plain string, e.g. a token
    return name, values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=4.0, help="PRICE lines/s per instrument")
    parser.add_argument("--heartbeat-s", type=float, default=5.0)
    parser.add_argument(
        "--mt5-port",
        type=int,
        default=0,
        help="also serve the demo MT5 terminals (devstack.mt5_terminal) on this port and the "
        "next two, over the same market",
    )
    parser.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="NAME:key=value,...",
        help="e.g. fxcm:drop_after=500,malformed_every=100 or pepperstone:auth_fail=true",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    simulator = Simulator(args.seed, {"rate": args.rate, "heartbeat_s": args.heartbeat_s})
    for text in args.profile:
        name, values = _parse_profile_arg(text)
        simulator.profile(name, **values)
    if args.mt5_port:
        from devstack.mt5_terminal import start_demo_terminals

        start_demo_terminals(simulator.market, args.host, args.mt5_port, args.seed)
    log.info("OANDA v20 simulator on http://%s:%d/<profile>/v3/...", args.host, args.port)
    web.run_app(simulator.app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
