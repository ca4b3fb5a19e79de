"""Faults on a 3-broker KRaft cluster (replication 3, min.insync.replicas 2).

Each scenario loads half of a deterministic 20,000-tick input, starts one worker, breaks
the cluster once output is flowing, loads the second half while the cluster is broken,
repairs it and compares the run with a clean reference run on the same cluster, message
by message (market-data-stream, rejects, JetStream, table views):

(a) the broker leading most raw/market-data-stream partitions is SIGKILLed, started later;
(b) the active controller (KRaft quorum leader, itself a broker here) is SIGKILLed, started later;
(c) a broker is SIGKILLed, its data dir wiped, and it rejoins reformatted with the cluster
    id and its node id; it must catch up until it is back in every partition's ISR.

Lost must be 0 and the worker must be the same process throughout (it never restarts).
The cluster has its own run dir and ports (TEST_PORT_BASE + 642..682), next to the suite's
single broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from app.pipeline.topics import MARKET_DATA_STREAM, RAW_BROKER_TICKS
from devstack import stack as local_stack
from devstack.stack import StackConfig
from tests.conftest import PORT_BASE, REPO
from tests.faults.conftest import run_tag, wait_records
from tests.support.faults_b import crash_lines
from tests.support.kafka import delete_all_topics
from tests.support.pipeline import (
    Message,
    RunOutput,
    collect_run,
    compare_runs,
    delete_stream,
    describe_differences,
    end_offsets,
    nats_env,
    output_count,
    records_in,
    tick_messages,
    wait_committed,
    wait_complete,
    wait_output,
)
from tests.support.worker import Worker

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TICKS = 20_000
PARTITIONS = 4
REPLICAS = 3
T = TypeVar("T")
CLUSTER_ENV = {
    "INGEST__KAFKA__PARTITIONS": str(PARTITIONS),
    "INGEST__KAFKA__REPLICATION_FACTOR": str(REPLICAS),
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[StackConfig]:
    """Three combined broker+controller nodes and a NATS of their own, for this module
    (stopped after it: three JVMs). Ports clear of the session stack (+92/+93/+222/+822),
    the secured stack (+392/+393/+322/+422) and test_stack's (+592/+593/+722/+800)."""
    cfg = StackConfig(
        run_dir=REPO / ".run" / f"test-cluster-{PORT_BASE}",
        kafka_port=PORT_BASE + 642,  # nodes on +642, +652, +662
        controller_port=PORT_BASE + 643,  # +643, +653, +663
        nats_port=PORT_BASE + 672,
        nats_monitor_port=PORT_BASE + 682,
        brokers=3,
        timeout=180,
    )
    local_stack.up(cfg)
    yield cfg
    if os.environ.get("KEEP_TEST_STACK") != "1":
        local_stack.down(cfg, purge=True)


@pytest.fixture(scope="session")
def cluster_input() -> list[Message]:
    messages = tick_messages(TICKS)
    assert records_in(messages) == TICKS
    return messages


