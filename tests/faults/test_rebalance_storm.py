"""Scenario: a rebalance storm. Three workers of one app; for 60 s, every few seconds one is
SIGKILLed or a new one (empty data dir) joins, 1 to 3 alive, while 100k ticks flow in.

Every rebalance revokes every partition of every member (eager protocol), seeks back to
the committed offsets and recovers the tables from their changelogs: the path where faust
delivered records fetched before a seek after it, recorded spurious offset gaps, cleared
the records fetched while the seek was awaited and fetched paused partitions through an
empty filter (issue #17, app/compat/faust_kafka.py adaptations 7, 8, 10 and 11). After the
storm the output must be the clean run's, message for message, in market-data-stream and
in JetStream, and the group's commits must reach the end of the log.

Duplicates are expected (at-least-once): a raw message is read again only by the next
owner of its partition, and only if its offset was not committed when the ownership
changed. Commits follow processing within the commit interval (1 s), so what one change
can re-read is at most what its partitions took in since their previous change, and that
is bounded by what was loaded in the last STEP_S + session timeout seconds. Hence:
duplicates <= changes x messages loaded per (STEP_S + session timeout), and no output
more often than 1 + changes.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.pipeline.topics import MARKET_DATA_STREAM, RAW_BROKER_TICKS
from devstack.stack import StackConfig
from tests.faults.conftest import FAST_REBALANCE, CleanRun, run_tag
from tests.faults.test_scale_out import wait_stable
from tests.support.pipeline import (
    Message,
    collect_run,
    compare_runs,
    delete_stream,
    describe_differences,
    end_offsets,
    load_raw,
    nats_env,
    records_in,
    wait_complete,
)
from tests.support.worker import Worker

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PARTITIONS = 8
STORM_S = 60.0
STEP_S = 4.0  # one kill or start every STEP_S
LOAD_S = 50.0  # the input arrives over the first LOAD_S of the storm
SLICES = 40
COMMIT_BOUND_S = 10.0
SESSION_S = float(FAST_REBALANCE["INGEST__KAFKA__SESSION_TIMEOUT_S"])


def ready(worker: Worker) -> bool:
    return (
        worker.proc is not None
        and worker.proc.poll() is None
        and b"Ready" in (worker.log_path.read_bytes() if worker.log_path.exists() else b"")
    )


def alive(workers: list[Worker]) -> list[Worker]:
    return [w for w in workers if w.proc is not None and w.proc.poll() is None]


async def committed_lag(bootstrap: str, group: str) -> dict[str, int]:
    """Messages per topic-partition not committed by `group`, over every topic it consumes
    that has data (the raw topic, market-data-stream for the bridge, and any other)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    topics = {tp.topic for tp in committed} | {RAW_BROKER_TICKS, MARKET_DATA_STREAM}
    lag = {}
    for topic in sorted(topics):
        for p, end in (await end_offsets(bootstrap, topic)).items():
            meta = committed.get(TopicPartition(topic, p))
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            if end > done:
                lag[f"{topic}/{p}"] = end - done
    return lag


