"""The processing core's tables: RocksDB stores, recovered from their changelog topics.

faust writes every table change to the changelog partition of the raw message being
processed, and each write is one changelog message; so the state is grouped to need as
few writes as possible: one value per symbol and one per input partition, each written
at most once per group of raw messages.

Keys are UTF-8 bytes (raw serializer): a symbol key hashes to the same partition as the
raw topic's key, which `table_route` relies on. Values are plain JSON (ints stay exact):

- symbol-state            symbol -> {
                              "quotes":  {source: [event_ns, bid, ask, bid_vol, ask_vol,
                                          receive_ns, topic, partition, offset, index]},
                                         the last ACCEPTED quote per broker (validation state),
                              "quality": {broker: stats list, see app.core.quality},
                              "best":    [source, bid, ask, best_bid, best_bid_source,
                                          best_ask, best_ask_source] last emitted choice,
                              "rejects": {reason: count},
                              "applied": {partition: offset of the last raw message of this
                                          symbol whose effects are in this value}}
                          State and applied offset in one value: one changelog record, so a
                          crash never leaves one ahead of the other.
- historical-symbol-state the same for raw.historical.ticks (quotes and rejects only), kept
                          apart so that history never competes in best price.
- partition-state         "<topic>/<partition>" -> {
                              "clocks":  {source: newest accepted event_ns among this
                                          partition's symbols} (the `stale` rule)}
"""

from __future__ import annotations

from typing import Any

import faust

from app.pipeline.faust_app import app, settings


def _table(name: str, help: str) -> faust.Table:
    return app.Table(
        name,
        default=None,
        key_type=bytes,
        value_type=None,
        partitions=settings.kafka.partitions,
        help=help,
    )


symbol_state = _table("symbol-state", "symbol -> quotes, quality, best price, reject counts")
historical_state = _table("historical-symbol-state", "symbol -> historical quotes and rejects")
partition_state = _table("partition-state", "topic/partition -> broker clocks")


def items_of(table: faust.Table, field: str) -> list[tuple[str, Any]]:
    """(symbol, value[field]) of every symbol of this worker's partitions that has it.

    Keys of rejected input are whatever the raw message's key was: maybe not UTF-8, and
    maybe in several partitions (a message without a key goes round-robin), so keys are
    decoded with replacement and sorted alone (equal keys would compare the values).
    """
    found: dict[str, Any] = {}
    for key, value in sorted(table.items(), key=lambda item: item[0]):
        if value.get(field):
            found[key.decode("utf-8", "replace")] = value[field]
    return list(found.items())
