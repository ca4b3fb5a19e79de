"""A new broker kind is one module plus one registry entry: settings, client and parsing follow."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from app.core.models import Tick, parse_price
from app.core.processor import SymbolState, TickProcessor
from app.settings import BrokerSettings, ConfigError, load_settings
from app.sources.brokers import registry
from app.sources.brokers.oanda import OandaSettings
from app.sources.contract import ConnectionState
from app.sources.dukascopy.bi5 import SOURCE as DUKASCOPY
from app.wire import codec

T0 = 1_796_029_200_000_000_000


class FakeSettings(BrokerSettings):
    kind: Literal["fake_kind"] = "fake_kind"
    feed_url: str


class FakeClient:
    def __init__(self, name: str, cfg: FakeSettings, sink: object) -> None:
        self.cfg = cfg
        self.state = ConnectionState(name, "fake_kind", cfg.priority, list(cfg.symbols))

    async def run(self) -> None: ...

    async def close(self) -> None: ...


def parse_fake(payload: bytes, source: str, receive_time_ns: int) -> Tick:
    """'SYMBOL BID ASK EVENT_NS': the fake provider's wire format."""
    symbol, bid, ask, event = payload.decode().split()
    return Tick(
        symbol, source, parse_price(bid), parse_price(ask), 0.0, 0.0, int(event), receive_time_ns
    )


CONFIG = """
brokers:
  fake_one:
    kind: fake_kind
    feed_url: http://127.0.0.1:1/feed
    symbols: [EURUSD]
    priority: 1
  oanda_one:
    stream_url: http://127.0.0.1:2
    account: a
    token_env: T
    symbols: [EURUSD]
    priority: 2
instruments:
  EURUSD: {asset_class: fx_major, pip: "0.0001", decimals: 5}
"""


@pytest.fixture
def fake_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = registry.BrokerKind(FakeSettings, FakeClient, "fake_v1", parse_fake)
    monkeypatch.setitem(registry.KINDS, "fake_kind", entry)


def test_settings_clients_and_processing_of_a_registered_kind(fake_kind: None, tmp_path: Path):
    path = tmp_path / "service.yaml"
    path.write_text(CONFIG)
    settings = load_settings(path, environ={})
    assert isinstance(settings.brokers["fake_one"], FakeSettings)
    assert isinstance(settings.brokers["oanda_one"], OandaSettings)  # kind defaults to OANDA
    clients = registry.build_clients(settings.brokers, sink=object())  # type: ignore[arg-type]
    assert [type(c).__name__ for c in clients] == ["FakeClient", "OandaPriceStream"]

    processor = TickProcessor(settings, registry.payload_parsers(), (DUKASCOPY,))
    record = codec.RawRecord(
        source="fake_one", format="fake_v1", payload=f"EURUSD 1.1 1.1001 {T0}".encode(),
        receive_time_ns=T0 + 1_000_000,
    )  # fmt: skip
    result = processor.process("EURUSD", [record], "raw.broker.ticks", 0, 0, SymbolState(), True)
    assert result.rejected == []
    assert [(b.tick.source, b.tick.bid) for b in result.emitted] == [("fake_one", 1_100_000_000)]


def test_a_kind_nobody_registered_names_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "service.yaml"
    path.write_text(CONFIG)
    known = "\\(known: mt5, oanda_v20"
    with pytest.raises(ConfigError, match=f"unknown broker kind 'fake_kind' {known}"):
        load_settings(path, environ={})


def test_a_kinds_own_fields_are_checked(fake_kind: None, tmp_path: Path) -> None:
    path = tmp_path / "service.yaml"
    path.write_text(CONFIG.replace("    feed_url: http://127.0.0.1:1/feed\n", ""))
    with pytest.raises(ConfigError, match=r"brokers\.fake_one\.feed_url"):
        load_settings(path, environ={})
