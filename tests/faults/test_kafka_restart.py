"""Scenario 2: the Kafka broker is stopped for a few seconds and started again (same data).

(a) Pipeline: with the deterministic 100,000-tick input half processed, Kafka goes away.
The same worker process must carry on by itself once Kafka is back: every distinct
output of the clean run is there and nothing else, JetStream holds exactly the distinct
messages, and the duplicates at-least-once allows are counted and reported.

(b) Live source: the simulator feeds a worker with brokers enabled while Kafka is down.
The source buffers (back-pressure, retries) instead of dropping: once the simulator is
paused and the writer drained, every PRICE line sent is a record in raw.broker.ticks or
a source reject.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.pipeline.topics import MARKET_DATA_REJECTS, RAW_BROKER_TICKS
from app.wire import codec
from devstack import stack as local_stack
from devstack.stack import StackConfig
from tests.faults.conftest import TOTAL_TICKS, CleanRun, run_tag
from tests.support.faults_b import broker_env, crash_lines, wait_for
from tests.support.pipeline import (
    collect_run,
    compare_runs,
    delete_stream,
    describe_differences,
    load_raw,
    nats_env,
    output_count,
    read_all,
    wait_complete,
    wait_output,
)
from tests.support.simulator import SimulatorProcess
from tests.support.worker import Worker

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PARTITIONS = 8  # the configured count; the scale-out scenario shares this clean run
OUTAGE_S = 5.0


def records_per_feed(messages: list[tuple[bytes, bytes]]) -> Counter[tuple[str, str]]:
    """Input records per (symbol, broker): what the quality table must account for."""
    return Counter(
        (record.tick.symbol, record.tick.source)
        for _, value in messages
        for record in codec.decode_raw_batch(value).records
    )


def quality_accounts(quality_view: dict[str, Any]) -> Counter[tuple[str, str]]:
    """Accepted + rejected ticks per (symbol, broker) per the quality table: counted by
    the worker's state, independently of the output topics."""
    return Counter(
        {
            (symbol, broker): m["ticks"] + m["rejected"]
            for symbol, entry in quality_view.items()
            for broker, m in entry.get("metrics", {}).items()
        }
    )


async def kafka_outage(stack: StackConfig, seconds: float) -> float:
    """Stop the broker, wait `seconds`, start it again (always); returns the time it was
    unreachable, start-up included."""
    stopped = time.monotonic()
    try:
        await asyncio.to_thread(local_stack.stop, stack, "kafka")
        await asyncio.sleep(seconds)
    finally:
        await asyncio.to_thread(local_stack.start, stack, "kafka")
    return time.monotonic() - stopped


