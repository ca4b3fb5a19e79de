"""The codec benchmark runs on the pipeline's real output (no timing is asserted)."""

import pytest

pytest.importorskip("app.core.processor", reason="the processing core is not merged yet")

from bench import codec_bench


def test_codec_bench_measures_the_same_content_on_both_sides() -> None:
    result = codec_bench.run(ticks=600, batch=50, repeats=1)
    assert result.ticks > 0
    # run() raises when protobuf and JSON decode to different values; sizes are deterministic.
    assert result.proto_bytes_per_tick < result.json_bytes_per_tick
    assert result.proto_encode_us > 0 and result.json_decode_us > 0


def test_e2e_latency_reads_each_tick_from_the_protobuf_once() -> None:
    from app.wire import codec
    from bench.e2e import latencies, metric_sum

    def stream(*ticks: tuple[str, str, int]) -> bytes:
        msg = codec.MarketDataStream(source=codec.OUTPUT_SOURCE)
        for symbol, source, receive_ns in ticks:
            msg.ticks.add(symbol=symbol, source=source, receive_time_ns=receive_ns, bid_e9=1)
        return msg.SerializeToString()

    ms = 1_000_000
    arrivals = [
        # two symbols in one message (multi-symbol output): each tick counts on its own
        (10 * ms, stream(("EURUSD", "ic_markets", 7 * ms), ("USDJPY", "fxcm", 8 * ms))),
        # the EURUSD quote again (another tick's choice): counted once, at its first arrival
        (15 * ms, stream(("EURUSD", "ic_markets", 7 * ms))),
        # read before the window: not a sample
        (16 * ms, stream(("GBPUSD", "pepperstone", 1 * ms))),
    ]
    values, again = latencies(arrivals, 5 * ms, 20 * ms)
    assert values == [2.0, 3.0]
    assert again == 1
    text = 'x_total{source="a"} 2.0\ningest_ticks_in_total{source="a"} 3.0\n'
    text += 'ingest_ticks_in_total{source="b"} 4.0\ningest_ticks_in_totalx 9\n'
    assert metric_sum(text, "ingest_ticks_in_total") == 7.0
