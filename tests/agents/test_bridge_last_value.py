"""The bridge's last-value offers for best-price messages of one or several symbols."""

from __future__ import annotations

from typing import Any

import pytest

from app.agents import nats_bridge


@pytest.fixture
def offers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    got: list[tuple[Any, ...]] = []
    monkeypatch.setattr(nats_bridge.last_values, "offer", lambda *a: got.append(a))
    return got


def test_a_message_of_several_symbols_is_the_last_value_of_each(offers: list) -> None:
    subject = "market.data-ingestion.ticks"
    nats_bridge._last_value("best", b"AUDUSD,USDCHF", subject, b"payload")(41)
    nats_bridge._last_value("best", b"EURUSD", subject, b"one")(42)
    assert offers == [
        ("best.AUDUSD", 41, subject, b"payload"),
        ("best.USDCHF", 41, subject, b"payload"),
        ("best.EURUSD", 42, subject, b"one"),
    ]


def test_a_candle_key_is_offered_as_it_is(offers: list) -> None:
    nats_bridge._last_value("candle.1m.EURUSD", b"EURUSD:1m", "s", b"c")(7)
    assert offers == [("candle.1m.EURUSD", 7, "s", b"c")]
