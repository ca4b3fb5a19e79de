"""Shared fault fixtures: the clean reference run (once per partition count) and reporting.

A clean run of the deterministic tick stream is what every faulty run is compared with.
It costs one worker start, so it is computed once per session and partition count; each
test then loads the same input into fresh topics and must reproduce it exactly.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from devstack.stack import StackConfig
from tests.support.kafka import delete_all_topics
from tests.support.pipeline import (
    RunOutput,
    collect_run,
    delete_stream,
    load_raw,
    nats_env,
    records_in,
    tick_messages,
    wait_committed,
)
from tests.support.worker import Worker

TOTAL_TICKS = 100_000
# faust/Kafka: a killed member's partitions move after the session timeout (6 s minimum).
FAST_REBALANCE = {
    "INGEST__KAFKA__SESSION_TIMEOUT_S": "6",
    "INGEST__KAFKA__HEARTBEAT_INTERVAL_S": "1",
}

CleanRun = Callable[[int], Awaitable[RunOutput]]


def run_tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def input_messages() -> list[tuple[bytes, bytes]]:
    messages = tick_messages(TOTAL_TICKS)
    assert records_in(messages) == TOTAL_TICKS
    return messages


@pytest.fixture(scope="session")
def _clean_runs() -> dict[int, RunOutput]:
    return {}


@pytest.fixture
def clean_run(
    stack: StackConfig,
    input_messages: list[tuple[bytes, bytes]],
    _clean_runs: dict[int, RunOutput],
    tmp_path_factory: pytest.TempPathFactory,
) -> CleanRun:
    """`await clean_run(partitions)`: the reference output of one worker without faults.

    Leaves Kafka dirty: call `fresh_input` afterwards. `stats["ticks_per_s"]` is the
    worker's rate from the first produced message to the last record processed.
    """

    async def run(partitions: int) -> RunOutput:
        if partitions in _clean_runs:
            return _clean_runs[partitions]
        tag = run_tag()
        env = {**nats_env(tag), "INGEST__KAFKA__PARTITIONS": str(partitions)}
        await delete_all_topics(stack.kafka_bootstrap)
        await load_raw(stack.kafka_bootstrap, [], partitions)
        data_dir = tmp_path_factory.mktemp(f"clean-{partitions}")
        app_id = f"clean-{tag}"
        with Worker(stack, data_dir, app_id, env=env) as worker:
            started = time.monotonic()
            await load_raw(stack.kafka_bootstrap, input_messages, partitions)
            await wait_records(worker, TOTAL_TICKS)
            elapsed = time.monotonic() - started
            await wait_committed(stack.kafka_bootstrap, app_id)
            out = await collect_run(
                stack.kafka_bootstrap, stack.nats_url, f"F{tag.upper()}", [worker]
            )
        await delete_stream(stack.nats_url, f"F{tag.upper()}")
        out.stats["ticks_per_s"] = TOTAL_TICKS / elapsed
        assert out.duplicates() == 0 and len(out.jetstream) == len(out.stream)
        _clean_runs[partitions] = out
        return out

    return run


async def wait_records(worker: Worker, n: int, timeout: float = 120.0) -> None:
    """Until the worker's agents have processed `n` raw records (its own count)."""
    deadline = time.monotonic() + timeout
    while worker.health()["aggregation_metrics"]["records_processed"] < n:
        assert time.monotonic() < deadline, f"not {n} records in {timeout}s:\n{worker.log_tail()}"
        await asyncio.sleep(0.1)


@pytest.fixture
def fresh_input(
    stack: StackConfig, input_messages: list[tuple[bytes, bytes]]
) -> Callable[..., Awaitable[None]]:
    """`await fresh_input(partitions, upto=None)`: empty Kafka, then the input (or its
    first `upto` messages) in a new raw topic, at the same offsets as in the clean run."""

    async def load(partitions: int, upto: int | None = None) -> None:
        await delete_all_topics(stack.kafka_bootstrap)
        await load_raw(stack.kafka_bootstrap, input_messages[:upto], partitions)

    return load


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[Callable[[str], None]]:
    """`report(line)`: a summary line shown in the pytest output (even without -s)."""
    lines: list[str] = []
    yield lines.append
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    for line in lines:
        print(line)
        if reporter is not None:
            reporter.write_line(f"[faults] {line}")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "worker"
