"""Scenario 7: the broker feeds misbehave (drops, a stall, malformed lines, 401s) while a
real worker ingests them; afterwards every PRICE line the simulator sent is accounted for.

simulator /stats (price + malformed lines sent)
  == records in raw.broker.ticks + source rejects, per broker and instrument, and
every raw record == accepted by the processor (quality table) + a validation reject.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core.reasons import STAGE_CANDLE, STAGE_SOURCE
from app.pipeline.topics import MARKET_DATA_REJECTS, RAW_BROKER_TICKS
from app.wire import codec
from devstack.stack import StackConfig
from tests.support.faults_b import (
    BROKERS,
    accepted_by_quality,
    broker_env,
    crash_lines,
    wait_for,
)
from tests.support.kafka import read_topic
from tests.support.simulator import SimulatorProcess
from tests.support.worker import Worker

pytestmark = [pytest.mark.integration, pytest.mark.faults]

HEARTBEAT_TIMEOUT_S = 2.0
MIN_PRICE_LINES = 2000


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(tmp_path / "simulator.log", "--seed", "7", "--rate", "10")
    yield sim
    sim.stop()


def statuses(worker: Worker) -> dict[str, str]:
    connections = worker.health()["broker_connections"].items()
    return {n: c["status"] for n, c in connections if c["status"] != "disabled"}


async def test_source_faults_every_price_line_accounted(
    clean_kafka: StackConfig, tmp_path: Path, app_id: str, simulator: SimulatorProcess
) -> None:
    sim = simulator
    sim.control("all", heartbeat_s=0.5)
    env = broker_env(
        sim,
        heartbeat_timeout_s=str(HEARTBEAT_TIMEOUT_S),
        backoff_initial_s="0.1",
        backoff_max_s="0.5",
        auth_backoff_s="1",
    )
    seen: list[dict[str, Any]] = []  # /health answers during the faults
    with Worker(clean_kafka, tmp_path, app_id, env=env) as worker:
        pid = worker.proc.pid  # type: ignore[union-attr]
        connected = dict.fromkeys(BROKERS, "connected")
        await wait_for(lambda: statuses(worker) == connected, 30, "three connected brokers")

        # Drops and malformed lines run for the rest of the scenario.
        sim.control("fxcm", drop_after=40)
        sim.control("pepperstone", malformed_every=25)

        # A stall longer than the heartbeat timeout: the client must give up and reconnect.
        sim.control("ic_markets", stall=True)
        stalled, stalled_wall = time.monotonic(), time.time()

        def ic_timed_out() -> bool:
            # The stalled server still accepts a new connection, so "connected" comes back
            # at once: the evidence is the heartbeat-timeout error stamped after the stall.
            ic = worker.health()["broker_connections"]["ic_markets"]
            return "heartbeat" in (ic["last_error"] or "") and ic["last_error_time"] > stalled_wall

        await wait_for(ic_timed_out, 20, "the ic_markets heartbeat timeout")
        sim.control("ic_markets", stall=False)
        ticks_before = worker.health()["broker_connections"]["ic_markets"]["ticks_total"]
        await wait_for(
            lambda: (
                statuses(worker)["ic_markets"] == "connected"
                and worker.health()["broker_connections"]["ic_markets"]["ticks_total"]
                > ticks_before
            ),
            20,
            "ic_markets ticks again",
        )
        stall_recovery_s = time.monotonic() - stalled

        # 401s for a while, then the token works again.
        # 401 applies to new requests: a drop ends the open stream so the client must ask.
        sim.control("pepperstone", auth_fail=True, drop_after=1)
        failed_at = time.monotonic()

        def auth_failed() -> bool:
            h = worker.health()
            seen.append(h)
            return h["broker_connections"]["pepperstone"]["status"] == "auth_failed"

        await wait_for(auth_failed, 30, "pepperstone auth_failed on /health")
        await wait_for(
            lambda: sim.stats()["profiles"]["pepperstone"]["auth_failures"] >= 2, 20, "two 401s"
        )
        sim.control("pepperstone", auth_fail=False, drop_after=0)
        await wait_for(lambda: statuses(worker) == connected, 30, "all brokers connected again")
        auth_recovery_s = time.monotonic() - failed_at
        await wait_for(
            lambda: (
                sim.stats()["profiles"]["fxcm"]["drops"] >= 3
                and sim.stats()["profiles"]["pepperstone"]["malformed_lines"] >= 3
            ),
            30,
            "three fxcm drops and three malformed lines",
        )
        await wait_for(
            lambda: sim.stats()["totals"]["price_lines"] >= MIN_PRICE_LINES,
            60,
            f"{MIN_PRICE_LINES} price lines",
        )

        # Stop the prices (heartbeats continue) and let everything drain.
        sim.control("all", paused=True)
        time.sleep(1)
        sent = sim.stats()
        price_lines = sent["totals"]["price_lines"]
        malformed = sent["totals"]["malformed_lines"]

        def writer_done() -> bool:
            w = worker.health()["broker_writer"]
            return w["records_sent"] + w["rejects_sent"] >= price_lines + malformed and (
                w["buffered"] == 0
            )

        await wait_for(writer_done, 30, "the writer to confirm every record")
        await wait_for(
            lambda: worker.health()["aggregation_metrics"]["records_processed"] >= price_lines,
            60,
            "the processor to take every raw record",
        )
        accepted = accepted_by_quality(worker.get_json("/tables/quality"))
        final = worker.health()
        alive = worker.proc.poll() is None and worker.proc.pid == pid  # type: ignore[union-attr]
        log = worker.log_path.read_text(errors="replace")

    bootstrap = clean_kafka.kafka_bootstrap
    raw_messages = await read_topic(bootstrap, RAW_BROKER_TICKS, idle=2)
    raw_locations: set[tuple[int, int, int]] = set()
    raw_records: Counter[tuple[str, str]] = Counter()
    for message in raw_messages:
        for index, record in enumerate(codec.decode_raw_batch(message.value).records):
            raw_locations.add((message.partition, message.offset, index))
            raw_records[(record.source, record.tick.symbol)] += 1
    n_raw = sum(raw_records.values())
    rejects = [codec.decode_rejection(m.value) for m in await read_topic(
        bootstrap, MARKET_DATA_REJECTS, expect=malformed + n_raw - accepted, idle=2
    )]  # fmt: skip
    source_rejects = [r for r in rejects if r.stage == STAGE_SOURCE]
    # A tick that came too late for a candle already final is still accepted (it is in
    # market-data-stream); its "candle" reject says so, and is not a processing reject.
    late_for_candle = [r for r in rejects if r.stage == STAGE_CANDLE]
    processing = Counter(
        (r.lineage.partition, r.lineage.offset, r.lineage.index)
        for r in rejects
        if r.stage not in (STAGE_SOURCE, STAGE_CANDLE)
    )
    duplicated = sum(n - 1 for n in processing.values() if n > 1)
    sent_per_instrument = Counter(
        {
            (name, instrument.replace("_", "")): n
            for name, profile in sent["profiles"].items()
            for instrument, n in profile["instruments"].items()
        }
    )
    lost_at_source = price_lines + malformed - n_raw - len(source_rejects)
    lost_in_processing = n_raw - accepted - sum(processing.values())
    print(
        f"\nscenario 7 source faults: price lines={price_lines} malformed={malformed}"
        f" raw records={n_raw} source rejects={len(source_rejects)} accepted={accepted}"
        f" validation rejects={sum(processing.values())}"
        f" late for a candle={len(late_for_candle)} lost={lost_at_source}"
        f"+{lost_in_processing} duplicated={duplicated}"
        f" drops={sent['totals']['drops']} 401s={sent['profiles']['pepperstone']['auth_failures']}"
        f" stall recovery={stall_recovery_s:.1f}s auth recovery={auth_recovery_s:.1f}s"
    )
    assert alive
    assert crash_lines(log) == [], "\n".join(crash_lines(log)[:10])
    assert any(
        h["broker_connections"]["pepperstone"]["status"] == "auth_failed"
        and h["status"] == "degraded"
        and "pepperstone: auth_failed" in h["problems"]["broker_connections"]
        for h in seen
    )
    assert final["status"] == "healthy"
    assert final["broker_connections"]["fxcm"]["reconnects"] >= 3
    assert final["broker_connections"]["ic_markets"]["reconnects"] >= 1
    # Source: every line the simulator wrote is a raw record or a source reject.
    assert raw_records == sent_per_instrument
    assert len(source_rejects) == malformed
    assert {r.record.source for r in source_rejects} == {"pepperstone"}
    assert lost_at_source == 0
    # Processing: every raw record is accepted or rejected once, at its own place.
    assert duplicated == 0
    assert set(processing) <= raw_locations
    assert {(r.lineage.partition, r.lineage.offset, r.lineage.index) for r in late_for_candle} <= (
        raw_locations
    )
    assert lost_in_processing == 0, [
        (r.stage, list(r.reasons), r.lineage.partition, r.lineage.offset, r.lineage.index)
        for r in rejects
        if r.stage != STAGE_SOURCE
    ][:10]