async def test_kafka_restart_mid_stream_loses_nothing(
    stack: StackConfig, clean_run: CleanRun, fresh_input, input_messages, data_dir: Path, report
) -> None:
    clean = await clean_run(PARTITIONS)
    # The second half is loaded only after the outage, so the worker certainly has work
    # left when Kafka comes back, however fast it got through the first half.
    half = len(input_messages) // 2
    await fresh_input(PARTITIONS, upto=half)
    tag = run_tag()
    stream = f"F{tag.upper()}"
    env = {**nats_env(tag), "INGEST__KAFKA__PARTITIONS": str(PARTITIONS)}
    bootstrap = stack.kafka_bootstrap
    worker = Worker(stack, data_dir, f"kafka-{tag}", env=env).start()
    pid = worker.proc.pid  # type: ignore[union-attr]
    try:
        at_stop = await wait_output(bootstrap, len(clean.stream) // 4)
        down_s = await kafka_outage(stack, OUTAGE_S)
        back = time.monotonic()
        # The output count right after the restart: whatever was acked before the stop.
        before = await output_count(bootstrap)
        await load_raw(bootstrap, input_messages[half:], PARTITIONS)
        await wait_output(bootstrap, before + 1)
        recovery_s = time.monotonic() - back
        try:
            await wait_complete(bootstrap, stack.nats_url, stream, clean, timeout=30)
        except AssertionError as incomplete:
            # Compare anyway: the differences say more than "incomplete".
            print(incomplete)
        faulty = await collect_run(bootstrap, stack.nats_url, stream, [worker])
        same_process = worker.proc.poll() is None and worker.proc.pid == pid  # type: ignore[union-attr]
        log = worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()
        await delete_stream(stack.nats_url, stream)

    result = compare_runs(clean, faulty)
    report(
        f"Kafka restart (pipeline): {TOTAL_TICKS} ticks in, {result.expected} messages"
        f" ({clean.ticks_out} ticks) out, Kafka stopped at {at_stop} for {down_s:.1f}s"
        f" (start-up included); lost={result.lost} extra={result.extra}"
        f" duplicated={result.duplicated} (rejects duplicated={faulty.reject_duplicates()})"
        f" jetstream={result.jetstream_count}; output growing again {recovery_s:.1f}s after"
        f" Kafka was back, same worker pid: {same_process}"
    )
    assert same_process, worker.log_tail()
    assert crash_lines(log) == [], "\n".join(crash_lines(log)[:10])
    # The reference itself: its state counted every input record once.
    expected = records_per_feed(input_messages)
    assert quality_accounts(clean.tables["/tables/quality"]) == expected
    assert quality_accounts(faulty.tables["/tables/quality"]) == expected
    assert result.ok, describe_differences(clean, faulty)
    assert result.jetstream_count == len(faulty.stream)


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(tmp_path / "simulator.log", "--seed", "11", "--rate", "10")
    yield sim
    sim.stop()


async def test_kafka_restart_live_source_accounts_every_line(
    clean_kafka: StackConfig, tmp_path: Path, app_id: str, simulator: SimulatorProcess, report
) -> None:
    sim = simulator
    env = broker_env(sim, backoff_initial_s="0.1", backoff_max_s="0.5")
    with Worker(clean_kafka, tmp_path, app_id, env=env) as worker:
        pid = worker.proc.pid  # type: ignore[union-attr]
        await wait_for(
            lambda: worker.health()["broker_writer"]["records_sent"] >= 300, 30, "300 raw records"
        )
        sent_before = sim.stats()["totals"]["price_lines"]
        held: list[int] = []  # records buffered by the writer, sampled during the outage

        async def sample_buffer() -> None:
            while True:
                held.append(worker.health()["broker_writer"]["buffered"])
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample_buffer())
        try:
            down_s = await kafka_outage(clean_kafka, OUTAGE_S)
        finally:
            sampler.cancel()
        back = time.monotonic()
        confirmed = worker.health()["broker_writer"]["records_sent"]
        await wait_for(
            lambda: worker.health()["broker_writer"]["records_sent"] > confirmed + 50,
            60,
            "raw records confirmed again after the restart",
            every=0.1,
        )
        recovery_s = time.monotonic() - back

        sim.control("all", paused=True)
        await asyncio.sleep(1)  # lines already on the wire reach the client
        sent = sim.stats()
        price_lines = sent["totals"]["price_lines"]
        malformed = sent["totals"]["malformed_lines"]

        def writer_done() -> bool:
            w = worker.health()["broker_writer"]
            return w["buffered"] == 0 and w["records_sent"] + w["rejects_sent"] >= (
                price_lines + malformed
            )

        await wait_for(writer_done, 60, "the writer to confirm every record")
        writer = worker.health()["broker_writer"]
        alive = worker.proc.poll() is None and worker.proc.pid == pid  # type: ignore[union-attr]
        log = worker.log_path.read_text(errors="replace")

    bootstrap = clean_kafka.kafka_bootstrap
    raw = Counter(
        (record.source, record.payload)
        for _, value in await read_all(bootstrap, RAW_BROKER_TICKS)
        for record in codec.decode_raw_batch(value).records
    )
    source_rejects = [
        r
        for r in map(
            codec.decode_rejection, (v for _, v in await read_all(bootstrap, MARKET_DATA_REJECTS))
        )
        if r.stage == "source"
    ]
    n_raw = sum(raw.values())
    duplicated = n_raw - len(raw)
    lost = price_lines + malformed - len(raw) - len(source_rejects)
    report(
        f"Kafka restart (live source): {price_lines} price lines sent ({price_lines - sent_before}"
        f" from just before the stop on), raw records={n_raw} distinct={len(raw)} source"
        f" rejects={len(source_rejects)} lost={lost} duplicated={duplicated}; Kafka down"
        f" {down_s:.1f}s, writer held up to {max(held, default=0)} records, send"
        f" failures={writer['send_failures']}, confirming again {recovery_s:.1f}s after Kafka"
        f" was back"
    )
    assert alive, "the worker did not survive the Kafka restart"
    assert crash_lines(log) == [], "\n".join(crash_lines(log)[:10])
    assert max(held, default=0) > 0, "nothing was held back while Kafka was down"
    assert lost == 0
    assert n_raw + len(source_rejects) == price_lines + malformed
