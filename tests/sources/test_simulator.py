"""The price simulator: precision, best bucket last, determinism, pause, control errors."""

from __future__ import annotations

import asyncio
import json

from aiohttp.test_utils import TestClient, TestServer

from app.core.models import format_price
from app.sources.brokers.oanda import parse_oanda_line
from devstack.simulator import Market, Profile, Quoter, Simulator


def test_prices_have_the_instrument_precision_and_best_bucket_last() -> None:
    quoter = Quoter("1", ["EUR_USD", "USD_JPY", "XAU_USD"], Profile(buckets=3))
    for instrument, decimals in (("EUR_USD", 5), ("USD_JPY", 3), ("XAU_USD", 3)):
        line = quoter.price_line(instrument, 1_750_000_000_000_000_000)
        tick = parse_oanda_line(line, "sim", 0)
        assert tick.ask - tick.bid > 0
        assert len(format_price(tick.bid).split(".")[1]) <= decimals
        assert b'"liquidity":500000}]' in line, "the best (smallest) bucket is listed last"


def test_same_seed_same_prices() -> None:
    lines = [
        [Quoter(seed, ["EUR_USD"], Profile()).price_line("EUR_USD", 10**18) for _ in range(3)]
        for seed in ("7:fxcm:1", "7:fxcm:1", "7:fxcm:2")
    ]
    assert lines[0] == lines[1] != lines[2]


async def test_paused_sends_heartbeats_only_and_control_validates() -> None:
    sim = Simulator(seed=1, defaults={"rate": 100.0, "heartbeat_s": 0.1})
    async with TestClient(TestServer(sim.app())) as client:
        bad = await client.post("/control/fxcm", json={"no_such_knob": 1})
        assert bad.status == 400 and "no_such_knob" in (await bad.json())["errorMessage"]
        ok = await client.post("/control/all", json={"paused": True})
        assert ok.status == 200
        resp = await client.get(
            "/fxcm/v3/accounts/1/pricing/stream?instruments=EUR_USD",
            headers={"Authorization": "Bearer t"},
        )
        await asyncio.sleep(0.35)
        resp.close()
        stats = (await (await client.get("/stats")).json())["profiles"]["fxcm"]
    assert stats["price_lines"] == 0 and stats["heartbeats"] >= 2


def test_profiles_quote_one_shared_market() -> None:
    """Brokers differ by spread and noise, not by drifting apart: their mids stay close."""
    market = Market("3")
    quoters = [Quoter(f"3:{n}", ["EUR_USD"], Profile(), market) for n in ("a", "b", "c")]
    worst = 0.0
    for step in range(2000):  # 100 s of market time
        now = 10**18 + step * 50_000_000
        mids = []
        for quoter in quoters:
            line = json.loads(quoter.price_line("EUR_USD", now))
            bid = max(float(b["price"]) for b in line["bids"])
            ask = min(float(a["price"]) for a in line["asks"])
            mids.append((bid + ask) / 2)
        worst = max(worst, max(mids) - min(mids))
    assert worst < 0.0002  # two pips, while the walk itself moves far more over 100 s
