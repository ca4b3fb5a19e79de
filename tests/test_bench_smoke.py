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
