"""The series added for the alerts: broker enabled flag, collector state, failure counter."""

from __future__ import annotations

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest

from app.ops.health import HealthRegistry
from app.ops.metrics import LiveStateCollector
from app.settings import CollectorSettings
from app.sources.collectors.registry import COLLECTOR_CLASSES


def sample(text: str, name: str) -> float | None:
    """Value of the sample line `name value` in the exposition text (None when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


class _NoSink:
    async def raw(self, key: str, record: object) -> None:
        raise AssertionError("nothing is fetched from a closed port")

    async def reject(self, key: str, rejection: bytes) -> None:
        raise AssertionError("nothing is fetched from a closed port")


def _scrape(health: HealthRegistry) -> str:
    registry = CollectorRegistry()
    registry.register(LiveStateCollector(health))
    return generate_latest(registry).decode()


def test_disabled_brokers_are_marked_so_feed_down_skips_them() -> None:
    health = HealthRegistry("data-ingestion", "1")
    health.add_section(
        "broker_connections",
        lambda: {
            "fxcm": {"status": "auth_failed", "reconnects": 1},
            "oanda": {"status": "disabled"},
        },
    )
    text = _scrape(health)
    assert sample(text, 'ingest_source_enabled{source="fxcm"}') == 1.0
    assert sample(text, 'ingest_source_connected{source="fxcm"}') == 0.0
    assert sample(text, 'ingest_source_enabled{source="oanda"}') == 0.0


async def test_failing_collector_state_reaches_the_metrics() -> None:
    """A real collector polling a closed port: its /health state becomes the series that
    IngestCollectorFailing and the dashboard read."""
    cfg = CollectorSettings(
        base_url="http://127.0.0.1:9",  # discard port: nothing listens
        interval_s=60,
        timeout_s=2,
        backoff_initial_s=1.0,
        backoff_max_s=30.0,
    )
    async with aiohttp.ClientSession() as session:
        ecb = COLLECTOR_CLASSES["ecb"]("ecb", cfg, _NoSink(), session)  # type: ignore[arg-type]
        for _ in range(3):
            await ecb.poll_once()
    health = HealthRegistry("data-ingestion", "1")
    health.add_section("collectors", lambda: {"ecb": ecb.health.as_json()})
    text = _scrape(health)
    labels = 'collector="ecb",provider="ecb"'
    assert sample(text, f"ingest_collector_consecutive_failures{{{labels}}}") == 3.0
    assert sample(text, f"ingest_collector_failures_total{{{labels}}}") == 3.0
    assert sample(text, f"ingest_collector_polls_total{{{labels}}}") == 3.0
    assert sample(text, f"ingest_collector_records_total{{{labels}}}") == 0.0
    assert sample(text, f'ingest_collector_status{{{labels},status="failing"}}') == 1.0
    assert sample(text, f'ingest_collector_status{{{labels},status="ok"}}') == 0.0
    assert sample(text, f'ingest_collector_status{{{labels},status="missing_api_key"}}') == 0.0
    # After a success the streak resets but the counter keeps the history.
    ecb.health.consecutive_failures = 0
    ecb.health.status = "ok"
    text = _scrape(health)
    assert sample(text, f"ingest_collector_consecutive_failures{{{labels}}}") == 0.0
    assert sample(text, f"ingest_collector_failures_total{{{labels}}}") == 3.0
    assert sample(text, f'ingest_collector_status{{{labels},status="ok"}}') == 1.0
