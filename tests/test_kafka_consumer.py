"""faust's consumers are built with the configured fetch wait, not faust's fixed 1.5 s."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka

import app.pipeline.faust_app  # noqa: F401  (applies the configured wait at import)
from app.compat.faust_kafka import set_fetch_max_wait
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


def test_only_changelogs_of_own_active_tables_are_paused() -> None:
    """Source partitions and standby changelogs are still fetched; own changelogs are not."""
    from faust.types import TP

    from app.compat.faust_kafka import own_changelog_partitions

    actives = {
        TP("raw.broker.ticks", 0),
        TP("app-symbol-state-changelog", 0),
        TP("app-partition-state-changelog", 0),
    }
    standbys = {TP("app-symbol-state-changelog", 1)}
    fake_app = SimpleNamespace(
        assignor=SimpleNamespace(
            # a partition listed as both (never expected) stays fetched: standby wins
            assigned_actives=lambda: actives | standbys,
            assigned_standbys=lambda: standbys,
        ),
        tables=SimpleNamespace(
            changelog_topics={"app-symbol-state-changelog", "app-partition-state-changelog"}
        ),
    )
    paused = own_changelog_partitions(fake_app)  # type: ignore[arg-type]
    assert [(tp.topic, tp.partition) for tp in paused] == [
        ("app-partition-state-changelog", 0),
        ("app-symbol-state-changelog", 0),
    ]
