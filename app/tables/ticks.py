"""The processing core's tables: RocksDB stores, recovered from their changelog topics.

Every key lives in the partition of the raw message that writes it (faust writes a table
change to the changelog partition of the current event). Raw topics are keyed by symbol,
so the per-symbol tables are keyed by symbol and hold one entry per broker inside the
value: one read and one write per table per batch. Per-broker values that span symbols
(the newest event time of a broker) are kept per input partition, because a partition
only sees its own symbols.

Keys are UTF-8 bytes (raw serializer): a symbol key hashes to the same partition as
the raw topic's key, which `table_route` relies on. Values are plain JSON lists/dicts
(ints stay exact, no faust Record overhead):

- last-price          symbol -> {source: [event_ns, bid, ask, bid_vol, ask_vol,
                                  receive_ns, topic, partition, offset, index]}
                      the last ACCEPTED quote per broker; also the validation state.
- historical-price    same layout, for raw.historical.ticks (kept apart from live
                      brokers so that history never competes in best price).
- broker-clock        "<topic>/<partition>/<source>" -> newest accepted event_ns of the
                      source among this partition's symbols (the `stale` rule).
- best-price          symbol -> [source, bid, ask, best_bid, best_bid_source, best_ask,
                      best_ask_source] last emitted choice (emit only on change).
- quality             symbol -> {broker: stats list, see app.quality}.
- reject-counts       symbol -> {reason: count} (live brokers).
- historical-reject-counts  the same for raw.historical.ticks (each agent owns its keys,
                      so the two agents never interleave a read-modify-write).
- applied-offsets     "<topic>/<partition>" -> offset of the last raw message whose
                      effects are in the tables (skips re-delivered messages after a crash).
"""

from __future__ import annotations

import faust

from app.faust_app import app, settings


def _table(name: str, help: str) -> faust.Table:
    return app.Table(
        name,
        default=None,
        key_type=bytes,
        value_type=None,
        partitions=settings.kafka.partitions,
        help=help,
    )


last_price = _table("last-price", "symbol -> {broker: last accepted quote}")
historical_price = _table("historical-price", "symbol -> {source: last accepted quote}")
broker_clock = _table("broker-clock", "topic/partition/source -> newest accepted event ns")
best_price = _table("best-price", "symbol -> last emitted best-price choice")
quality = _table("quality", "symbol -> {broker: quality counters}")
reject_counts = _table("reject-counts", "symbol -> {reason: count}")
historical_reject_counts = _table(
    "historical-reject-counts", "symbol -> {reason: count} of historical ticks"
)
applied_offsets = _table("applied-offsets", "topic/partition -> last applied raw offset")
