"""End-to-end latency from the source: OANDA simulator -> faust worker -> NATS subject.

The whole live path, as deployed: `python -m devstack.simulator` serves three broker
profiles (ic_markets, pepperstone, fxcm) x 10 instruments at `rate` PRICE lines/s in
total; one `python -m app worker` streams them over HTTP with its OANDA v20 sources,
writes raw.broker.ticks, processes, produces market-data-stream and bridges it to NATS.
A nats-py subscriber on `market.data-ingestion.ticks`, in this process and on the same
machine clock as the worker, stamps each message's arrival; afterwards every tick in each
MarketDataStream (symbol, source and `receive_time_ns` read from the protobuf, never from
a key or header, so multi-symbol messages count right) gives arrival - receive_time_ns,
where receive_time_ns is the wall clock the source stamped when it read the line.

What is measured. The best-price stream emits only when the choice changes, and the
emitted tick is the chosen quote, possibly an older one of another broker. So that every
emission is the tick that caused it:
- best_price.max_age_ms = 0.001 (1 us): the clock is the event time of the tick being
  processed, so only that tick (and a quote of another broker stamped later but processed
  earlier) is fresh. bench/latency.py uses 1 ms; here a broker quotes each instrument every
  0.6 ms at 50,000 ticks/s, so 1 ms would keep the other brokers' quotes fresh and re-emit
  them.
- the simulated feed delay (latency_ms) is 0 for all three profiles: it lies before
  receive_time_ns (outside this measure), and its random jitter would make a broker's own
  ticks out of order (rejected) once several lines of an instrument go in one write.
- a tick seen again on NATS (re-emitted as another tick's choice) is counted once, at its
  first arrival; `received` is the distinct ticks whose receive time lies in the window.
  A tick first emitted by a later tick would be counted late (overstated, never under).
This attribution holds while the source keeps up reading: a worker that reads a backlog
gets seconds of one broker's lines in one chunk, the brokers' event times interleave out
of order, other brokers' newer quotes are fresh, and `received` falls while `re_emitted`
rises. When the worker did not drain within WAIT_S, ticks of the window that never
reached NATS are missing from the samples: the percentiles are then lower bounds
(`complete` False, shown with ">=").

The rate is what the simulator wrote (its /stats, exact), not the target: it writes each
connection's due lines in one burst per timer tick and skips slots it is more than a
second late for, so a feed the worker does not read fast enough (TCP back-pressure), or a
simulator short of CPU, shows as achieved < target. Kafka message rates come from the
topics' end offsets, worker and simulator CPU from /proc/<pid>/stat, consumption from the
worker's ingest_ticks_in_total. The first `warmup_s` seconds after the feed starts are
discarded.

Kept up (KEPT_UP below): the simulator reached >= 95% of the target rate, at the end of
the window the worker had consumed all but <= 1 s of the input, all input was consumed
<= 5 s after the feed stopped, and every market-data-stream message reached NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.pipeline.kafka_clients import kafka_options
from app.pipeline.topics import ALL_TOPIC_NAMES, MARKET_DATA_STREAM, RAW_BROKER_TICKS
from app.settings import get_settings
from app.sinks.nats.connect import connect_options
from app.wire import codec
from bench.kafka_io import reset_topics
from bench.latency import percentile
from bench.throughput import Process, faust_worker, free_port
from devstack.stack import StackConfig

SUBJECT = f"market.{codec.OUTPUT_SOURCE}.ticks"
PROFILES = ("ic_markets", "pepperstone", "fxcm")
MT5_BROKERS = ("ic_markets_mt5", "pepperstone_mt5", "fxcm_mt5")
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "USDCHF", "AUDUSD",
           "USDCAD", "NZDUSD", "EURGBP", "EURJPY", "GBPJPY")  # fmt: skip
MAX_AGE_MS = 0.001
FEED_SHARE = 0.95  # of the target rate the simulator must reach
BACKLOG_S = 1.0  # input not yet consumed at the end of the window, in seconds of input
DRAIN_S = 5.0  # after the feed stops, everything is consumed within this
WAIT_S = 60.0  # how long the bench waits for the drain / NATS at most (then: not kept up)
KEPT_UP = (
    f"simulator >= {FEED_SHARE:.0%} of target, backlog at window end <= {BACKLOG_S:.0f} s "
    f"of input, all input consumed <= {DRAIN_S:.0f} s after the feed stopped, every "
    "market-data-stream message on NATS"
)


@dataclass
class Snapshot:
    """Counters at one moment; the window is the difference of two."""

    wall_ns: int
    mono: float
    sim_lines: int
    ticks_in: float
    rejects: float
    raw_ends: dict[int, int]
    out_ends: dict[int, int]
    worker_cpu_s: float
    sim_cpu_s: float
    kafka_cpu_s: float
    worker_wait_s: float

    @property
    def raw_messages(self) -> int:
        return sum(self.raw_ends.values())

    @property
    def out_messages(self) -> int:
        return sum(self.out_ends.values())


@dataclass
class E2EResult:
    rate: int
    achieved: float
    seconds: float
    sent: int
    received: int
    re_emitted: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    raw_p50_ms: float
    raw_p99_ms: float
    raw_messages_per_s: float
    out_messages_per_s: float
    worker_cpu_pct: float
    simulator_cpu_pct: float
    kafka_cpu_pct: float
    worker_wait_pct: float  # main thread runnable but not running, % of the window
    rejects: int
    backlog_end: int
    drain_s: float | None
    nats_complete: bool
    complete: bool  # every tick of the window had its chance to reach NATS
    kept_up: bool
    why_not: list[str] = field(default_factory=list)
    restarts: int = 0
    load_avg_1m: float = 0.0  # at the end of the window: the machine is shared
    # The raw writer's batching (issue #21): linger, the measured send round trip, ticks
    # per raw message, and what the arithmetic predicts for the raw message rate.
    linger_ms: float = 0.0
    send_rtt_ms: float = float("nan")
    ticks_per_raw_message: float = float("nan")
    predicted_raw_per_s: float = float("nan")


def worker_env(sim_url: str, linger_ms: float = 0.0) -> dict[str, str]:
    """The three OANDA brokers against the simulator, 10 instruments each; MT5 off."""
    env = {
        "INGEST__BEST_PRICE__MAX_AGE_MS": str(MAX_AGE_MS),
        "INGEST__RAW_WRITER__LINGER_MS": str(linger_ms),
    }
    for name in PROFILES:
        prefix = f"INGEST__BROKERS__{name.upper()}__"
        env[prefix + "ENABLED"] = "true"
        env[prefix + "STREAM_URL"] = f"{sim_url}/{name}"
        env[prefix + "SYMBOLS"] = json.dumps(list(SYMBOLS))
        env[f"OANDA_TOKEN_{name.upper()}"] = f"bench-token-{name}"
    for name in MT5_BROKERS:
        env[f"INGEST__BROKERS__{name.upper()}__ENABLED"] = "false"
    return env


def simulator(rate: float, log_path: Path) -> tuple[Process, str]:
    """The simulator, every profile paused (heartbeats only) until the worker is ready."""
    port = free_port()
    per_instrument = rate / (len(PROFILES) * len(SYMBOLS))
    argv = [sys.executable, "-m", "devstack.simulator", "--port", str(port), "--seed", "1",
            "--rate", repr(per_instrument), "--heartbeat-s", "1"]  # fmt: skip
    for name in PROFILES:
        argv += ["--profile", f"{name}:latency_ms=0,paused=true"]
    return Process(argv, dict(os.environ), log_path, None), f"http://127.0.0.1:{port}"


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process (0 when unknown or gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_queue_wait_s(pid: int | None) -> float:
    """Seconds the process's main thread (the worker's event loop) was runnable but waited
    for a CPU (/proc/<pid>/schedstat): the share of the machine other processes took."""
    if pid is None:
        return 0.0
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


async def raw_latencies(bootstrap: str, start: dict[int, int], end: dict[int, int]) -> list[float]:
    """Sorted ms from each raw record's receive_time_ns to its Kafka message's CreateTime
    (stamped when the raw writer handed it to the producer; 1 ms resolution), for the
    messages the window added to raw.broker.ticks: the source's share of the latency."""
    parts = [TopicPartition(RAW_BROKER_TICKS, p) for p, e in end.items() if e > start.get(p, 0)]
    if not parts:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, **kafka_options(), enable_auto_commit=False
    )
    await consumer.start()
    samples: list[float] = []
    try:
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, start.get(tp.partition, 0))
        left = {tp: end[tp.partition] for tp in parts}
        while left:
            batch = await consumer.getmany(timeout_ms=5000, max_records=5000)
            if not batch:
                break
            for tp, records in batch.items():
                for rec in records:
                    if rec.offset < left.get(tp, -1):
                        for r in codec.decode_raw_batch(rec.value).records:
                            samples.append((rec.timestamp * 1_000_000 - r.receive_time_ns) / 1e6)
                if records and records[-1].offset + 1 >= left.get(tp, 0):
                    left.pop(tp, None)
    finally:
        await consumer.stop()
    return sorted(samples)


