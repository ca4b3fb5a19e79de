"""Candles end to end through a real worker, Kafka and JetStream.

1. Raw broker ticks in -> market-candles holds, per symbol, best-price candles equal to an
   independent OHLC of market-data-stream, and per broker candles equal to an independent
   OHLC of the accepted raw ticks; the same candles are on NATS under
   market.candles.<tf>.<symbol>[.<source>]; /candles/<symbol> shows the last ones; a second
   worker with fresh state over the same raw input produces byte-identical candles, which
   JetStream drops as duplicates (their Nats-Msg-Ids repeat).
2. The market-last bucket: a consumer that starts while ticks are flowing reads the bucket,
   subscribes from the smallest sequence + 1, and ends with every symbol's current price
   and every message after its snapshot (no gap).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from pathlib import Path

import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from app.core.models import format_price
from app.pipeline.topics import (
    MARKET_CANDLES,
    MARKET_DATA_REJECTS,
    MARKET_DATA_STREAM,
    RAW_BROKER_TICKS,
)
from app.sinks.nats.last_value import decode_entry
from app.wire import codec
from devstack.stack import StackConfig
from tests.support.candles import closed_windows, fields, final_revisions, independent
from tests.support.kafka import produce
from tests.support.pipeline import (
    SYMBOLS,
    group_lag,
    load_raw,
    nats_env,
    read_all,
    tick_messages,
    wait_committed,
)
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

BEST = codec.OUTPUT_SOURCE


def env_of(tag: str) -> dict[str, str]:
    return {
        **nats_env(tag),
        "INGEST__CANDLES__ENABLED": "true",  # nats_env turns them off for the fault suite
        "INGEST__NATS__LAST_VALUE_BUCKET": f"last-{tag}",
        # 12 s of ticks close no 1 min window: keep 1 s history for the view in this test
        "INGEST__CANDLES__HISTORY_TIMEFRAMES": '["1s", "1m"]',
    }


async def wait_drained(bootstrap: str, group: str, timeout: float = 120.0) -> None:
    """Raw and market-data-stream committed (wait_committed), then market-candles too: the
    bridge commits a candle only after JetStream stored it."""
    await wait_committed(bootstrap, group, timeout)
    deadline = time.monotonic() + timeout
    while lag := await group_lag(bootstrap, group, [MARKET_CANDLES]):
        assert time.monotonic() < deadline, f"market-candles not bridged: {lag}"
        await asyncio.sleep(0.25)


async def stream_messages(nats_url: str, stream: str) -> list[tuple[int, str, bytes]]:
    """(sequence, subject, data) of every message of the stream."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            out.append((seq, msg.subject, msg.data))
        return out
    finally:
        await nc.close()


