"""The status page's pure parts: broker colours, context values, events, slow pages."""

from __future__ import annotations

import json

from app.ops.web.status import (
    SILENT_S,
    StatusFeed,
    _parse_fingerprint,
    broker_level,
    event,
    markets_closed,
)


def test_broker_level_red_when_down_or_silent_grey_when_disabled() -> None:
    assert broker_level({"status": "connected", "seconds_since_last_message": 0.2}) == "ok"
    assert broker_level({"status": "connected", "seconds_since_last_message": None}) == "ok"
    silent = {"status": "connected", "seconds_since_last_message": SILENT_S + 0.1}
    assert broker_level(silent) == "down"
    for status in ("connecting", "reconnecting", "auth_failed", "no_token"):
        assert broker_level({"status": status, "seconds_since_last_message": 0.1}) == "down"
    assert broker_level({"status": "disabled"}) == "off"
    assert broker_level(silent, markets_closed=True) == "off"  # a weekend, not an outage


def test_markets_closed_follows_the_calendar() -> None:
    saturday_noon = 1_798_891_200_000_000_000  # 2027-01-02 12:00 UTC
    wednesday_noon = 1_798_632_000_000_000_000  # 2026-12-30 12:00 UTC
    assert markets_closed(["EURUSD", "USDJPY"], saturday_noon)
    assert not markets_closed(["EURUSD", "USDJPY"], wednesday_noon)
    assert not markets_closed(["NOSUCH"], saturday_noon)  # unknown: never excused


def test_context_fingerprint_gives_value_and_time() -> None:
    assert _parse_fingerprint("4.25@1700000000000000000#unit=%") == ("4.25", 1700000000000000000)
    assert _parse_fingerprint("nan@12#") == ("nan", 12)
    assert _parse_fingerprint("odd") == ("odd", None)


def test_event_is_one_sse_message() -> None:
    raw = event("snapshot", {"a": [1, "x\ny"]}).decode()
    name, data, end = raw.split("\n", 2)
    assert name == "event: snapshot" and end == "\n"
    assert json.loads(data.removeprefix("data: ")) == {"a": [1, "x\ny"]}


async def test_a_slow_page_keeps_only_the_newest_snapshots() -> None:
    feed = StatusFeed()
    slow, fast = feed.subscribe(), feed.subscribe()
    for n in range(5):
        feed._publish(str(n).encode())
        assert fast.get_nowait() == str(n).encode()
    assert [slow.get_nowait(), slow.get_nowait()] == [b"3", b"4"]
    assert slow.empty()
    feed._publish(None)  # the worker stops: every stream ends
    assert slow.get_nowait() is None and fast.get_nowait() is None
    feed.unsubscribe(slow)
    assert feed.clients == {fast}
