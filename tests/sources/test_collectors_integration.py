"""All eight collectors in a real worker against real Kafka, providers served locally."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.wire import codec
from devstack.stack import StackConfig
from tests.sources.collectors.provider_server import (
    Answer,
    ProviderServer,
    fixture,
    start_provider_server,
)
from tests.support.kafka import read_topic
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

ROUTES = {
    "/v8/finance/chart/^GSPC": ("yahoo", "chart_gspc.json"),
    "/fred/series/observations": ("fred", "observations_dgs10.json"),
    "/simple/price": ("coingecko", "simple_price.json"),
    "/stats/eurofxref/eurofxref-daily.xml": ("ecb", "eurofxref-daily.xml"),
    "/query": ("alphavantage", "eurusd.json"),
    "/ff_calendar_thisweek.json": ("forexfactory", "ff_calendar_thisweek.json"),
    "/fng/": ("feargreed", "fng.json"),
    "/v6/latest/USD": ("exchangerate_api", "latest_usd.json"),
}
# distinct provider:series per provider in those fixtures
EXPECTED = Counter(
    yahoo=1, fred=1, coingecko=2, ecb=7, alphavantage=1, forexfactory=5, feargreed=1,
    exchangerate_api=7,
)  # fmt: skip
PARAMS = {
    "YAHOO": ("SYMBOLS", '["^GSPC"]'),
    "FRED": ("SERIES", '["DGS10"]'),
    "COINGECKO": ("IDS", '["bitcoin", "ethereum"]'),
    "ALPHAVANTAGE": ("PAIRS", '["EUR/USD"]'),
}


@pytest.fixture
async def providers() -> AsyncIterator[ProviderServer]:
    async for srv in start_provider_server():
        for path, (provider, name) in ROUTES.items():
            srv.serve(path, Answer(fixture(provider, name)))
        yield srv


def worker_env(url: str) -> dict[str, str]:
    env = {
        "FRED_API_KEY": "fred-test-key",
        "ALPHAVANTAGE_API_KEY": "av-test-key",
        **{
            f"INGEST__BROKERS__{b}__ENABLED": "false" for b in ("IC_MARKETS", "PEPPERSTONE", "FXCM")
        },
    }
    for provider in EXPECTED:
        prefix = f"INGEST__COLLECTORS__{provider.upper()}__"
        env[prefix + "ENABLED"] = "true"
        env[prefix + "BASE_URL"] = url
        env[prefix + "INTERVAL_S"] = "1.5"
    for name, (param, value) in PARAMS.items():
        env[f"INGEST__COLLECTORS__{name}__PARAMS__{param}"] = value
    return env


async def test_all_eight_collectors_reach_the_context_stream_once(
    clean_kafka: StackConfig, tmp_path: Path, app_id: str, providers: ProviderServer
) -> None:
    worker = Worker(clean_kafka, tmp_path, app_id, env=worker_env(providers.url))
    # start() blocks while waiting for the worker; the provider server lives on this loop.
    await asyncio.to_thread(worker.start)
    try:
        total = sum(EXPECTED.values())
        records = await read_topic(
            clean_kafka.kafka_bootstrap, "market-context-stream", expect=total, timeout=60
        )
        contexts = [(r.key, codec.decode_market_context(r.value)) for r in records]
        assert Counter(c.provider for _k, c in contexts) == EXPECTED, worker.log_tail()
        assert all(k == f"{c.provider}:{c.series}".encode() for k, c in contexts)
        by_key = {k.decode(): c for k, c in contexts}
        assert by_key["fred:DGS10"].value == 4.27 and by_key["fred:DGS10"].category == "macro"
        assert by_key["feargreed:crypto_fear_greed"].attributes["classification"] == "Fear"
        claims = by_key["forexfactory:USD:Unemployment Claims:2024-03-21T08:30:00-04:00"]
        assert claims.attributes["impact"] == "High" and claims.value == 213000.0

        # Polls go on with unchanged answers: nothing new may reach the stream.
        hits = {path: providers.hits(path) for path in ROUTES}
        while any(providers.hits(path) < hits[path] + 2 for path in ROUTES):
            await asyncio.sleep(0.5)
        again = await read_topic(clean_kafka.kafka_bootstrap, "market-context-stream", idle=3)
        assert len(again) == total

        health = await asyncio.to_thread(worker.health)
        assert health["status"] == "healthy", health
        states = health["collectors"]
        assert {name: s["status"] for name, s in states.items()} == dict.fromkeys(EXPECTED, "ok")
        assert "fred-test-key" not in str(health)
    finally:
        await asyncio.to_thread(worker.stop)