def per_key(messages: list[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = defaultdict(list)
    for key, value in messages:
        out[key].append(value)
    return out


def best_ticks(stream: list[tuple[bytes, bytes]]) -> dict[str, list[tuple[int, int, int]]]:
    """symbol -> (event time, bid, ask) of the best prices, in output order."""
    out: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for _key, value in stream:
        msg = codec.decode_market_data(value)
        if msg.source == BEST:
            for t in msg.ticks:
                out[t.symbol].append((t.event_time_ns, t.bid_e9, t.ask_e9))
    return out


def accepted_ticks(
    raw: list[tuple[bytes, bytes]], rejects: list[tuple[bytes, bytes]]
) -> dict[tuple[str, str], list[tuple[int, int, int]]]:
    """(broker, symbol) -> raw ticks minus the rejected ones (a multiset), in input order."""
    refused: Counter[tuple] = Counter()
    for _key, value in rejects:
        rej = codec.decode_rejection(value)
        t = rej.record.tick
        refused[(t.symbol, t.source, t.event_time_ns, t.bid_e9, t.ask_e9)] += 1
    out: dict[tuple[str, str], list[tuple[int, int, int]]] = defaultdict(list)
    for _key, value in raw:
        for record in codec.decode_raw_batch(value).records:
            t = record.tick
            k = (t.symbol, t.source, t.event_time_ns, t.bid_e9, t.ask_e9)
            if refused[k]:
                refused[k] -= 1
                continue
            out[(t.source, t.symbol)].append((t.event_time_ns, t.bid_e9, t.ask_e9))
    assert not +refused, "a reject that matches no raw tick"
    return out


def check_stream(candles: dict, source: str, symbol: str, ticks: list) -> int:
    """Emitted candles of one stream == the independent OHLC of the windows it closed."""
    expected = closed_windows(independent(ticks), max(t for t, _, _ in ticks))
    got = {
        (tf, start): fields(c)
        for (src, sym, tf, start), c in candles.items()
        if (src, sym) == (source, symbol)
    }
    assert set(got) == set(expected), (source, symbol, set(got) ^ set(expected))
    for key, value in expected.items():
        assert got[key] == value, (source, symbol, key)
    return len(got)


async def test_candles_end_to_end_replay_identical(
    clean_kafka: StackConfig, app_id: str, tmp_path: Path
) -> None:
    boot, nats_url = clean_kafka.kafka_bootstrap, clean_kafka.nats_url
    messages = tick_messages(12_000, seed=11)  # 12 s of event time, 6 symbols, 3 brokers
    await load_raw(boot, messages, 4)
    tag = app_id[5:]
    env = env_of(tag)
    prefix, stream = env["INGEST__NATS__SUBJECT_PREFIX"], env["INGEST__NATS__STREAM_NAME"]

    with Worker(clean_kafka, tmp_path / "w1", app_id, env) as worker:
        await wait_drained(boot, app_id)
        first = await read_all(boot, MARKET_CANDLES)
        view = worker.get_json("/candles/EURUSD?tf=1s&limit=5")
        view_broker = worker.get_json("/candles/GBPUSD?tf=1s&limit=3&source=fxcm")

    decoded = [codec.decode_candle(v) for _, v in first]
    assert all(k == c.key.encode() for (k, _), c in zip(first, decoded, strict=True))
    final = final_revisions(decoded)
    rejects = await read_all(boot, MARKET_DATA_REJECTS)
    late = [r for _, r in rejects if codec.decode_rejection(r).stage == "candle"]
    assert late == []  # this input has no late tick: every tick is in its candle

    # best price: against market-data-stream; brokers: against the accepted raw ticks
    checked = Counter()
    for symbol, ticks in best_ticks(await read_all(boot, MARKET_DATA_STREAM)).items():
        checked[BEST] += check_stream(final, BEST, symbol, ticks)
    raw = await read_all(boot, RAW_BROKER_TICKS)
    for (source, symbol), ticks in accepted_ticks(raw, rejects).items():
        checked[source] += check_stream(final, source, symbol, ticks)
    assert set(checked) == {BEST, "ic_markets", "pepperstone", "fxcm"}
    assert min(checked.values()) >= 6 * 5, checked  # several closed 1 s windows per symbol
    assert {src for src, *_ in final} == set(checked)

    # NATS: every candle once, under its subject, same bytes
    nats_candles = [
        (s, d) for _, s, d in await stream_messages(nats_url, stream) if ".candles." in s
    ]
    assert len(nats_candles) == len(first) == len(set(first))
    for subject, data in nats_candles:
        c = codec.decode_candle(data)
        tail = "" if c.source == BEST else f".{c.source}"
        assert subject == f"{prefix}.candles.{c.timeframe}.{c.symbol}{tail}"
    assert {d for _, d in nats_candles} == {v for _, v in first}

    # the view: the last closed candles of the history table
    best_eurusd = sorted(
        (c for (src, sym, tf, _), c in final.items() if (src, sym, tf) == (BEST, "EURUSD", "1s")),
        key=lambda c: c.start_ns,
    )
    assert [(r["start_ns"], r["tick_count"]) for r in view["candles"]] == [
        (c.start_ns, c.tick_count) for c in best_eurusd[-5:]
    ]
    fxcm = sorted(
        (c for (s, sym, tf, _), c in final.items() if (s, sym, tf) == ("fxcm", "GBPUSD", "1s")),
        key=lambda c: c.start_ns,
    )
    assert [r["start_ns"] for r in view_broker["candles"]] == [c.start_ns for c in fxcm[-3:]]
    assert view_broker["candles"][-1]["bid"]["close"] == format_price(fxcm[-1].bid_close)

    # replay: a fresh worker (new group, empty tables) over the same raw input
    replay_id = f"{app_id}r"
    with Worker(clean_kafka, tmp_path / "w2", replay_id, env):
        await wait_drained(boot, replay_id)
    both = per_key(await read_all(boot, MARKET_CANDLES))
    once = per_key(first)
    assert set(both) == set(once)
    for key, values in once.items():
        assert both[key] == values + values, key  # byte-identical, in the same order
    again = [(s, d) for _, s, d in await stream_messages(nats_url, stream) if ".candles." in s]
    assert sorted(again) == sorted(nats_candles)  # the copies were dropped by Nats-Msg-Id

    # market-last: each symbol's last best price and last best 1 s candle, with their seq
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        kv = await js.key_value(f"last-{tag}")
        stream_out = per_key(await read_all(boot, MARKET_DATA_STREAM))
        for symbol in SYMBOLS:
            seq, subject, payload = decode_entry((await kv.get(f"best.{symbol}")).value)
            assert subject == f"{prefix}.{BEST}.ticks"
            best_msgs = [
                v for v in stream_out[symbol.encode()] if codec.decode_market_data(v).source == BEST
            ]
            assert payload == best_msgs[-1]
            assert (await js.get_msg(stream, seq)).data == payload
            seq, subject, payload = decode_entry((await kv.get(f"candle.1s.{symbol}")).value)
            assert subject == f"{prefix}.candles.1s.{symbol}"
            assert payload == [v for v in once[f"{symbol}:1s".encode()] if _src(v) == BEST][-1]
    finally:
        await nc.close()


def _src(value: bytes) -> str:
    return codec.decode_candle(value).source


async def test_last_value_snapshot_then_stream_without_gap(
    clean_kafka: StackConfig, app_id: str, tmp_path: Path
) -> None:
    boot, nats_url = clean_kafka.kafka_bootstrap, clean_kafka.nats_url
    messages = tick_messages(16_000, seed=5)
    cut = len(messages) * 2 // 5
    await load_raw(boot, messages[:cut], 4)
    tag = app_id[5:]
    env = env_of(tag)
    prefix, stream = env["INGEST__NATS__SUBJECT_PREFIX"], env["INGEST__NATS__STREAM_NAME"]
    subject = f"{prefix}.{BEST}.ticks"

    async def feed_rest() -> None:
        for i in range(cut, len(messages), 20):
            await produce(boot, RAW_BROKER_TICKS, messages[i : i + 20])
            await asyncio.sleep(0.05)

    nc = await nats.connect(nats_url)
    with Worker(clean_kafka, tmp_path / "w", app_id, env):
        js = nc.jetstream()
        deadline = time.monotonic() + 60
        while True:  # the first part is in: every symbol has a last value
            try:
                kv = await js.key_value(f"last-{tag}")
                keys = [k for k in await kv.keys() if k.startswith("best.")]
            except Exception:  # bucket not created yet, or empty (NoKeysError)
                keys = []
            if len(keys) == len(SYMBOLS):
                break
            assert time.monotonic() < deadline, keys
            await asyncio.sleep(0.2)
        feeder = asyncio.ensure_future(feed_rest())
        await asyncio.sleep(0.3)  # ticks are flowing when the consumer starts

        # the recipe of docs/last-value.md
        snapshot: dict[str, tuple[int, bytes]] = {}
        for key in await kv.keys():
            if key.startswith("best."):
                seq, _subject, payload = decode_entry((await kv.get(key)).value)
                snapshot[key[5:]] = (seq, payload)
        start = min(seq for seq, _ in snapshot.values()) + 1
        sub = await js.pull_subscribe(
            subject,
            durable=f"c{tag}",
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
            ),
        )
        received: list[tuple[int, bytes]] = []

        async def pull() -> None:
            try:
                for msg in await sub.fetch(500, timeout=0.5):
                    received.append((msg.metadata.sequence.stream, msg.data))
                    await msg.ack()
            except (TimeoutError, nats.errors.TimeoutError):
                pass

        while not feeder.done():
            await pull()
        await feeder
        await wait_committed(boot, app_id)
        last_seq = (await js.get_last_msg(stream, subject)).seq  # all is in: stable
        deadline = time.monotonic() + 30
        while not received or received[-1][0] < last_seq:
            assert time.monotonic() < deadline, (received[-1:], last_seq)
            await pull()
    await nc.close()

    everything = await stream_messages(nats_url, stream)
    wanted = [(seq, data) for seq, s, data in everything if s == subject and seq >= start]
    assert [seq for seq, _ in received] == [seq for seq, _ in wanted]  # no gap, no surplus
    assert received == wanted
    assert sum(1 for seq, _ in received if seq > max(s for s, _ in snapshot.values())) > 0

    # each snapshot entry is the stream's message at its sequence, and every later message
    # of its symbol was received
    by_seq = {seq: (s, data) for seq, s, data in everything}
    for symbol, (seq, payload) in snapshot.items():
        assert by_seq[seq] == (subject, payload)
        later = [(q, d) for q, s, d in everything if s == subject and q > seq and _sym(d) == symbol]
        assert [(q, d) for q, d in received if q > seq and _sym(d) == symbol] == later

    # snapshot + what followed it = every symbol's current price
    current = dict(snapshot)
    for seq, data in received:
        symbol = codec.decode_market_data(data).ticks[0].symbol
        if seq > current[symbol][0]:
            current[symbol] = (seq, data)
    last_by_symbol: dict[str, bytes] = {}
    for _seq, s, data in everything:
        if s == subject:
            last_by_symbol[codec.decode_market_data(data).ticks[0].symbol] = data
    assert set(current) == set(SYMBOLS) == set(last_by_symbol)
    assert {s: d for s, (_, d) in current.items()} == last_by_symbol


def _sym(data: bytes) -> str:
    return codec.decode_market_data(data).ticks[0].symbol
