"""End-to-end runs of the tick pipeline for fault tests: deterministic input, exact outputs.

`tick_messages` builds the same raw stream every time (RawBatch messages keyed by symbol,
like the live source under load). Loaded into a fresh raw topic with the same partition
count, it lands at the same partitions and offsets, so a worker produces the same output
bytes (lineage included) in every run: a faulty run can be compared with a clean one
message by message. `collect_run` gathers what a run left behind: market-data-stream,
market-data-rejects, the table views and the JetStream messages.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.js.errors
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.pipeline.topics import MARKET_DATA_REJECTS, MARKET_DATA_STREAM, RAW_BROKER_TICKS
from app.wire import codec
from tests.support.kafka import create_topics, partitions_of, produce

MS = 1_000_000
T0 = 1_796_029_200_000_000_000  # 2026-11-30T09:00:00Z
BROKERS = ("ic_markets", "pepperstone", "fxcm")
# symbol -> (mid price, pip) at the start; all are configured instruments.
SYMBOLS = {
    "EURUSD": (1.10000, 0.0001),
    "GBPUSD": (1.27000, 0.0001),
    "USDJPY": (151.000, 0.01),
    "USDCHF": (0.88000, 0.0001),
    "AUDUSD": (0.66000, 0.0001),
    "EURGBP": (0.86000, 0.0001),
}
TABLE_VIEWS = ("/tables/last-price", "/tables/best-price", "/tables/quality", "/tables/rejects")

Message = tuple[bytes, bytes]


def tick_messages(total: int = 100_000, seed: int = 7) -> list[Message]:
    """`total` ticks of 3 brokers x 6 symbols in RawBatch messages of 50-200 records.

    Event times rise 1 ms per tick over the whole stream (nothing goes stale, every
    broker stays fresh for best price). On purpose, ~0.5 % of the ticks are crossed
    quotes, and every 10th message starts with a re-send of the last accepted tick of
    one broker (a `duplicate` reject), so rejects and their state are exercised too.
    """
    rng = random.Random(seed)
    mids = {(b, s): mid for b in BROKERS for s, (mid, _) in SYMBOLS.items()}
    last_good: dict[tuple[str, str], codec.MarketTick] = {}
    messages: list[Message] = []
    clock, made, m = T0, 0, 0
    while made < total:
        symbol = list(SYMBOLS)[m % len(SYMBOLS)]
        pip = SYMBOLS[symbol][1]
        records: list[codec.RawRecord] = []
        if m % 10 == 0:
            resent = [last_good[(b, symbol)] for b in BROKERS if (b, symbol) in last_good]
            if resent:
                again = codec.MarketTick()
                again.CopyFrom(rng.choice(resent))
                records.append(_record(again, clock))
        for _ in range(min(rng.randint(50, 200), total - made - len(records))):
            broker = rng.choice(BROKERS)
            mid = mids[(broker, symbol)] = mids[(broker, symbol)] + rng.gauss(0, 0.3) * pip
            half = rng.randint(2, 15) * pip / 10
            bid, ask = round(mid - half, 6), round(mid + half, 6)
            crossed = rng.random() < 0.005
            if crossed:
                bid, ask = ask, bid
            clock += MS
            tick = codec.MarketTick(
                symbol=symbol,
                source=broker,
                bid_e9=round(bid * 1e9),
                ask_e9=round(ask * 1e9),
                bid_volume=float(rng.choice((5e5, 1e6, 2e6))),
                ask_volume=float(rng.choice((5e5, 1e6, 2e6))),
                event_time_ns=clock,
            )
            if not crossed:
                last_good[(broker, symbol)] = tick
            records.append(_record(tick, clock + rng.randint(1, 30) * MS))
        made += len(records)
        messages.append((symbol.encode(), codec.encode_raw_batch(records)))
        m += 1
    return messages


def _record(tick: codec.MarketTick, receive_ns: int) -> codec.RawRecord:
    tick.receive_time_ns = receive_ns
    return codec.RawRecord(source=tick.source, format="tick", receive_time_ns=receive_ns, tick=tick)


def records_in(messages: Iterable[Message]) -> int:
    return sum(len(codec.decode_raw_batch(v).records) for _, v in messages)


async def load_raw(bootstrap: str, messages: list[Message], partitions: int) -> None:
    """Create raw.broker.ticks with `partitions` and produce `messages` in order, once each."""
    await create_topics(bootstrap, [RAW_BROKER_TICKS], partitions)
    before = sum((await end_offsets(bootstrap, RAW_BROKER_TICKS)).values())
    await produce(bootstrap, RAW_BROKER_TICKS, messages)
    after = sum((await end_offsets(bootstrap, RAW_BROKER_TICKS)).values())
    # A producer retry would shift every later offset and break the comparison.
    assert after - before == len(messages), f"raw topic grew by {after - before}"


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    parts = await partitions_of(bootstrap, topic, timeout=5)
    if not parts:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Message]:
    """Every record of `topic` up to its end offsets at the time of the call."""
    return [(key, value) for _, _, key, value in await read_located(bootstrap, topic, timeout)]


async def read_located(
    bootstrap: str, topic: str, timeout: float = 30.0
) -> list[tuple[int, int, bytes | None, bytes]]:
    """Every record of `topic` up to its end offsets, as (partition, offset, key, value)."""
    ends = await end_offsets(bootstrap, topic)
    tps = [TopicPartition(topic, p) for p, end in ends.items() if end]
    if not tps:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[tuple[int, int, bytes | None, bytes]] = []
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        left = {tp.partition: ends[tp.partition] for tp in tps}
        deadline = time.monotonic() + timeout
        while left:
            assert time.monotonic() < deadline, f"{topic}: not read to the end: {left}"
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp.partition]:
                        out.append((tp.partition, r.offset, r.key, r.value))
                if tp.partition in left and await consumer.position(tp) >= left[tp.partition]:
                    del left[tp.partition]
    finally:
        await consumer.stop()
    return out


async def group_lag(bootstrap: str, group: str, topics: Iterable[str]) -> dict[str, int]:
    """Messages per topic-partition ("topic/p") not yet committed by `group`."""
    lag: dict[str, int] = {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        for topic in topics:
            for p, end in (await end_offsets(bootstrap, topic)).items():
                meta = committed.get(TopicPartition(topic, p))
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                if end - done:
                    lag[f"{topic}/{p}"] = end - done
    finally:
        await admin.close()
    return lag


async def wait_complete(
    bootstrap: str, nats_url: str, stream: str, clean: RunOutput, timeout: float = 90.0
) -> None:
    """Until market-data-stream and market-data-rejects hold every distinct message of
    the clean run and JetStream as many messages, then 1.5 s more so that a surplus
    shows too. Completion is judged by the output, not by committed offsets (see the
    note on faust's commit tracking after a restart in tests/faults)."""
    deadline = time.monotonic() + timeout
    while True:
        stream_out = set(await read_all(bootstrap, MARKET_DATA_STREAM))
        rejects = set(await read_all(bootstrap, MARKET_DATA_REJECTS))
        stored = await jetstream_count(nats_url, stream)
        if (
            stream_out >= set(clean.stream)
            and rejects >= set(clean.rejects)
            and stored >= len(clean.jetstream)
        ):
            await asyncio.sleep(1.5)
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"incomplete after {timeout}s: {len(set(clean.stream) - stream_out)} stream and"
                f" {len(set(clean.rejects) - rejects)} reject messages missing"
                f" (read from {raw_lineage(set(clean.stream) - stream_out)}),"
                f" JetStream {stored}/{len(clean.jetstream)}"
                f" (not in JetStream: {await jetstream_gaps(bootstrap, nats_url, stream)})"
            )
        await asyncio.sleep(0.5)


