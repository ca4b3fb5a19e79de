"""faust's consumers are built with the configured fetch wait, not faust's fixed 1.5 s."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka

import app.faust_app  # noqa: F401  (applies the configured wait at import)
from app.kafka_consumer import set_fetch_max_wait
from app.settings import get_settings


def test_worker_consumer_gets_the_configured_fetch_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    thread_class = faust_aiokafka.AIOKafkaConsumerThread
    built = SimpleNamespace(_fetch_max_wait_ms=1500)
    # Stand in for faust's own factory so no Kafka client is built.
    monkeypatch.setattr(thread_class, "_faust_create_worker_consumer", lambda self, t: built)
    monkeypatch.setattr(
        thread_class, "_create_worker_consumer", thread_class._create_worker_consumer
    )
    set_fetch_max_wait(get_settings().kafka.fetch_max_wait_ms)
    consumer = thread_class._create_worker_consumer(object(), "transport")
    assert consumer is built
    assert consumer._fetch_max_wait_ms == get_settings().kafka.fetch_max_wait_ms == 100
