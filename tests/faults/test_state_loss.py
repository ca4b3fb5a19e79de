"""Scenario 4: the worker's local RocksDB state is deleted before a restart.

The tables must come back from their changelog topics with the same contents, and the
stream must continue as if nothing happened: the second half of the input, processed by
the rebuilt worker, gives exactly the clean run's output (a re-sent pre-restart tick is
still rejected as a duplicate).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from app.pipeline.topics import MARKET_DATA_REJECTS, RAW_BROKER_TICKS
from app.wire import codec
from devstack.stack import StackConfig
from tests.faults.conftest import TOTAL_TICKS, CleanRun, run_tag
from tests.support.pipeline import (
    collect_run,
    compare_runs,
    delete_stream,
    describe_differences,
    end_offsets,
    load_raw,
    nats_env,
    read_all,
    table_views,
    wait_committed,
    wait_complete,
)
from tests.support.worker import Worker

pytestmark = [pytest.mark.integration, pytest.mark.faults]


async def test_tables_rebuilt_from_changelogs(
    stack: StackConfig,
    clean_run: CleanRun,
    fresh_input,
    input_messages,
    data_dir: Path,
    report,
) -> None:
    clean = await clean_run(4)
    half = len(input_messages) // 2
    await fresh_input(4, upto=half)
    tag = run_tag()
    stream = f"F{tag.upper()}"
    env = nats_env(tag)
    app_id = f"state-{tag}"
    bootstrap = stack.kafka_bootstrap
    try:
        with Worker(stack, data_dir, app_id, env=env) as first:
            await wait_committed(bootstrap, app_id)
            before = table_views([first])
        shutil.rmtree(data_dir)
        started = time.monotonic()
        second = Worker(stack, data_dir, app_id, env=env).start()
        try:
            rebuilt_s = time.monotonic() - started
            after = table_views([second])
            boundary = await end_offsets(bootstrap, RAW_BROKER_TICKS)
            await load_raw(bootstrap, input_messages[half:], 4)
            await wait_complete(bootstrap, stack.nats_url, stream, clean)
            faulty = await collect_run(bootstrap, stack.nats_url, stream, [second])
        finally:
            second.stop()
    finally:
        await delete_stream(stack.nats_url, stream)

    assert after == before, "tables differ after the rebuild from the changelogs"
    last_old = codec.decode_raw_batch(input_messages[half - 1][1]).records[-1].tick
    resent = [
        r
        for r in map(
            codec.decode_rejection, (v for _, v in await read_all(bootstrap, MARKET_DATA_REJECTS))
        )
        if r.reasons == ["duplicate"]
        and r.lineage.offset >= boundary[r.lineage.partition]
        and r.record.tick.event_time_ns <= last_old.event_time_ns
    ]
    result = compare_runs(clean, faulty)
    report(
        f"state loss: {half} of {len(input_messages)} messages before the restart, tables"
        f" rebuilt in {rebuilt_s:.1f}s (worker start included) and equal; {TOTAL_TICKS} ticks"
        f" in, {result.expected} messages out, lost={result.lost} extra={result.extra}"
        f" duplicated={result.duplicated}; pre-restart ticks re-sent after it and rejected"
        f" as duplicate: {len(resent)}"
    )
    assert resent, "no pre-restart tick was re-sent after the restart"
    assert result.ok, describe_differences(clean, faulty)
    assert result.duplicated == 0
