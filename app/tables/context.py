"""Last emitted market context per provider:series, so unchanged polls emit nothing.

The value is the observation's fingerprint (value, observation time, attributes). The
table is written in the partition of the raw record the observation came from; a series
always arrives under the same raw key, so its entry always lives in the same partition.
"""

from app.pipeline.faust_app import app

last_context = app.Table(
    "context-last-emitted",
    default=str,
    key_type=str,
    value_type=str,
    help="provider:series -> fingerprint of the last MarketContext emitted",
)
