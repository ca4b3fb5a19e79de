"""nats-bridge-published: "<topic>/<partition>" -> the last Kafka offset NATS has acked.

Written by the NATS bridge after the ack (the end of the contiguous acked prefix, see
app.sinks.nats.resume), in the partition of the bridged message, so it moves with the
partition on a rebalance. A restarted bridge skips offsets at or below it: JetStream's
duplicate window is then only the second line of defence. Never cleared by `replay`: a
replay appends to market-data-stream at new offsets, it never rewinds it.
"""

from app.pipeline.faust_app import app, settings

bridge_published = app.Table(
    "nats-bridge-published",
    default=None,
    key_type=bytes,  # bytes -> faust's "raw" serializer for the store and the changelog
    value_type=bytes,
    partitions=settings.kafka.partitions,
    help="topic/partition -> last Kafka offset acked by NATS (ASCII decimal)",
)