def raw_lineage(messages: Iterable[Message]) -> str:
    """The raw partition@offsets that `messages` (market-data-stream) were made from."""
    where = sorted(
        {
            (tick.lineage.partition, tick.lineage.offset)
            for _, value in messages
            for tick in codec.decode_market_data(value).ticks
        }
    )
    return ", ".join(f"p{p}@{o}" for p, o in where) or "none"


async def jetstream_gaps(bootstrap: str, nats_url: str, stream: str) -> str:
    """The market-data-stream messages whose bytes JetStream lacks, as partition@offsets
    (where a bridge failure is to be looked for in the worker logs)."""
    stored = {data for _, data in await jetstream_messages(nats_url, stream)}
    missing: dict[int, list[int]] = {}
    for partition, offset, _, value in await read_located(bootstrap, MARKET_DATA_STREAM):
        if value not in stored:
            missing.setdefault(partition, []).append(offset)
    return "; ".join(f"p{p}@{offs}" for p, offs in sorted(missing.items())) or "none"


async def wait_committed(bootstrap: str, group: str, timeout: float = 120.0) -> None:
    """Until `group` has committed all of the raw topic and market-data-stream (the NATS
    bridge commits only after JetStream acked): a fresh worker's run is complete."""
    topics = (RAW_BROKER_TICKS, MARKET_DATA_STREAM)
    deadline = time.monotonic() + timeout
    while True:
        lag = await group_lag(bootstrap, group, topics)
        if not lag and (await end_offsets(bootstrap, RAW_BROKER_TICKS)):
            return
        assert time.monotonic() < deadline, f"group {group} not done: lag {lag}"
        await asyncio.sleep(0.25)


