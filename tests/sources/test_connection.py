"""Reconnect backoff, OANDA instrument names, connection state and the client registry."""

from __future__ import annotations

import random

import pytest

from app.sources.brokers.oanda import (
    OandaPriceStream,
    OandaSettings,
    error_message,
    oanda_instrument,
)
from app.sources.contract import Backoff, ConnectionState


def test_backoff_grows_exponentially_and_is_capped() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(1))
    delays = [backoff.next_delay() for _ in range(40)]
    caps = [min(30.0, 0.5 * 2**n) for n in range(40)]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert max(delays) <= 30.0 and delays[-1] >= 15.0


def test_backoff_is_jittered_and_resets() -> None:
    first = [Backoff(1.0, 8.0, random.Random(seed)).next_delay() for seed in range(20)]
    assert len(set(first)) == 20, "clients do not reconnect in lockstep"
    backoff = Backoff(1.0, 8.0, random.Random(3))
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0


def test_backoff_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)


@pytest.mark.parametrize(
    ("symbol", "instrument"),
    [
        ("EURUSD", "EUR_USD"),
        ("USDJPY", "USD_JPY"),
        ("XAUUSD", "XAU_USD"),
        ("SPX500USD", "SPX500_USD"),
    ],
)
def test_oanda_instrument_names(symbol: str, instrument: str) -> None:
    assert oanda_instrument(symbol) == instrument


def test_unknown_instrument_name_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="OANDA_INSTRUMENTS"):
        oanda_instrument("BTCUSDT")


def test_error_message_prefers_oanda_error_json() -> None:
    body = b'{"errorMessage":"Insufficient authorization to perform request."}'
    assert error_message(body) == "Insufficient authorization to perform request."
    assert error_message(b"<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"
    assert error_message(b"") == "(empty body)"


def test_rate_and_latency_are_over_the_last_full_second() -> None:
    state = ConnectionState("b", "oanda_v20", 1, ["EURUSD"])
    state.on_ticks(0, 0, 1_000_000_000)  # opens the window
    state.on_ticks(10, 10 * 5_000_000, 1_500_000_000)
    state.on_ticks(10, 10 * 15_000_000, 2_000_000_000)
    assert state.ticks_per_s == 20.0 and state.latency_ms == 10.0
    assert state.ticks_total == 20


def test_client_builds_the_stream_request_from_config() -> None:
    cfg = OandaSettings(
        stream_url="https://stream-fxpractice.oanda.com/",
        account="101-1",
        token_env="T",
        symbols=["EURUSD", "XAUUSD"],
        priority=1,
    )
    client = OandaPriceStream("b", cfg, sink=None)  # type: ignore[arg-type]
    assert client.url == "https://stream-fxpractice.oanda.com/v3/accounts/101-1/pricing/stream"
    assert client.instruments == "EUR_USD,XAU_USD"
