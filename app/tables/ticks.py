"""The processing core's tables: RocksDB stores, recovered from their changelog topics.

faust writes every table change to the changelog partition of the raw message being
processed, and each write is one changelog message; so the state is grouped to need as
few writes as possible: one value per symbol and one per input partition, each written
at most once per group of raw messages.

Keys are UTF-8 bytes (raw serializer): a symbol key hashes to the same partition as the
raw topic's key, which `table_route` relies on. Values are bytes in the encodings of
`app.tables.values` (one typed record per table):

- symbol-state            symbol -> SymbolStateValue: the last ACCEPTED quote per broker
                          (validation state), broker quality counters, the last emitted
                          best-price choice, reject counts per reason, and the offset of the
                          last raw message applied per input partition;
- historical-symbol-state the same for raw.historical.ticks (quotes and rejects only), kept
                          apart so that history never competes in best price;
- partition-state         "<topic>/<partition>" -> PartitionClocks: newest accepted event
                          time per source among this partition's symbols (the `stale` rule),
                          for raw.broker.ticks;
- historical-partition-state the same for raw.historical.ticks. One table per input topic,
                          so every table derives from exactly one raw topic and
                          `replay --topic X` deletes whole changelogs of X's tables only.
                          (Upgrading: history's clocks start empty once - a laxer `stale`
                          check for its first ticks - and its old keys in partition-state
                          are dead until the next replay of raw.broker.ticks drops them.)
"""

from __future__ import annotations

from typing import Any

import faust

from app.pipeline.faust_app import app, settings
from app.tables.values import SymbolStateValue, decode


def _table(name: str, help: str) -> faust.Table:
    return app.Table(
        name,
        default=None,
        key_type=bytes,  # bytes -> faust's "raw" serializer for the store and the changelog
        value_type=bytes,
        partitions=settings.kafka.partitions,
        help=help,
    )


symbol_state = _table("symbol-state", "symbol -> quotes, quality, best price, reject counts")
historical_state = _table("historical-symbol-state", "symbol -> historical quotes and rejects")
partition_state = _table("partition-state", "topic/partition -> broker clocks")
historical_partition_state = _table(
    "historical-partition-state", "topic/partition -> historical source clocks"
)


def items_of(table: faust.Table, field: str) -> list[tuple[str, Any]]:
    """(symbol, value.field) of every symbol of this worker's partitions where it is set.

    Keys of rejected input are whatever the raw message's key was: maybe not UTF-8, and
    maybe in several partitions (a message without a key goes round-robin), so keys are
    decoded with replacement and sorted alone (equal keys would compare the values).
    """
    found: dict[str, Any] = {}
    for key, data in sorted(table.items(), key=lambda item: item[0]):
        value = getattr(decode(SymbolStateValue, data), field)
        if value:
            found[key.decode("utf-8", "replace")] = value
    return list(found.items())