async def retried(call: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """`call()` until it succeeds: an admin request can go to a node that just died and
    is not fenced yet (its partitions move only then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def raw_end(bootstrap: str) -> int:
    return sum((await end_offsets(bootstrap, RAW_BROKER_TICKS)).values())


async def create_raw(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if RAW_BROKER_TICKS not in await admin.list_topics():
            await admin.create_topics([NewTopic(RAW_BROKER_TICKS, PARTITIONS, REPLICAS)])
    finally:
        await admin.close()


async def load_replicated(bootstrap: str, messages: list[Message]) -> None:
    """raw.broker.ticks with 3 replicas, then `messages` in order through an idempotent
    producer: a send retried across a leader change is not written twice, so the offsets
    are those of the clean run even when a broker dies during the load."""
    await retried(lambda: create_raw(bootstrap))
    before = await retried(lambda: raw_end(bootstrap))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        futures = [await producer.send(RAW_BROKER_TICKS, value=v, key=k) for k, v in messages]
        for fut in futures:
            await fut
    finally:
        await producer.stop()
    after = await retried(lambda: raw_end(bootstrap))
    assert after - before == len(messages), f"raw topic grew by {after - before}"


async def partitions(bootstrap: str) -> dict[tuple[str, int], dict[str, Any]]:
    """Every partition of every topic (internal ones too): leader, replicas, ISR."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        names = await admin.list_topics()
        out = {}
        for meta in await admin.describe_topics(names):
            for p in meta["partitions"]:
                out[(meta["topic"], p["partition"])] = p
        return out
    finally:
        await admin.close()


async def poll(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> float:
    """Seconds until `check()` is true (errors count as not yet: nodes come and go)."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            if await check():
                return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"not {what} within {timeout}s"
        await asyncio.sleep(0.2)


def isr_of(p: dict[str, Any]) -> list[int]:
    return list(p["isr"] if "isr" in p else p["isr_nodes"])


async def leads_nothing(bootstrap: str, node: int) -> bool:
    """No partition is led by `node` and none is leaderless: the failover is done."""
    parts = await partitions(bootstrap)
    return bool(parts) and all(p["leader"] not in (node, -1) for p in parts.values())


async def isr_full(bootstrap: str) -> bool:
    """Every partition has all its replicas in sync (a rejoined node has caught up)."""
    parts = await partitions(bootstrap)
    return bool(parts) and all(len(isr_of(p)) == REPLICAS for p in parts.values())


_clean: dict[str, RunOutput] = {}


async def clean_run(cluster: StackConfig, messages: list[Message], data_dir: Path) -> RunOutput:
    """The reference: one worker, no faults, on the same cluster (computed once)."""
    if "run" in _clean:
        return _clean["run"]
    bootstrap = cluster.kafka_bootstrap
    tag = run_tag()
    stream = f"F{tag.upper()}"
    await delete_all_topics(bootstrap)
    await load_replicated(bootstrap, [])
    app_id = f"cclean-{tag}"
    with Worker(cluster, data_dir, app_id, env={**nats_env(tag), **CLUSTER_ENV}) as worker:
        await load_replicated(bootstrap, messages)
        await wait_records(worker, TICKS, timeout=180)
        await wait_committed(bootstrap, app_id)
        out = await collect_run(bootstrap, cluster.nats_url, stream, [worker])
    await delete_stream(cluster.nats_url, stream)
    assert out.duplicates() == 0 and len(out.jetstream) == len(out.stream)
    _clean["run"] = out
    return out


Fault = Callable[[StackConfig, Callable[[], Awaitable[None]]], Awaitable[dict[str, Any]]]


async def run_with_fault(
    cluster: StackConfig,
    messages: list[Message],
    tmp_path: Path,
    fault: Fault,
    name: str,
    report: Callable[[str], None],
) -> None:
    """Half the input, a worker, the fault once output flows (the fault loads the second
    half while the cluster is broken and repairs it), then the exact comparison."""
    clean = await clean_run(cluster, messages, tmp_path / "clean")
    bootstrap = cluster.kafka_bootstrap
    half = len(messages) // 2
    await delete_all_topics(bootstrap)
    await load_replicated(bootstrap, messages[:half])
    tag = run_tag()
    stream = f"F{tag.upper()}"
    env = {**nats_env(tag), **CLUSTER_ENV}
    worker = Worker(cluster, tmp_path / "worker", f"cluster-{tag}", env=env).start(timeout=120)
    pid = worker.proc.pid  # type: ignore[union-attr]
    try:
        at_fault = await wait_output(bootstrap, len(clean.stream) // 4)

        async def load_rest() -> None:
            await load_replicated(bootstrap, messages[half:])

        figures = await fault(cluster, load_rest)
        started = time.monotonic()
        try:
            await wait_complete(bootstrap, cluster.nats_url, stream, clean, timeout=120)
        except AssertionError as incomplete:
            print(incomplete)  # compare anyway: the differences say more
        complete_s = time.monotonic() - started
        faulty = await collect_run(bootstrap, cluster.nats_url, stream, [worker])
        same_process = worker.proc.poll() is None and worker.proc.pid == pid  # type: ignore[union-attr]
        log = worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()
        with contextlib.suppress(Exception):
            await delete_stream(cluster.nats_url, stream)

    result = compare_runs(clean, faulty)
    shown = " ".join(
        f"{k}={v:.1f}s" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    report(
        f"cluster {name}: {TICKS} ticks in, {result.expected} messages ({clean.ticks_out} ticks)"
        f" out; fault at {at_fault} outputs; {shown}; complete {complete_s:.1f}s after the"
        f" repair; lost={result.lost} extra={result.extra} duplicated={result.duplicated}"
        f" rejects lost={result.rejects_lost} jetstream={result.jetstream_count}"
        f" (lost={result.jetstream_lost}) tables equal={result.tables_equal};"
        f" same worker pid: {same_process}"
    )
    assert same_process, worker.log_tail()
    assert crash_lines(log) == [], "\n".join(crash_lines(log)[:10])
    assert result.ok, describe_differences(clean, faulty)
    assert result.jetstream_count == len(faulty.stream)


async def kill_and_return(
    cluster: StackConfig,
    victim: int,
    load_rest: Callable[[], Awaitable[None]],
    wipe: bool = False,
) -> dict[str, Any]:
    """SIGKILL node `victim`, load the rest of the input meanwhile, wait for the failover
    and for output to grow again, then start the node (wiped first if asked) and wait
    until it is back in every partition's ISR."""
    bootstrap = cluster.kafka_bootstrap
    node = f"kafka-{victim}"
    growth: list[float] = []  # times (since the kill) at which the output had grown

    async def watch_output() -> None:
        last = await output_count(bootstrap)
        while True:
            with contextlib.suppress(Exception):
                now = await output_count(bootstrap)
                if now > last:
                    growth.append(time.monotonic() - killed)
                last = max(last, now)
            await asyncio.sleep(0.2)

    killed = time.monotonic()
    local_stack.stop(cluster, node, kill=True)
    watcher = asyncio.create_task(watch_output())
    try:
        if wipe:
            shutil.rmtree(cluster.component_dir(node) / "data")
        await load_rest()
        loaded_s = time.monotonic() - killed
        await poll(lambda: leads_nothing(bootstrap, victim), 60, "failed over")
        failover_s = time.monotonic() - killed
        await asyncio.sleep(2)  # output samples after the failover
    except BaseException:
        # The next scenario needs all three nodes, whatever happened here.
        watcher.cancel()
        await asyncio.to_thread(local_stack.start, cluster, node)
        raise
    watcher.cancel()
    after = [t for t in growth if t >= failover_s - 0.5]
    back = time.monotonic()
    await asyncio.to_thread(local_stack.start, cluster, node)
    started_s = time.monotonic() - back
    isr_s = await poll(lambda: isr_full(bootstrap), 120, "every ISR full again")
    return {
        "victim": node,
        "second_half_loaded": loaded_s,
        "no_partition_on_victim_after": failover_s,
        "output_growing_again_after_kill": after[0] if after else "done before",
        "node_start": started_s,
        "isr_full_after_start": started_s + isr_s,
    }


async def test_partition_leader_sigkill(cluster, cluster_input, tmp_path, report) -> None:
    async def fault(cfg: StackConfig, load_rest: Callable[[], Awaitable[None]]) -> dict[str, Any]:
        parts = await partitions(cfg.kafka_bootstrap)
        led = Counter(
            p["leader"]
            for (topic, _), p in parts.items()
            if topic in (RAW_BROKER_TICKS, MARKET_DATA_STREAM)
        )
        victim, count = led.most_common(1)[0]
        figures = await kill_and_return(cfg, victim, load_rest)
        return {"leader_of": count, **figures}

    await run_with_fault(cluster, cluster_input, tmp_path, fault, "leader SIGKILL", report)


async def test_active_controller_sigkill(cluster, cluster_input, tmp_path, report) -> None:
    async def fault(cfg: StackConfig, load_rest: Callable[[], Awaitable[None]]) -> dict[str, Any]:
        victim = local_stack.active_controller(cfg)
        assert victim is not None, "no active controller found"
        killed = time.monotonic()
        elected: list[float] = []

        async def watch_election() -> None:
            while (now := local_stack.active_controller(cfg)) in (None, victim):
                await asyncio.sleep(0.1)
            elected.append(time.monotonic() - killed)
            elected.append(float(now))

        watcher = asyncio.create_task(watch_election())
        try:
            figures = await kill_and_return(cfg, victim, load_rest)
        finally:
            watcher.cancel()
        assert elected, "no new controller while the old one was down"
        return {
            "new_controller": f"kafka-{int(elected[1])}",
            "elected_after": elected[0],
            **figures,
        }

    await run_with_fault(cluster, cluster_input, tmp_path, fault, "controller SIGKILL", report)


async def test_wiped_broker_rejoins(cluster, cluster_input, tmp_path, report) -> None:
    async def fault(cfg: StackConfig, load_rest: Callable[[], Awaitable[None]]) -> dict[str, Any]:
        parts = await partitions(cfg.kafka_bootstrap)
        victim, _ = Counter(p["leader"] for p in parts.values()).most_common(1)[0]
        figures = await kill_and_return(cfg, victim, load_rest, wipe=True)
        data = cfg.component_dir(f"kafka-{victim}") / "data"
        copied = sum(f.stat().st_size for f in data.rglob("*.log") if f.is_file())
        assert copied > 0, "the wiped node holds no log data after rejoining"
        return {**figures, "log_bytes_rebuilt": copied}

    await run_with_fault(cluster, cluster_input, tmp_path, fault, "wiped broker", report)