def metric_sum(text: str, name: str) -> float:
    """Sum of every sample of a Prometheus counter (all label sets)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Probe:
    """Reads the counters of the simulator, the worker and the two topics."""

    def __init__(self, http: aiohttp.ClientSession, sim_url: str, worker_url: str,
                 consumer: AIOKafkaConsumer, partitions: int, sim: Process,
                 worker: Process) -> None:  # fmt: skip
        self.http, self.sim_url, self.worker_url = http, sim_url, worker_url
        self.consumer, self.partitions, self.sim, self.worker = consumer, partitions, sim, worker
        self.kafka_pid: int | None = None

    async def sim_stats(self) -> dict[str, Any]:
        async with self.http.get(f"{self.sim_url}/stats") as resp:
            return await resp.json()

    async def control(self, profile: str, **changes: Any) -> None:
        async with self.http.post(f"{self.sim_url}/control/{profile}", json=changes) as resp:
            resp.raise_for_status()

    async def writer_stats(self) -> dict[str, Any]:
        """The raw writer's counters from /health (`broker_writer`), {} if not there."""
        try:
            async with self.http.get(f"{self.worker_url}/health") as resp:
                return dict((await resp.json(content_type=None)).get("broker_writer") or {})
        except (aiohttp.ClientError, ValueError, TimeoutError):
            return {}

    async def metrics(self) -> str:
        async with self.http.get(f"{self.worker_url}/metrics") as resp:
            return await resp.text()

    async def end_offsets(self, topic: str) -> dict[int, int]:
        parts = [TopicPartition(topic, p) for p in range(self.partitions)]
        return {tp.partition: end for tp, end in (await self.consumer.end_offsets(parts)).items()}

    async def end_offset(self, topic: str) -> int:
        return sum((await self.end_offsets(topic)).values())

    async def snapshot(self) -> Snapshot:
        wall, mono = time.time_ns(), time.monotonic()
        stats = await self.sim_stats()
        text = await self.metrics()
        return Snapshot(
            wall, mono, stats["totals"]["price_lines"],
            metric_sum(text, "ingest_ticks_in_total"), metric_sum(text, "ingest_rejects_total"),
            await self.end_offsets(RAW_BROKER_TICKS), await self.end_offsets(MARKET_DATA_STREAM),
            self.worker.cpu_s(), self.sim.cpu_s(), cpu_s(self.kafka_pid),
            run_queue_wait_s(self.worker.proc.pid if self.worker.proc else None),
        )  # fmt: skip


