"""The faust/aiokafka adaptations act on the real installed classes, and the start-up check
catches an internal that is gone (so an upgrade cannot silently turn a patch into a no-op)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import faust
import pytest
from aiokafka import AIOKafkaConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from app.compat import faust_kafka

THREAD = faust_aiokafka.AIOKafkaConsumerThread


def _original_factory() -> object:
    return getattr(THREAD, "_faust_create_worker_consumer", THREAD._create_worker_consumer)


async def test_real_worker_consumer_gets_the_fetch_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """faust's own factory builds a real AIOKafkaConsumer: 1500 ms unpatched, ours patched."""
    monkeypatch.setattr(THREAD, "_create_worker_consumer", _original_factory())
    monkeypatch.delattr(THREAD, "_faust_create_worker_consumer", raising=False)
    app = faust.App("compat-test", broker="kafka://127.0.0.1:1", store="memory://")
    thread = app.consumer._thread
    unpatched = thread._create_worker_consumer(app.transport)
    assert isinstance(unpatched, AIOKafkaConsumer)
    assert unpatched._fetch_max_wait_ms == 1500
    faust_kafka.set_fetch_max_wait(123)
    patched = thread._create_worker_consumer(app.transport)
    assert isinstance(patched, AIOKafkaConsumer)
    assert patched._fetch_max_wait_ms == 123


def test_check_passes_on_the_installed_versions() -> None:
    faust_kafka.check_installed()


@pytest.mark.parametrize("name", ["_create_worker_consumer", "_ensure_consumer", "call_thread"])
def test_check_names_a_missing_consumer_thread_internal(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(THREAD, name, None)  # gone here or in a base class (mode's)
    with pytest.raises(faust_kafka.CompatError, match=name):
        faust_kafka.check_installed()


def test_check_sees_aiokafka_no_longer_reading_the_fetch_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def start(self: AIOKafkaConsumer) -> None:  # a start() that ignores the field
        return None

    monkeypatch.setattr(AIOKafkaConsumer, "start", start)
    with pytest.raises(faust_kafka.CompatError, match="no longer reads _fetch_max_wait_ms"):
        faust_kafka.check_installed()


def test_check_sees_the_current_event_variable_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    import faust.streams

    monkeypatch.setattr(faust.streams, "_current_event", None)
    with pytest.raises(faust_kafka.CompatError, match="_current_event"):
        faust_kafka.check_installed()


def test_worker_stops_with_one_line_when_an_internal_is_gone() -> None:
    code = (
        "from faust.transport.drivers import aiokafka as a\n"
        "del a.AIOKafkaConsumerThread._ensure_consumer\n"
        "import app.pipeline.faust_app\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "data-ingestion: faust/aiokafka internals changed: "
        "faust AIOKafkaConsumerThread._ensure_consumer is gone"
    ]


def test_the_worker_app_runs_with_every_rebalance_adaptation() -> None:
    """The adaptations' own tests apply them directly; this checks that building the
    worker's app installs each of them."""
    code = (
        "import app.pipeline.faust_app\n"
        "from aiokafka.consumer import subscription_state as s\n"
        "from faust.tables.recovery import Recovery\n"
        "from faust.transport import consumer as c\n"
        "from faust.transport.drivers import aiokafka as a\n"
        "for f in (s.TopicPartitionState.seek, s.TopicPartitionState.reset_to,\n"
        "          a.AIOKafkaConsumerThread._fetch_records, c.Consumer._reset_state,\n"
        "          c.Consumer._add_gap, c.Consumer._new_offset,\n"
        "          Recovery.on_recovery_completed, Recovery._resume_streams):\n"
        "    print(f.__module__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["app.compat.faust_kafka"] * 8


class _Event:
    """Stands for a faust Event: faust keeps only a weak reference to it."""


def test_in_event_is_what_faust_reads_as_the_current_event() -> None:
    event = _Event()
    assert faust.current_event() is None
    with faust_kafka.in_event(event):  # type: ignore[arg-type]
        assert faust.current_event() is event
    assert faust.current_event() is None


def test_only_changelogs_of_own_active_tables_are_paused() -> None:
    """Source partitions and standby changelogs are still fetched; own changelogs are not."""
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
    paused = faust_kafka.own_changelog_partitions(fake_app)  # type: ignore[arg-type]
    assert [(tp.topic, tp.partition) for tp in paused] == [
        ("app-partition-state-changelog", 0),
        ("app-symbol-state-changelog", 0),
    ]


def test_a_module_failing_at_discovery_stops_the_worker() -> None:
    """faust itself only logs it and starts without the module's agents and views."""
    app = faust.App(
        "compat-discovery", broker="kafka://127.0.0.1:1", autodiscover=["tests.compat.broken_pkg"]
    )
    app.discover()  # faust's own behaviour: a logged warning, nothing raised
    faust_kafka.fail_on_discovery_error(app)
    with pytest.raises(faust_kafka.DiscoveryError, match="bug at import"):
        app.discover()


def test_check_sees_discovery_no_longer_reporting_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def discover(self: faust.App, *modules: str) -> None:  # a discover() without the hook
        return None

    monkeypatch.setattr(faust.App, "discover", discover)
    with pytest.raises(faust_kafka.CompatError, match="discover"):
        faust_kafka.check_installed()


def test_dummy_index_is_unmounted_from_a_real_faust_app() -> None:
    app = faust.App("compat-web", broker="kafka://127.0.0.1:1")

    def mounted() -> list[str]:
        return [str(bp) for _prefix, bp in app.web.blueprints._enabled]

    assert any("production_index" in bp for bp in mounted())  # faust's own placeholder
    faust_kafka.drop_dummy_index(app)
    assert not any("production_index" in bp for bp in mounted())
    assert mounted()  # the other blueprints stay


def test_check_sees_the_blueprint_list_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    from faust.web import base

    class Manager:  # a BlueprintManager that keeps its blueprints some other way
        def __init__(self) -> None:
            self.mounted: list[str] = []

    monkeypatch.setattr(base, "BlueprintManager", Manager)
    with pytest.raises(faust_kafka.CompatError, match="BlueprintManager"):
        faust_kafka.check_installed()
