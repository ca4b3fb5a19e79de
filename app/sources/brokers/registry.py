"""Broker kinds: a new kind of price feed is one module plus one entry here.

An entry gives the kind's settings model (validated for every `brokers:` entry of that
`kind`), its client factory, and, when its raw records carry the provider's payload
undecoded, the `format` name and the parser the processing agents use for it. Nothing
else in the service names a kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from app.core.processor import PayloadParser
from app.settings import BrokerSettings
from app.sources.brokers import mt5, oanda
from app.sources.contract import ConnectionState, RecordSink


class BrokerClient(Protocol):
    """What the service needs of a feed client; see OandaPriceStream."""

    state: ConnectionState

    async def run(self) -> None: ...

    async def close(self) -> None: ...


class BrokerClientFactory(Protocol):
    def __call__(self, name: str, cfg: Any, sink: RecordSink) -> BrokerClient: ...


@dataclass(frozen=True, slots=True)
class BrokerKind:
    settings: type[BrokerSettings]
    client: BrokerClientFactory
    payload_format: str | None = None
    parse_payload: PayloadParser | None = None


KINDS: dict[str, BrokerKind] = {
    "oanda_v20": BrokerKind(
        oanda.OandaSettings, oanda.OandaPriceStream, oanda.FORMAT, oanda.parse_oanda_record
    ),
    # Records carry the decoded tick (the payload is kept for audit only).
    "mt5": BrokerKind(mt5.Mt5BrokerSettings, mt5.Mt5Client),
}


def payload_parsers() -> dict[str, PayloadParser]:
    """format -> parser of every kind whose records carry undecoded payloads."""
    return {
        kind.payload_format: kind.parse_payload
        for kind in KINDS.values()
        if kind.payload_format and kind.parse_payload
    }


def build_clients(brokers: Mapping[str, BrokerSettings], sink: RecordSink) -> list[BrokerClient]:
    """A client for every enabled broker, highest priority (lowest number) first."""
    enabled = sorted(
        ((name, cfg) for name, cfg in brokers.items() if cfg.enabled),
        key=lambda item: (item[1].priority, item[0]),
    )
    return [KINDS[cfg.kind].client(name, cfg, sink) for name, cfg in enabled]
