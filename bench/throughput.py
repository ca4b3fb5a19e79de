"""Throughput runs over the same pre-loaded backlog: the limit, faust, Quix, scale-out.

Every run reads the raw topic from the start with a fresh consumer group and writes its
own output topic. Rate (ticks/s) = input ticks / span of the output, where the span is
from the CreateTime of the first output message to that of the last (stamped by the
producer of the process under test when it sends). Start-up (faust boot, rebalance,
RocksDB open) is therefore not counted, the processing of the whole backlog is.
Completion = the group has committed the end offset of every raw partition.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from app.pipeline.topics import (
    ALL_TOPIC_NAMES,
    MARKET_DATA_REJECTS,
    MARKET_DATA_STREAM,
    RAW_BROKER_TICKS,
)
from app.wire import codec
from bench.kafka_io import Output, produce_all, read_output, reset_topics, wait_committed
from devstack.stack import StackConfig

REPO = Path(__file__).resolve().parents[1]
PASSTHROUGH_OUT = "bench.passthrough.out"
QUIX_OUT = "bench.quix.market-data-stream"
QUIX_REJECTS = "bench.quix.market-data-rejects"
DONE_TIMEOUT_S = 600.0


@dataclass
class RunResult:
    name: str
    input_ticks: int
    input_messages: int
    output: Output
    rejects: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ticks_per_s(self) -> float:
        return self.input_ticks / self.output.span_s


def count_raw(value: bytes) -> int:
    return len(codec.decode_raw_batch(value).records)


def count_stream(value: bytes) -> int:
    return len(codec.decode_market_data(value).ticks)


def one(_value: bytes) -> int:
    return 1


async def load_backlog(
    stack: StackConfig, messages: Sequence[tuple[bytes, bytes]], partitions: int
) -> float:
    """Fresh topics (everything else deleted), the backlog produced into the raw topic."""
    await reset_topics(
        stack.kafka_bootstrap,
        [*ALL_TOPIC_NAMES, QUIX_OUT, QUIX_REJECTS, PASSTHROUGH_OUT],
        partitions,
    )  # fmt: skip
    return await produce_all(stack.kafka_bootstrap, RAW_BROKER_TICKS, messages)


async def passthrough(stack: StackConfig, ticks: int, messages: int) -> RunResult:
    """The practical limit: bare aiokafka consume + produce of the same raw messages."""
    group = f"bench-passthrough-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(
        RAW_BROKER_TICKS,
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap,
        acks="all",
        linger_ms=1,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await consumer.start()
    await producer.start()
    seen = 0
    try:
        while seen < messages:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for rec in records:
                    await producer.send(PASSTHROUGH_OUT, value=rec.value, key=rec.key)
                    seen += 1
        await producer.flush()
        await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()
    out = await read_output(stack.kafka_bootstrap, PASSTHROUGH_OUT, count_raw)
    return RunResult("aiokafka passthrough (limit)", ticks, messages, out)


def worker_env(stack: StackConfig, app_id: str, data_dir: Path, port: int, partitions: int) -> dict:
    env = {
        **os.environ,
        "INGEST__KAFKA__BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "INGEST__NATS__URL": stack.nats_url,
        "INGEST__SERVICE__APP_ID": app_id,
        "INGEST__SERVICE__DATA_DIR": str(data_dir),
        "INGEST__SERVICE__WEB_PORT": str(port),
        "INGEST__KAFKA__PARTITIONS": str(partitions),
        # No live feeds in a benchmark: the input is the pre-loaded raw topic only.
        "INGEST__BROKERS__IC_MARKETS__ENABLED": "false",
        "INGEST__BROKERS__PEPPERSTONE__ENABLED": "false",
        "INGEST__BROKERS__FXCM__ENABLED": "false",
    }
    return env


class Process:
    """A pipeline process under test (faust worker or Quix app), logging to a file."""

    def __init__(self, argv: list[str], env: dict, log_path: Path, ready_text: bytes | None):
        self.argv, self.env, self.log_path, self.ready_text = argv, env, log_path, ready_text
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        return self

    def problem(self) -> str | None:
        assert self.proc is not None
        if self.proc.poll() is None:
            return None
        return f"{self.argv[2:4]} exited {self.proc.returncode}:\n{self.log_tail()}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.ready_text and time.monotonic() < deadline:
            problem = self.problem()
            if problem:
                raise RuntimeError(problem)
            if self.ready_text in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        if self.ready_text:
            raise TimeoutError(f"not ready in {timeout}s:\n{self.log_tail()}")

    def start_ready(self, settle_s: float = 3.0, attempts: int = 3) -> None:
        """Start until ready with every topic subscribed.

        A fresh faust app id creates its changelog topics at start-up, and the broker's
        metadata sometimes lags: faust then logs "Ignoring missing topic" and the agent
        owning that table crashes (PartitionsMismatch) while the worker still says Ready.
        A restart with the same app id finds the topics; the bench notes the restart.
        """
        for _ in range(attempts):
            self.start()
            self.wait_ready()
            time.sleep(settle_s)
            text = self.log_path.read_bytes()
            if b"Ignoring missing topic" not in text and b"Crashed reason" not in text:
                return
            self.restarts += 1
            self.stop()
            self.log_path.rename(self.log_path.with_suffix(f".failed{self.restarts}.log"))
        raise RuntimeError(f"worker did not start cleanly in {attempts} attempts")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process so far (0 once it is gone)."""
        assert self.proc is not None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def free_port() -> int:
    """A free port for a worker's web server (a fixed one may be some client's ephemeral port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def faust_worker(
    stack: StackConfig, app_id: str, run_dir: Path, partitions: int,
    extra_env: dict[str, str] | None = None, profile: Path | None = None,
) -> Process:  # fmt: skip
    port = free_port()
    data_dir = run_dir / app_id / str(port)
    argv = [sys.executable, "-m", "app", "worker", "-l", "info"]
    if profile is not None:
        argv = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "app", "worker",
                "-l", "info"]  # fmt: skip
    env = {**worker_env(stack, app_id, data_dir, port, partitions), **(extra_env or {})}
    return Process(argv, env, data_dir / "worker.log", b"Ready")


def _alive(*procs: Process) -> Any:
    def check() -> str | None:
        for p in procs:
            problem = p.problem()
            if problem:
                return problem
        return None

    return check


async def faust_backlog(
    stack: StackConfig, ticks: int, messages: int, run_dir: Path, partitions: int,
    profile: Path | None = None,
) -> RunResult:  # fmt: skip
    """`python -m app worker` (fresh app id) through the pre-loaded raw topic."""
    app_id = f"bench-faust-{uuid.uuid4().hex[:8]}"
    worker = faust_worker(stack, app_id, run_dir, partitions, profile=profile)
    try:
        started = time.monotonic()
        await asyncio.to_thread(worker.start_ready, 0.0)
        ready_s = time.monotonic() - started
        cpu_ready = worker.cpu_s()
        await wait_committed(
            stack.kafka_bootstrap, app_id, RAW_BROKER_TICKS, DONE_TIMEOUT_S, _alive(worker)
        )
        cpu = worker.cpu_s() - cpu_ready
    finally:
        await asyncio.to_thread(worker.stop)
    out = await read_output(stack.kafka_bootstrap, MARKET_DATA_STREAM, count_stream)
    rejects = await read_output(stack.kafka_bootstrap, MARKET_DATA_REJECTS, one)
    return RunResult(
        "faust pipeline (python -m app worker)", ticks, messages, out, rejects.messages,
        {"app_id": app_id, "worker_ready_s": round(ready_s, 1), "restarts": worker.restarts,
         "cpu_s": round(cpu, 2)},
    )  # fmt: skip


async def quix_backlog(stack: StackConfig, ticks: int, messages: int, run_dir: Path) -> RunResult:
    """bench/quix_pipeline.py (fresh group and state dir) through the same raw topic."""
    group = f"bench-quix-{uuid.uuid4().hex[:8]}"
    state_dir = run_dir / group
    argv = [
        sys.executable, "-m", "bench.quix_pipeline", "--bootstrap", stack.kafka_bootstrap,
        "--group", group, "--state-dir", str(state_dir), "--input", RAW_BROKER_TICKS,
        "--output", QUIX_OUT, "--rejects", QUIX_REJECTS,
    ]  # fmt: skip
    proc = Process(argv, dict(os.environ), state_dir / "quix.log", None).start()
    try:
        await wait_committed(
            stack.kafka_bootstrap, group, RAW_BROKER_TICKS, DONE_TIMEOUT_S, _alive(proc)
        )
        cpu = proc.cpu_s()  # includes start-up (import, RocksDB open): Quix has no ready line
    finally:
        await asyncio.to_thread(proc.stop)
    out = await read_output(stack.kafka_bootstrap, QUIX_OUT, count_stream)
    rejects = await read_output(stack.kafka_bootstrap, QUIX_REJECTS, one)
    return RunResult(
        "Quix Streams 3.28.1 (same stages)", ticks, messages, out, rejects.messages,
        {"cpu_s": round(cpu, 2)},
    )  # fmt: skip


async def faust_live_burst(
    stack: StackConfig, backlog: Sequence[tuple[bytes, bytes]], ticks: int, workers: int,
    run_dir: Path, partitions: int,
) -> RunResult:  # fmt: skip
    """Scale-out: `workers` workers of one app id, all ready before the input arrives.

    The raw topic is empty while the workers start and the group settles, then the whole
    backlog is produced at once, so no rebalance happens during the measured span.
    """
    await reset_topics(
        stack.kafka_bootstrap, list(ALL_TOPIC_NAMES), partitions,
    )  # fmt: skip
    app_id = f"bench-scale{workers}-{uuid.uuid4().hex[:8]}"
    procs = [faust_worker(stack, app_id, run_dir, partitions) for _ in range(workers)]
    try:
        for p in procs:
            await asyncio.to_thread(p.start_ready)
        await wait_group_stable(stack.kafka_bootstrap, app_id, workers)
        await produce_all(stack.kafka_bootstrap, RAW_BROKER_TICKS, backlog)
        await wait_committed(
            stack.kafka_bootstrap, app_id, RAW_BROKER_TICKS, DONE_TIMEOUT_S, _alive(*procs)
        )
    finally:
        for p in procs:
            await asyncio.to_thread(p.stop)
    out = await read_output(stack.kafka_bootstrap, MARKET_DATA_STREAM, count_stream)
    return RunResult(
        f"faust, {workers} worker(s), live burst", ticks, len(backlog), out,
        notes={"restarts": sum(p.restarts for p in procs)},
    )  # fmt: skip


async def wait_group_stable(bootstrap: str, group: str, members: int, timeout: float = 90) -> None:
    """The consumer group has `members` members and is Stable (assignment done)."""
    from bench.kafka_io import admin_client

    deadline = time.monotonic() + timeout
    async with admin_client(bootstrap) as admin:
        while time.monotonic() < deadline:
            (resp,) = await admin.describe_consumer_groups([group])
            for g in resp.groups:
                _err, gid, state, _ptype, _proto, group_members = g[:6]
                if gid == group and state == "Stable" and len(group_members) == members:
                    await asyncio.sleep(2.0)  # let every worker fetch its assignment
                    return
            await asyncio.sleep(0.5)
    raise TimeoutError(f"group {group} not stable with {members} members")