async def wait_until(check: Any, timeout: float, step: float = 0.25) -> float | None:
    """Seconds until `check()` (async) is true, None after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(step)
    return None


def latencies(
    arrivals: list[tuple[int, bytes]], start_ns: int, end_ns: int
) -> tuple[list[float], int]:
    """(sorted ms of the distinct ticks read by the source in [start, end), re-emissions)."""
    seen: set[tuple[Any, ...]] = set()
    samples: list[float] = []
    again = 0
    for arrival, data in arrivals:
        for t in codec.decode_market_data(data).ticks:
            key = (t.source, t.symbol, t.receive_time_ns, t.event_time_ns, t.bid_e9, t.ask_e9)
            if key in seen:
                again += start_ns <= t.receive_time_ns < end_ns
                continue
            seen.add(key)
            if start_ns <= t.receive_time_ns < end_ns:
                samples.append((arrival - t.receive_time_ns) / 1e6)
    return sorted(samples), again


async def run(
    stack: StackConfig, run_dir: Path, partitions: int,
    rate: int = 1000, seconds: float = 20.0, warmup_s: float = 3.0, linger_ms: float = 0.0,
) -> E2EResult:  # fmt: skip
    await reset_topics(stack.kafka_bootstrap, list(ALL_TOPIC_NAMES), partitions)
    app_id = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    sim, sim_url = simulator(rate, run_dir / app_id / "simulator.log")
    env = worker_env(sim_url, linger_ms)
    worker = faust_worker(stack, app_id, run_dir, partitions, extra_env=env)
    worker_url = f"http://127.0.0.1:{worker.env['INGEST__SERVICE__WEB_PORT']}"
    arrivals: list[tuple[int, bytes]] = []

    async def on_message(msg: nats.aio.msg.Msg) -> None:
        arrivals.append((time.time_ns(), msg.data))  # decoded after the run: keep up

    nc = await nats.connect(stack.nats_url, **connect_options(get_settings().nats))
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, **kafka_options())
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    probe = Probe(http, sim_url, worker_url, consumer, partitions, sim, worker)
    with contextlib.suppress(OSError, ValueError):
        probe.kafka_pid = int(stack.pid_file("kafka").read_text().strip())
    try:
        sim.start()
        if await wait_until(lambda: _answers(probe), 30) is None:
            raise RuntimeError(f"simulator did not start:\n{sim.log_tail()}")
        await consumer.start()
        await asyncio.to_thread(worker.start_ready)
        await nc.subscribe(SUBJECT, cb=on_message)

        async def connected() -> bool:
            profiles = (await probe.sim_stats())["profiles"]
            return all(profiles[n]["open_streams"] == 1 for n in PROFILES)

        if await wait_until(connected, 60) is None:
            raise RuntimeError(f"brokers did not connect:\n{worker.log_tail()}")
        for name in PROFILES:
            await probe.control(name, paused=False)
        await asyncio.sleep(warmup_s)
        first = await probe.snapshot()
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - first.mono)))
        last = await probe.snapshot()
        load = os.getloadavg()[0]
        for name in PROFILES:
            await probe.control(name, paused=True)
        stopped = time.monotonic()
        total = await _settled_lines(probe)

        async def consumed() -> bool:
            return metric_sum(await probe.metrics(), "ingest_ticks_in_total") >= total

        drained = await wait_until(consumed, WAIT_S)
        drain_s = None if drained is None else time.monotonic() - stopped
        out_total = await probe.end_offset(MARKET_DATA_STREAM)

        async def on_nats() -> bool:
            return len(arrivals) >= out_total

        nats_complete = await wait_until(on_nats, WAIT_S) is not None
        writer = await probe.writer_stats()
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()
        await http.close()
        await consumer.stop()
        await asyncio.to_thread(worker.stop)
        await asyncio.to_thread(sim.stop)
    values, again = latencies(arrivals, first.wall_ns, last.wall_ns)
    raw = await raw_latencies(stack.kafka_bootstrap, first.raw_ends, last.raw_ends)
    span = last.mono - first.mono
    sent = last.sim_lines - first.sim_lines
    raw_per_s = (last.raw_messages - first.raw_messages) / span
    rtt_s = writer.get("mean_round_trip_us", float("nan")) / 1e6
    # One message in flight per partition: at most partitions / max(round trip, linger)
    # raw messages per second, and never more than one per tick.
    predicted = min(sent / span, partitions / max(rtt_s, linger_ms / 1000, 1e-9))
    achieved = sent / span
    backlog = max(0, int(last.sim_lines - last.ticks_in))
    why_not = []
    if achieved < FEED_SHARE * rate:
        why_not.append(f"feed {achieved / rate:.0%} of target")
    if backlog > BACKLOG_S * achieved:
        why_not.append(f"backlog {backlog / max(achieved, 1):.1f} s at window end")
    if drain_s is None or drain_s > DRAIN_S:
        why_not.append(
            f"not drained in {WAIT_S:.0f} s" if drain_s is None else f"drained in {drain_s:.1f} s"
        )
    if not nats_complete:
        why_not.append(f"NATS got {len(arrivals)} of {out_total} messages")
    return E2EResult(
        rate=rate, achieved=achieved, seconds=span, sent=sent, received=len(values),
        re_emitted=again, p50_ms=percentile(values, 0.5), p90_ms=percentile(values, 0.9),
        p99_ms=percentile(values, 0.99), max_ms=values[-1] if values else float("nan"),
        raw_p50_ms=percentile(raw, 0.5), raw_p99_ms=percentile(raw, 0.99),
        raw_messages_per_s=raw_per_s, linger_ms=linger_ms, send_rtt_ms=rtt_s * 1000,
        ticks_per_raw_message=sent / max(1, last.raw_messages - first.raw_messages),
        predicted_raw_per_s=predicted,
        out_messages_per_s=(last.out_messages - first.out_messages) / span,
        worker_cpu_pct=100 * (last.worker_cpu_s - first.worker_cpu_s) / span,
        simulator_cpu_pct=100 * (last.sim_cpu_s - first.sim_cpu_s) / span,
        kafka_cpu_pct=100 * (last.kafka_cpu_s - first.kafka_cpu_s) / span,
        worker_wait_pct=100 * (last.worker_wait_s - first.worker_wait_s) / span,
        rejects=int(last.rejects - first.rejects), backlog_end=backlog, drain_s=drain_s,
        nats_complete=nats_complete, complete=drain_s is not None and nats_complete,
        kept_up=not why_not, why_not=why_not,
        restarts=worker.restarts, load_avg_1m=load,
    )  # fmt: skip


async def _answers(probe: Probe) -> bool:
    try:
        await probe.sim_stats()
        return True
    except aiohttp.ClientError:
        return False


async def _settled_lines(probe: Probe) -> int:
    """PRICE lines written in all, once the pause has taken effect (a write in flight when
    the pause arrived is counted after it completes)."""
    before = -1
    for _ in range(60):
        await asyncio.sleep(0.5)
        now = (await probe.sim_stats())["totals"]["price_lines"]
        if now == before:
            return now
        before = now
    raise RuntimeError("the simulator kept writing PRICE lines after the pause")
