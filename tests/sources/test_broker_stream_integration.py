"""Simulator -> real worker (broker clients, batching writer) -> real Kafka: exact accounting."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.wire import codec
from devstack.stack import StackConfig
from tests.support.kafka import read_topic
from tests.support.simulator import SimulatorProcess
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

BROKERS = ("ic_markets", "pepperstone", "fxcm")


@pytest.fixture
def simulator_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[SimulatorProcess] = []

    def start(*args: str) -> SimulatorProcess:
        sim = SimulatorProcess(tmp_path / "simulator.log", *args)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def broker_env(sim: SimulatorProcess, **knobs: str) -> dict[str, str]:
    env = {}
    for name in BROKERS:
        prefix = f"INGEST__BROKERS__{name.upper()}__"
        env[prefix + "ENABLED"] = "true"  # tests disable brokers by default (conftest)
        env[prefix + "STREAM_URL"] = f"{sim.url}/{name}"
        env[f"OANDA_TOKEN_{name.upper()}"] = f"token-of-{name}"
        for knob, value in knobs.items():
            env[prefix + knob.upper()] = value
    return env


async def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.3)


async def test_every_price_line_sent_is_in_kafka_or_rejects(
    clean_kafka: StackConfig, tmp_path: Path, app_id: str, simulator_factory: Any
) -> None:
    sim = simulator_factory(
        "--seed", "3", "--rate", "10", "--heartbeat-s", "1",
        "--profile", "fxcm:drop_after=60",
        "--profile", "pepperstone:malformed_every=40",
    )  # fmt: skip
    env = broker_env(sim, backoff_initial_s="0.1", backoff_max_s="0.5")
    with Worker(clean_kafka, tmp_path, app_id, env=env) as worker:
        await wait_for(
            lambda: (
                sim.stats()["profiles"]["fxcm"]["drops"] >= 3
                and sim.stats()["profiles"]["pepperstone"]["malformed_lines"] >= 3
            ),
            timeout=60,
            what="three drops and three malformed lines",
        )
        sim.control("all", paused=True)  # heartbeats only from here on
        time.sleep(0.5)
        sent = sim.stats()
        expected = sent["totals"]["price_lines"] + sent["totals"]["malformed_lines"]

        def writer_done() -> bool:
            w = worker.health()["broker_writer"]
            return w["records_sent"] + w["rejects_sent"] >= expected and w["buffered"] == 0

        await wait_for(writer_done, timeout=30, what="the writer to confirm every record")
        health = worker.health()
        writer = health["broker_writer"]
        connections = health["broker_connections"]
        enabled = {n: c["status"] for n, c in connections.items() if c["status"] != "disabled"}
        assert enabled == dict.fromkeys(BROKERS, "connected")
        assert connections["fxcm"]["reconnects"] >= 3
        assert health["status"] == "healthy"

    raw_messages = writer["messages_sent"] - writer["rejects_sent"]
    bootstrap = clean_kafka.kafka_bootstrap
    raw = await read_topic(bootstrap, "raw.broker.ticks", expect=raw_messages, idle=1)
    rejects = await read_topic(
        bootstrap, "market-data-rejects", expect=writer["rejects_sent"], idle=1
    )
    assert len(raw) == raw_messages
    records = Counter()
    for message in raw:
        for record in codec.decode_raw_batch(message.value).records:
            assert record.symbol == record.tick.symbol
            assert record.symbol in codec.key_symbols(message.key)
            assert record.format == "oanda_v20" and record.payload.startswith(b'{"type":"PRICE"')
            instrument = json.loads(record.payload)["instrument"]
            records[(record.source, instrument)] += 1
    source_rejects = [codec.decode_rejection(m.value) for m in rejects]
    source_rejects = [r for r in source_rejects if r.stage == "source"]

    sent_per_instrument = Counter(
        {
            (name, instrument): n
            for name, profile in sent["profiles"].items()
            for instrument, n in profile["instruments"].items()
        }
    )
    assert records == sent_per_instrument
    assert len(source_rejects) == sent["totals"]["malformed_lines"]
    assert sum(records.values()) + len(source_rejects) == expected
    assert {r.record.source for r in source_rejects} == {"pepperstone"}


async def test_bad_token_is_reported_and_backed_off(
    clean_kafka: StackConfig, tmp_path: Path, app_id: str, simulator_factory: Any
) -> None:
    sim = simulator_factory("--profile", "ic_markets:token=the-real-token")
    env = broker_env(sim, auth_backoff_s="2")
    env["OANDA_TOKEN_IC_MARKETS"] = "a-wrong-token-value"
    env["INGEST__BROKERS__PEPPERSTONE__ENABLED"] = "false"
    env["INGEST__BROKERS__FXCM__ENABLED"] = "false"
    with Worker(clean_kafka, tmp_path, app_id, env=env) as worker:
        await wait_for(
            lambda: worker.health()["broker_connections"]["ic_markets"]["status"] == "auth_failed",
            timeout=20,
            what="auth_failed on /health",
        )
        first = sim.stats()["profiles"]["ic_markets"]["requests"]
        time.sleep(4.5)
        attempts = sim.stats()["profiles"]["ic_markets"]["requests"] - first
        health = worker.health()
        log = worker.log_tail(400)
    assert attempts <= 3, f"{attempts} attempts in 4.5 s with auth_backoff_s=2"
    ic = health["broker_connections"]["ic_markets"]
    assert "Insufficient authorization to perform request." in ic["last_error"]
    assert health["broker_connections"]["fxcm"] == {"status": "disabled"}
    assert health["status"] == "degraded"
    assert "ic_markets: auth_failed" in health["problems"]["broker_connections"]
    assert "auth_failed" in log and "Insufficient authorization" in log
    assert "a-wrong-token-value" not in log