async def load_over(bootstrap: str, messages: list[Message], seconds: float) -> list[float]:
    """Append `messages` in SLICES slices spread over `seconds`; the times of the slices."""
    size = -(-len(messages) // SLICES)
    started, times = time.monotonic(), []
    for n, at in enumerate(range(0, len(messages), size)):
        await asyncio.sleep(max(0.0, started + n * seconds / SLICES - time.monotonic()))
        await load_raw(bootstrap, messages[at : at + size], PARTITIONS)
        times.append(time.monotonic())
    return times


async def test_rebalance_storm_loses_nothing_and_commits_reach_the_end(
    stack: StackConfig, clean_run: CleanRun, fresh_input, input_messages, tmp_path: Path, report
) -> None:
    clean = await clean_run(PARTITIONS)
    await fresh_input(PARTITIONS, upto=0)
    tag = run_tag()
    stream = f"F{tag.upper()}"
    env = {**nats_env(tag), **FAST_REBALANCE, "INGEST__KAFKA__PARTITIONS": str(PARTITIONS)}
    app_id = f"storm-{tag}"
    bootstrap = stack.kafka_bootstrap
    rng = random.Random(17)
    workers: list[Worker] = []
    killed: list[Worker] = []

    def start() -> None:
        worker = Worker(stack, tmp_path / f"w{len(workers)}", app_id, env=env)
        workers.append(worker.launch())

    try:
        for _ in range(3):
            start()
        for worker in workers:
            worker.wait_ready(120)
        await wait_stable(bootstrap, app_id, 3, timeout=120)

        storm_started = time.monotonic()
        loading = asyncio.create_task(load_over(bootstrap, input_messages, LOAD_S))
        kills = starts = 0
        while time.monotonic() - storm_started < STORM_S:
            await asyncio.sleep(STEP_S)
            living = alive(workers)
            for worker in workers:  # none may die on its own
                assert worker in killed or worker in living, worker.log_tail()
            keep = next((w for w in living if ready(w)), None)
            victims = [w for w in living if w is not keep]
            if len(living) < 3 and (not victims or rng.random() < 0.5):
                start()
                starts += 1
            elif victims:
                victim = rng.choice(victims)
                victim.kill()
                killed.append(victim)
                kills += 1
        load_times = await loading
        storm_s = time.monotonic() - storm_started

        # The storm is over once the survivors are ready and the group is stable again.
        living = alive(workers)
        assert not [w for w in workers if w not in killed and w not in living]
        for worker in living:
            worker.wait_ready(120)
        await wait_stable(bootstrap, app_id, len(living), timeout=120)
        settled = time.monotonic()
        await wait_complete(bootstrap, stack.nats_url, stream, clean, timeout=180)
        complete_s = time.monotonic() - settled - 1.5  # wait_complete waits 1.5 s more
        while lag := await committed_lag(bootstrap, app_id):
            assert time.monotonic() - settled < 120, f"commits stuck: lag {lag}"
            await asyncio.sleep(0.25)
        commit_s = time.monotonic() - settled
        faulty = await collect_run(bootstrap, stack.nats_url, stream, living)
        still_alive = [w for w in living if w.proc.poll() is None]  # type: ignore[union-attr]
    finally:
        for worker in workers:
            worker.kill()
        await delete_stream(stack.nats_url, stream)

    result = compare_runs(clean, faulty)
    changes = kills + starts
    rate = len(input_messages) / LOAD_S  # raw messages loaded per second
    per_change = int(rate * (STEP_S + SESSION_S)) + 1
    most = max(faulty.stream.values())
    report(
        f"rebalance storm: {records_in(input_messages)} ticks in {len(input_messages)} raw"
        f" messages over {load_times[-1] - storm_started:.0f}s, {kills} SIGKILLs + {starts}"
        f" starts in {storm_s:.0f}s ({len(living)} alive after); {result.expected} outputs"
        f" expected, lost={result.lost} extra={result.extra} duplicated={result.duplicated}"
        f" (bound {changes * per_change}, most copies of one {most}; rejects duplicated"
        f" {faulty.reject_duplicates()}) jetstream={result.jetstream_count}"
        f" lost={result.jetstream_lost}; after the group settled: output complete in"
        f" {complete_s:.1f}s, every committed offset at the log end in {commit_s:.1f}s"
    )
    assert still_alive == living
    assert (result.lost, result.rejects_lost, result.jetstream_lost) == (0, 0, 0)
    assert result.jetstream_count == len(faulty.stream)  # JetStream: the distinct outputs
    assert result.ok, describe_differences(clean, faulty)
    assert result.duplicated <= changes * per_change
    assert most <= 1 + changes
    assert commit_s <= COMMIT_BOUND_S, f"commits reached the end {commit_s:.1f}s after the storm"
