"""Every Kafka topic of the service, in one place. All are keyed by symbol.

Values are bytes (protobuf, see app/wire/codec.py); faust only moves them. The topics are
declared `internal` so that faust creates them before subscribing: a topic that does not
exist when a worker starts is otherwise silently skipped until the next restart.
"""

from __future__ import annotations

import asyncio
import logging

import faust
from aiokafka.errors import KafkaError

from app.pipeline.faust_app import app, settings
from app.sources.contract import Backoff

log = logging.getLogger(__name__)

RAW_BROKER_TICKS = "raw.broker.ticks"
RAW_EXTERNAL_DATA = "raw.external.data"
RAW_HISTORICAL_TICKS = "raw.historical.ticks"
MARKET_DATA_REJECTS = "market-data-rejects"
MARKET_DATA_STREAM = "market-data-stream"
MARKET_CONTEXT_STREAM = "market-context-stream"
MARKET_CANDLES = "market-candles"  # protobuf Candle, key "<symbol>:<timeframe>"

ALL_TOPIC_NAMES = (
    RAW_BROKER_TICKS,
    RAW_EXTERNAL_DATA,
    RAW_HISTORICAL_TICKS,
    MARKET_DATA_REJECTS,
    MARKET_DATA_STREAM,
    MARKET_CONTEXT_STREAM,
    MARKET_CANDLES,
)


def _topic(name: str) -> faust.TopicT:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.kafka.partitions,
        replicas=settings.kafka.replication_factor,
        internal=True,
    )


raw_broker_ticks = _topic(RAW_BROKER_TICKS)
raw_external_data = _topic(RAW_EXTERNAL_DATA)
raw_historical_ticks = _topic(RAW_HISTORICAL_TICKS)
market_data_rejects = _topic(MARKET_DATA_REJECTS)
market_data_stream = _topic(MARKET_DATA_STREAM)
market_context_stream = _topic(MARKET_CONTEXT_STREAM)
market_candles = _topic(MARKET_CANDLES)

ALL_TOPICS = (
    raw_broker_ticks,
    raw_external_data,
    raw_historical_ticks,
    market_data_rejects,
    market_data_stream,
    market_context_stream,
    market_candles,
)


async def declare_all() -> None:
    """Create every topic that does not exist yet (idempotent)."""
    for topic in ALL_TOPICS:
        await topic.maybe_declare()


@app.task
async def declare_topics_at_start() -> None:
    """Producers (sources, rejects) must not race a missing topic at start-up.

    A broker that dies meanwhile (a cluster losing a node) must not crash the worker: the
    declaration is idempotent, so it is tried again until the cluster answers.
    """
    backoff = Backoff(0.5, 10.0)
    attempt = 0
    while True:
        try:
            await declare_all()
            return
        except KafkaError as exc:
            attempt += 1
            delay = backoff.delay(attempt)
            log.warning("declaring topics failed (%r); again in %.1fs", exc, delay)
            await asyncio.sleep(delay)
