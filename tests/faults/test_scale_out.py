"""Scenario 5: two workers share the 8 partitions; one is SIGKILLed mid-stream.

Both run the same app (same consumer group, their own data dirs and web ports). When one
dies, the other takes its partitions after the group session timeout (FAST_REBALANCE)
and finishes the stream: every distinct output of the clean one-worker run is there and
nothing else, and JetStream holds exactly the distinct messages. The throughput of the
two workers before the kill is reported next to the clean run's (never asserted: the
machine is shared).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from app.wire import codec
from devstack.stack import StackConfig
from tests.faults.conftest import FAST_REBALANCE, CleanRun, run_tag
from tests.support.pipeline import (
    Message,
    collect_run,
    compare_runs,
    delete_stream,
    describe_differences,
    load_raw,
    nats_env,
    output_count,
    records_in,
    wait_complete,
)
from tests.support.worker import Worker

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PARTITIONS = 8


async def group_members(bootstrap: str, group: str) -> tuple[str, int]:
    """(state, number of members) of a consumer group, as the coordinator reports it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
        _error, _group, state, _protocol_type, _protocol, members, *_ = response.groups[0]
        return state, len(members)
    finally:
        await admin.close()


async def wait_stable(bootstrap: str, group: str, members: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (found := await group_members(bootstrap, group)) != ("Stable", members):
        assert time.monotonic() < deadline, f"group {group}: {found}, not {members} stable"
        await asyncio.sleep(0.2)


async def load_in_slices(bootstrap: str, messages: list[Message], size: int = 20) -> None:
    """Append `messages` to the raw topic in order (the same offsets as one load)."""
    for at in range(0, len(messages), size):
        await load_raw(bootstrap, messages[at : at + size], PARTITIONS)


def processed(worker: Worker) -> int:
    return worker.health()["aggregation_metrics"]["records_processed"]


async def test_survivor_takes_over_the_killed_workers_partitions(
    stack: StackConfig, clean_run: CleanRun, fresh_input, input_messages, tmp_path: Path, report
) -> None:
    clean = await clean_run(PARTITIONS)
    await fresh_input(PARTITIONS, upto=0)  # an empty raw topic: both workers join first
    tag = run_tag()
    stream = f"F{tag.upper()}"
    env = {**nats_env(tag), **FAST_REBALANCE, "INGEST__KAFKA__PARTITIONS": str(PARTITIONS)}
    app_id = f"scale-{tag}"
    bootstrap = stack.kafka_bootstrap
    half = len(input_messages) // 2
    first_half = records_in(input_messages[:half])
    # Every symbol's ticks are in one partition, and each worker owns at least one of
    # them (5 of the 8 partitions hold data; a worker owns 4): a victim killed before it
    # has processed the second half's smallest symbol share still had work to hand over.
    smallest_share = min(
        Counter(
            k for k, v in input_messages[half:] for _ in codec.decode_raw_batch(v).records
        ).values()
    )
    survivor = Worker(stack, tmp_path / "a", app_id, env=env)
    victim = Worker(stack, tmp_path / "b", app_id, env=env)
    try:
        survivor.start()
        victim.start()
        await wait_stable(bootstrap, app_id, 2)

        # Throughput: the first half through two workers (produce time included, as in
        # the clean run's figure).
        started = time.monotonic()
        await load_raw(bootstrap, input_messages[:half], PARTITIONS)
        while sum(done := (processed(survivor), processed(victim))) < first_half:
            assert time.monotonic() - started < 120, f"two workers stuck at {done}"
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started

        # The kill: the second half flowing in (in slices, so that the victim cannot race
        # through its share before the poll sees it), the victim early into its share.
        loading = asyncio.create_task(load_in_slices(bootstrap, input_messages[half:]))
        try:
            while (victim_done := processed(victim) - done[1]) < 1000:
                assert time.monotonic() - started < 120, f"the victim is stuck at {victim_done}"
                await asyncio.sleep(0.02)
            at_kill = await output_count(bootstrap)
            victim.kill()
            killed = time.monotonic()
        finally:
            await loading
        assert victim_done < smallest_share, "the victim may have finished before the kill"

        await wait_stable(bootstrap, app_id, 1)
        takeover_s = time.monotonic() - killed
        await wait_complete(bootstrap, stack.nats_url, stream, clean)
        recovery_s = time.monotonic() - killed - 1.5  # wait_complete waits 1.5 s more
        faulty = await collect_run(bootstrap, stack.nats_url, stream, [survivor])
        survivor_alive = survivor.proc.poll() is None  # type: ignore[union-attr]
    finally:
        victim.kill()
        survivor.stop()
        await delete_stream(stack.nats_url, stream)

    one = clean.stats["ticks_per_s"]
    each = [n / elapsed for n in done]
    result = compare_runs(clean, faulty)
    report(
        f"scale-out: 1 worker {one:,.0f} ticks/s (clean run, 100k); 2 workers"
        f" {sum(each):,.0f} ticks/s ({each[0]:,.0f} + {each[1]:,.0f}, first {first_half}"
        f" ticks), ratio {sum(each) / one:.2f}; SIGKILL of one {victim_done} ticks into the"
        f" second half ({at_kill} messages out): {result.expected} messages out,"
        f" lost={result.lost} extra={result.extra} duplicated={result.duplicated} (rejects"
        f" duplicated={faulty.reject_duplicates()}) jetstream={result.jetstream_count};"
        f" partitions taken over {takeover_s:.1f}s and output complete {recovery_s:.1f}s"
        f" after the kill (session timeout {FAST_REBALANCE['INGEST__KAFKA__SESSION_TIMEOUT_S']} s)"
    )
    assert survivor_alive, survivor.log_tail()
    # No loss, ever: every clean output, reject and JetStream message is there.
    assert (result.lost, result.rejects_lost, result.jetstream_lost) == (0, 0, 0)
    # JetStream holds exactly the distinct messages of market-data-stream.
    assert result.jetstream_count == len(faulty.stream)
    assert result.jetstream_extra == result.extra
    # Nothing else either, and the survivor's tables (its own and the recovered ones) are
    # the clean run's.
    assert result.ok, describe_differences(clean, faulty)