async def jetstream_count(nats_url: str, stream: str) -> int:
    """Messages in the stream; -1 while NATS is unreachable (the outage scenarios poll it)."""
    try:
        nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
    except Exception:
        return -1
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    except nats.js.errors.NotFoundError:
        return 0
    finally:
        await nc.close()


async def output_count(bootstrap: str) -> int:
    """Messages in market-data-stream so far (0 before the topic exists)."""
    return sum((await end_offsets(bootstrap, MARKET_DATA_STREAM)).values())


async def wait_output(bootstrap: str, at_least: int, timeout: float = 60.0) -> int:
    """Messages in market-data-stream once there are at least `at_least`."""
    deadline = time.monotonic() + timeout
    while (count := await output_count(bootstrap)) < at_least:
        assert time.monotonic() < deadline, f"market-data-stream stuck at {count}"
        await asyncio.sleep(0.02)
    return count


async def jetstream_messages(nats_url: str, stream: str) -> list[tuple[str, bytes]]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return []
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            out.append((msg.subject, msg.data))
        assert len(out) == info.state.messages
        return out
    finally:
        await nc.close()


async def delete_stream(nats_url: str, stream: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().delete_stream(stream)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await nc.close()


def table_views(workers: Iterable[Any]) -> dict[str, Any]:
    """The table views, merged over workers (each shows its own partitions). Values are
    derived from event and receive times carried in the data, never from the wall clock."""
    views: dict[str, Any] = {}
    for worker in workers:
        for path in TABLE_VIEWS:
            view = worker.get_json(path)
            if path == "/tables/rejects":
                for part in ("live", "historical"):
                    merged = views.setdefault(path, {}).setdefault(part, {})
                    merged.update(view[part]["by_symbol"])
            else:
                views.setdefault(path, {}).update(view)
    return views


@dataclass
class RunOutput:
    """What one run left: outputs as (key, bytes) with their multiplicity, tables, NATS."""

    stream: Counter[Message]
    rejects: Counter[Message]
    tables: dict[str, Any]
    jetstream: list[tuple[str, bytes]]
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def ticks_out(self) -> int:
        """Distinct ticks in market-data-stream."""
        return sum(len(codec.decode_market_data(v).ticks) for _, v in self.stream)

    def duplicates(self) -> int:
        return sum(self.stream.values()) - len(self.stream)

    def reject_duplicates(self) -> int:
        return sum(self.rejects.values()) - len(self.rejects)


async def collect_run(
    bootstrap: str, nats_url: str, stream: str, workers: Iterable[Any]
) -> RunOutput:
    """Call when the run is complete: everything the run produced."""
    return RunOutput(
        stream=Counter(await read_all(bootstrap, MARKET_DATA_STREAM)),
        rejects=Counter(await read_all(bootstrap, MARKET_DATA_REJECTS)),
        tables=table_views(workers),
        jetstream=await jetstream_messages(nats_url, stream),
    )


@dataclass(frozen=True)
class Comparison:
    """A faulty run against a clean one; `ok` only when nothing is lost or extra."""

    expected: int
    lost: int
    extra: int
    duplicated: int
    rejects_lost: int
    rejects_extra: int
    jetstream_lost: int
    jetstream_extra: int
    jetstream_count: int
    tables_equal: bool

    @property
    def ok(self) -> bool:
        return (
            self.lost == self.extra == self.rejects_lost == self.rejects_extra == 0
            and self.jetstream_lost == self.jetstream_extra == 0
            and self.jetstream_count == self.expected
            and self.tables_equal
        )


def compare_runs(clean: RunOutput, faulty: RunOutput) -> Comparison:
    want, got = set(clean.stream), set(faulty.stream)
    want_rej, got_rej = set(clean.rejects), set(faulty.rejects)
    # Each run has its own subject prefix (first token): compare the rest and the bytes.
    want_js = {(s.split(".", 1)[1], d) for s, d in clean.jetstream}
    got_js = {(s.split(".", 1)[1], d) for s, d in faulty.jetstream}
    return Comparison(
        expected=len(want),
        lost=len(want - got),
        extra=len(got - want),
        duplicated=faulty.duplicates(),
        rejects_lost=len(want_rej - got_rej),
        rejects_extra=len(got_rej - want_rej),
        jetstream_lost=len(want_js - got_js),
        jetstream_extra=len(got_js - want_js),
        jetstream_count=len(faulty.jetstream),
        tables_equal=clean.tables == faulty.tables,
    )


def nats_env(tag: str) -> dict[str, str]:
    """A JetStream stream and subject prefix of this run only (`tag`: [a-z0-9])."""
    return {
        "INGEST__NATS__SUBJECT_PREFIX": f"f{tag}",
        "INGEST__NATS__STREAM_NAME": f"F{tag.upper()}",
        "INGEST__NATS__ACK_TIMEOUT_S": "2",
        "INGEST__NATS__RECONNECT_WAIT_S": "0.5",
        # The scenarios compare JetStream with market-data-stream message for message;
        # candles have end-to-end and replay tests of their own (tests/agents).
        "INGEST__CANDLES__ENABLED": "false",
    }


def describe_differences(clean: RunOutput, faulty: RunOutput, limit: int = 3) -> str:
    """What a faulty run has that the clean run has not, for the failure message."""
    lines = []
    for key, value in sorted(set(faulty.stream) - set(clean.stream))[:limit]:
        ticks = codec.decode_market_data(value).ticks
        first = ticks[0].lineage if ticks else None
        lines.append(
            f"extra output {key!r}: {len(ticks)} ticks, first from"
            f" {first.topic}/{first.partition}@{first.offset}"
            if first
            else f"extra {key!r}"
        )
    for path, view in clean.tables.items():
        other = faulty.tables.get(path, {})
        for part in sorted(set(view) | set(other)):
            if view.get(part) != other.get(part):
                lines.append(f"{path} differs at {part}: clean {str(view.get(part))[:300]}")
                lines.append(f"{' ' * len(path)}          faulty {str(other.get(part))[:300]}")
    return "\n".join(lines)
