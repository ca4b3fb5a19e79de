"""The test suite's own Kafka and NATS, on ports and a run dir of its own.

The stack is started once per session (devstack.stack, real processes) and stopped at the
end unless KEEP_TEST_STACK=1. TEST_PORT_BASE moves all ports, so several checkouts can
run their suites side by side without touching a developer's running stack.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import StackConfig, down, up
from tests.support.kafka import delete_all_topics

REPO = Path(__file__).resolve().parent.parent
# Below Linux's ephemeral range (32768-60999): an outgoing connection's TIME_WAIT socket on
# one of our ports would otherwise block the broker from binding it.
PORT_BASE = int(os.environ.get("TEST_PORT_BASE", "24000"))


@pytest.fixture(scope="session")
def stack() -> Iterator[StackConfig]:
    cfg = StackConfig(
        run_dir=REPO / ".run" / f"test-stack-{PORT_BASE}",
        kafka_port=PORT_BASE + 92,
        controller_port=PORT_BASE + 93,
        nats_port=PORT_BASE + 222,
        nats_monitor_port=PORT_BASE + 822,
    )
    up(cfg)
    yield cfg
    if os.environ.get("KEEP_TEST_STACK") != "1":
        down(cfg, purge=True)


@pytest.fixture
async def clean_kafka(stack: StackConfig) -> StackConfig:
    """Empty Kafka: every topic from an earlier test is deleted."""
    await delete_all_topics(stack.kafka_bootstrap)
    return stack


@pytest.fixture
def app_id() -> str:
    """A fresh consumer group / table namespace per test."""
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session", autouse=True)
def brokers_disabled_by_default() -> Iterator[None]:
    """Workers started by tests do not connect to the configured brokers unless a test
    enables them (INGEST__BROKERS__<NAME>__ENABLED=true in the Worker env): without a
    simulator and tokens they would only report no_token and make /health "degraded"."""
    from app.settings import load_settings

    with pytest.MonkeyPatch.context() as patch:
        for name in load_settings().brokers:
            patch.setenv(f"INGEST__BROKERS__{name.upper()}__ENABLED", "false")
        yield
