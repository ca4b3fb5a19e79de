"""The context agent with a poisoned observation (issue #15), in memory (faust test_context).

An observation whose time is outside int64 makes the protobuf encoding raise. Before the
fix that exception left the agent while the event was acknowledged: the answer was lost
without a trace. Now it is a reject with a reason, and the agent goes on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from app.agents import context as ctx
from app.sources.collectors import registry
from app.sources.collectors.observation import Observation
from app.wire import codec

BODY = (Path(__file__).parent.parent / "fixtures" / "coingecko" / "simple_price.json").read_bytes()


def poisoned() -> Observation:
    obs = Observation("coingecko", "bitcoin/usd", 1.0, "usd", 10, "crypto")
    object.__setattr__(obs, "observation_time_ns", 2**63)  # past the parser's own check
    return obs


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple[bytes, bytes]]]:
    out: dict[str, list[tuple[bytes, bytes]]] = {"rejects": [], "context": []}

    def recorder(name: str) -> Any:
        async def send(key: bytes, value: bytes, **_: Any) -> asyncio.Future[None]:
            out[name].append((key, value))
            ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            ack.set_result(None)
            return ack

        return send

    monkeypatch.setattr(ctx.market_data_rejects, "send", recorder("rejects"))
    monkeypatch.setattr(ctx.market_context_stream, "send", recorder("context"))
    monkeypatch.setattr(ctx, "last_context", {})
    return out


async def test_unencodable_observation_is_a_reject_and_the_agent_goes_on(
    sent: dict[str, list[tuple[bytes, bytes]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = Observation("coingecko", "ethereum/usd", 3454.2, "usd", 10, "crypto")
    monkeypatch.setitem(registry.PARSERS, "coingecko", lambda body, series: [poisoned(), good])
    record = codec.RawRecord(
        source="coingecko", format="coingecko", payload=BODY, receive_time_ns=1
    )
    async with ctx.normalise_context.test_context() as agent:
        await agent.put(codec.encode_raw_batch([record]), key=b"coingecko")
        later = Observation("coingecko", "ethereum/usd", 3500.0, "usd", 20, "crypto")
        monkeypatch.setitem(registry.PARSERS, "coingecko", lambda body, series: [later])
        await agent.put(codec.encode_raw_batch([record]), key=b"coingecko")
    [(key, value)] = sent["rejects"]
    rejection = codec.decode_rejection(value)
    assert key == b"coingecko" and list(rejection.reasons) == ["unencodable"]
    assert rejection.stage == "context" and rejection.record.payload == BODY
    assert "coingecko:bitcoin/usd" in rejection.detail
    # the good observation of the same answer and the next event both went out
    assert [k for k, _ in sent["context"]] == [b"coingecko:ethereum/usd"] * 2
