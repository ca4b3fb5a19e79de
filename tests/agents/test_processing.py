"""A raw batch through TickProcessor without Kafka: parse, reject, best price, failover."""

from __future__ import annotations

from app.core.processor import SymbolState, TickProcessor
from app.settings import load_settings
from app.sources.brokers.registry import payload_parsers
from app.sources.dukascopy.bi5 import SOURCE as DUKASCOPY
from app.wire import codec

MS = 1_000_000
T0 = 1_796_029_200_000_000_000
PROC = TickProcessor(load_settings(), payload_parsers(), (DUKASCOPY,))


def rec(source: str, bid: int, ask: int, event_ms: int, symbol: str = "EURUSD") -> codec.RawRecord:
    event = T0 + event_ms * MS
    tick = codec.MarketTick(
        symbol=symbol,
        source=source,
        bid_e9=bid,
        ask_e9=ask,
        event_time_ns=event,
        receive_time_ns=event + 5 * MS,
    )
    return codec.RawRecord(source=source, format="tick", receive_time_ns=event + 5 * MS, tick=tick)


def line(event: str, bid: str, ask: str) -> bytes:
    return (
        f'{{"type":"PRICE","time":"{event}","instrument":"EUR_USD","tradeable":true,'
        f'"bids":[{{"price":"{bid}","liquidity":1}}],"asks":[{{"price":"{ask}","liquidity":1}}]}}'
    ).encode()


def run(records: list, state: SymbolState, symbol: str = "EURUSD", live: bool = True):
    return PROC.process(symbol, records, "raw.broker.ticks", 0, 7, state, live)


def test_best_price_emitted_only_on_change_and_fails_over():
    state = SymbolState()
    result = run(
        [
            rec("pepperstone", 1_100_000_000, 1_100_200_000, 0),  # only one: chosen
            rec("ic_markets", 1_100_000_000, 1_100_100_000, 100),  # tighter: takes over
            rec("pepperstone", 1_100_000_000, 1_100_200_000, 200),  # no change
            rec("pepperstone", 1_100_000_000, 1_100_200_000, 3101),  # ic stale: failover
        ],
        state,
    )
    chosen = [(b.tick.source, b.tick.event_time_ns - T0) for b in result.emitted]
    assert chosen == [("pepperstone", 0), ("ic_markets", 100 * MS), ("pepperstone", 3101 * MS)]
    assert result.emitted[1].best_bid_source == "ic_markets"  # equal bids: better priority
    assert state.best is not None and state.best.source == "pepperstone"
    assert state.quotes["ic_markets"].event_ns == T0 + 100 * MS
    assert result.emitted[1].tick.offset == 7 and result.emitted[1].tick.index == 1
    assert state.quality["pepperstone"].accepted == 3
    assert result.records_by_source == {"pepperstone": 3, "ic_markets": 1}


def test_rejects_carry_reasons_stage_and_record_and_do_not_move_state():
    state = SymbolState()
    good = rec("ic_markets", 1_100_000_000, 1_100_100_000, 0)
    result = run(
        [
            good,
            rec("ic_markets", 1_100_000_000, 1_100_100_000, 0),  # duplicate
            rec("ic_markets", 1_200_000_000, 1_200_100_000, 250),  # price jump
            codec.RawRecord(source="ic_markets", format="oanda_v20", payload=b"{nope"),
            codec.RawRecord(source="ic_markets", format="csv", payload=b"x"),
            rec("ic_markets", 1_100_000_000, 1_100_100_000, 500, symbol="GBPUSD"),
        ],
        state,
    )
    got = [(r.index, r.stage, r.reasons) for r in result.rejected]
    assert got == [
        (1, "validate", ["duplicate"]),
        (2, "validate", ["price_jump"]),
        (3, "parse", ["malformed_json"]),
        (4, "parse", ["unknown_format"]),
        (5, "validate", ["symbol_key_mismatch"]),
    ]
    assert result.rejected[3].record.payload == b"x"
    assert "price_jump" in result.rejected[1].detail
    assert state.quotes["ic_markets"].bid == 1_100_000_000
    assert state.rejects == {
        "duplicate": 1,
        "price_jump": 1,
        "malformed_json": 1,
        "unknown_format": 1,
        "symbol_key_mismatch": 1,
    }
    assert state.quality["ic_markets"].rejected == 5
    assert result.records_by_source == {"ic_markets": 6}  # every input record, parsed or not


def test_payload_is_parsed_when_tick_is_unset():
    state = SymbolState()
    raw = codec.RawRecord(
        source="fxcm",
        format="oanda_v20",
        payload=line("2026-11-30T09:00:00.000000000Z", "1.10000", "1.10010"),
        receive_time_ns=T0 + 3 * MS,
    )
    result = run([raw], state)
    assert [b.tick.source for b in result.emitted] == ["fxcm"]
    assert result.emitted[0].tick.bid == 1_100_000_000


def test_unknown_instrument_is_rejected():
    result = run([rec("fxcm", 1_000, 1_001, 0, symbol="FOOBAR")], SymbolState(), symbol="FOOBAR")
    assert [r.reasons for r in result.rejected] == [["unknown_instrument"]]


def test_history_passes_every_accepted_tick_per_source():
    state = SymbolState()
    records = [rec("dukascopy", 1_100_000_000, 1_100_010_000, i * 10) for i in range(5)]
    records.append(records[-1])  # duplicate
    result = run(records, state, live=False)
    assert [len(v) for v in result.passed.values()] == [5]
    assert [r.reasons for r in result.rejected] == [["duplicate"]]
    assert result.emitted == [] and state.quality == {}


def test_batch_of_thousand_ticks_from_three_brokers_round_trips_through_the_codec():
    """A large mixed batch goes through in one call (speed is measured in bench/, not here)."""
    brokers = ["ic_markets", "pepperstone", "fxcm"]
    records = [
        rec(brokers[i % 3], 1_100_000_000 + (i % 7) * 10_000, 1_100_100_000 + (i % 5) * 10_000, i)
        for i in range(1000)
    ]
    data = codec.encode_raw_batch(records)
    batch = list(codec.decode_raw_batch(data).records)
    result = run(batch, SymbolState())
    stream = codec.decode_market_data(codec.encode_market_data(result.emitted))
    assert result.accepted == 1000 and not result.rejected
    assert len(stream.ticks) == len(result.emitted) > 0
    assert stream.batch_time_ns == result.emitted[-1].tick.event_time_ns


def test_a_tick_from_an_unconfigured_source_is_rejected_as_unknown_source():
    state = SymbolState()
    result = run(
        [
            rec("rogue_broker", 1_000_000_000, 1_000_000_001, 0),  # tight spread: would win
            rec("pepperstone", 1_100_000_000, 1_100_200_000, 100),
        ],
        state,
    )
    assert [r.reasons for r in result.rejected] == [["unknown_source"]]
    assert result.rejected[0].record.source == "rogue_broker"
    assert [b.tick.source for b in result.emitted] == ["pepperstone"]
    assert "rogue_broker" not in state.quotes and state.best.source == "pepperstone"
    assert "rogue_broker" not in state.quality  # no state keyed by an unknown name
    # configured collectors and the Dukascopy importer are approved as well
    assert {"dukascopy", *load_settings().collectors} <= PROC.approved_sources
