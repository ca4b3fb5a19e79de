"""The one faust.App of the service, built from the validated settings.

Agents, tables and web views live in their own packages and are found by autodiscovery,
so `faust -A app worker` starts the whole pipeline.
"""

from __future__ import annotations

import logging
import sys

import faust

from app.compat import faust_kafka
from app.ops.web_auth import web_application_options
from app.pipeline.kafka_clients import faust_credentials
from app.settings import ConfigError, Settings, get_settings

try:
    settings: Settings = get_settings()
    faust_kafka.check_installed()
except (ConfigError, faust_kafka.CompatError) as exc:
    sys.stderr.write(f"data-ingestion: {exc}\n")
    raise SystemExit(2) from None


def create_app(cfg: Settings) -> faust.App:
    """Faust settings that matter for a tick pipeline: RocksDB tables, acks=all, fast commits."""
    return faust.App(
        cfg.service.app_id,
        broker=f"kafka://{cfg.kafka.bootstrap_servers}",
        broker_credentials=faust_credentials(cfg.kafka),
        store=cfg.service.store,
        datadir=str(cfg.service.data_dir),
        autodiscover=["app.tables", "app.agents", "app.sources", "app.ops", "app.cli"],
        origin="app",
        topic_partitions=cfg.kafka.partitions,
        topic_replication_factor=cfg.kafka.replication_factor,
        producer_acks=cfg.kafka.producer_acks,
        producer_linger_ms=cfg.kafka.producer_linger_ms,
        producer_max_batch_size=cfg.kafka.producer_max_batch_size,
        broker_commit_interval=cfg.kafka.commit_interval_s,
        broker_session_timeout=cfg.kafka.session_timeout_s,
        broker_heartbeat_interval=cfg.kafka.heartbeat_interval_s,
        web_host=cfg.service.web_host,
        web_port=cfg.service.web_port,
        web_bind=cfg.service.web_host,
        web_application_options=web_application_options(cfg.service),
        version=1,
        Topic="app.pipeline.visible_topic:VisibleTopic",
        Worker="app.cli.replay_guard:Worker",  # refuses to start mid-replay
    )


app = create_app(settings)
faust_kafka.install(app, settings.kafka.fetch_max_wait_ms)
# faust's worker leaves these at DEBUG; each logs a record per Kafka message sent (measured:
# about 3% of the worker's CPU at one tick per message), which nobody reads at INFO.
for _chatty in ("faust.topics", "aiokafka.producer.producer"):
    logging.getLogger(_chatty).setLevel(logging.INFO)
# faust's own sensors (events, commits, send latency ...) plus app/ops/metrics.py at /metrics;
# the lean monitor keeps their per-message cost down (app/compat/faust_kafka.py)
faust_kafka.lean_prometheus_sensors(app, name_prefix="faust")
