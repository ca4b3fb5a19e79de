"""`tail` decodes what downstream consumers get."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.tail import format_message
from app.core.models import BestPrice, Tick, parse_price
from app.wire import codec
from devstack.stack import StackConfig
from tests.support.kafka import create_topics, produce

REPO = Path(__file__).resolve().parents[2]


def _stream(symbol: str = "EURUSD") -> bytes:
    tick = Tick(
        symbol,
        "ic_markets",
        parse_price("1.19197"),
        parse_price("1.19216"),
        5e5,
        5e5,
        1_506_291_639_888_097_022,
        1_506_291_639_900_000_000,
    )
    return codec.encode_market_data([BestPrice(tick, tick.bid, "ic_markets", tick.ask, "fxcm")])


def test_market_data_line_shows_exact_prices_and_sources() -> None:
    (line,) = format_message("market-data-stream", _stream(), as_json=False)
    assert "EURUSD" in line and "bid 1.19197" in line and "ask 1.19216" in line
    assert "best ask 1.19216 (fxcm)" in line and "2017-09-24T22:20:39.888097" in line


def test_market_data_json() -> None:
    (line,) = format_message("market-data-stream", _stream(), as_json=True)
    obj = json.loads(line)
    assert (obj["stream_source"], obj["source"], obj["symbol"], obj["bid"], obj["ask"]) == (
        "data-ingestion",
        "ic_markets",
        "EURUSD",
        "1.19197",
        "1.19216",
    )


def test_rejection_line_shows_reason_and_payload() -> None:
    record = codec.RawRecord(source="ic_markets", format="oanda_v20", payload=b'{"type":"PRI')
    data = codec.encode_rejection(["malformed_json"], "Unterminated string", record, "source")
    (line,) = format_message("market-data-rejects", data, as_json=False)
    assert line.startswith("source: malformed_json (Unterminated string) from ic_markets")
    assert '{"type":"PRI' in line


@pytest.mark.integration
async def test_tail_prints_decoded_ticks(clean_kafka: StackConfig) -> None:
    await create_topics(clean_kafka.kafka_bootstrap, ["market-data-stream"], partitions=2)
    await produce(
        clean_kafka.kafka_bootstrap,
        "market-data-stream",
        [(b"EURUSD", _stream()), (b"USDJPY", _stream("USDJPY"))],
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "tail",
            "market-data-stream",
            "--from-beginning",
            "--symbol",
            "USDJPY",
            "--timeout",
            "3",
        ],
        cwd=REPO,
        env={**os.environ, "INGEST__KAFKA__BOOTSTRAP_SERVERS": clean_kafka.kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[data-ingestion]")]
    assert len(lines) == 1 and "USDJPY" in lines[0] and "bid 1.19197" in lines[0]
