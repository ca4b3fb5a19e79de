"""The per-message adaptations (bench/PROFILE.md): the lean Prometheus monitor exports what
faust's does, and a fetched message reaches its stream without tasks unless it must wait."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from app.compat import faust_kafka

TPS = [TP("raw.broker.ticks", 0), TP("raw.broker.ticks", 3), TP("market-data-stream", 1)]
# faust's monitor times each stream event; the lean one does not (noack streams)
NOT_KEPT = ("faust_events_runtime_ms",)


class _Stream:
    """What the sensors read of a faust stream (hashable by identity, as faust's are)."""

    shortlabel = "Stream: raw.broker.ticks"

    def __init__(self) -> None:
        self.task_owner = _Stream  # an agent (weakly referenced by faust's monitor)


STREAM = _Stream()


def _drive(monitor: PrometheusMonitor, messages: int) -> None:
    stream = STREAM
    table = SimpleNamespace(name="symbol-state")
    for i in range(messages):
        tp = TPS[i % len(TPS)]
        message = SimpleNamespace(time_in=None, time_out=None, time_total=None)
        monitor.track_tp_end_offset(tp, i + 10)
        monitor.on_message_in(tp, i, message)
        state = monitor.on_stream_event_in(tp, i, stream, message)  # type: ignore[arg-type]
        monitor.on_table_get(table, b"k")  # type: ignore[arg-type]
        monitor.on_table_set(table, b"k", b"v")  # type: ignore[arg-type]
        sent = monitor.on_send_initiated(None, "market-data-stream", None, 1, 2)  # type: ignore[arg-type]
        monitor.on_send_completed(None, sent, None)  # type: ignore[arg-type]
        monitor.on_stream_event_out(tp, i, stream, message, state)  # type: ignore[arg-type]
        monitor.on_message_out(tp, i, message)  # type: ignore[arg-type]


def _exposition(monitor_class: type[PrometheusMonitor], messages: int) -> list[str]:
    registry = CollectorRegistry()
    monitor = monitor_class(metrics=FaustMetrics.create(registry, "faust"))
    _drive(monitor, messages)
    lines = generate_latest(registry).decode().splitlines()
    # latencies differ run to run; their sample counts and everything else must not
    return [
        line
        for line in lines
        if not line.startswith("#")
        and not line.startswith(NOT_KEPT)
        and "_created" not in line.split(" ")[0]
        and not line.split("{")[0].split(" ")[0].endswith(("_sum", "_bucket"))
    ]


def test_lean_monitor_exports_the_same_values_as_faust_monitor() -> None:
    assert _exposition(faust_kafka.LeanPrometheusMonitor, 30) == _exposition(PrometheusMonitor, 30)


def test_lean_monitor_keeps_what_faust_and_mode_keep_on_the_instance() -> None:
    """Nothing of the base classes is overwritten (mode keeps child services in `_children`)."""
    theirs = PrometheusMonitor(metrics=FaustMetrics.create(CollectorRegistry(), "faust"))
    ours = faust_kafka.LeanPrometheusMonitor(
        metrics=FaustMetrics.create(CollectorRegistry(), "faust")
    )
    for name, value in vars(theirs).items():
        assert type(getattr(ours, name)) is type(value), name


def test_lean_monitor_looks_each_label_set_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    labels = MetricWrapperBase.labels

    def counted(self: MetricWrapperBase, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return labels(self, *args, **kwargs)

    monkeypatch.setattr(MetricWrapperBase, "labels", counted)
    registry = CollectorRegistry()
    monitor = faust_kafka.LeanPrometheusMonitor(metrics=FaustMetrics.create(registry, "faust"))
    _drive(monitor, 30)
    first = calls
    _drive(monitor, 300)
    assert first > 0
    assert calls == first  # faust's own monitor: 7 lookups per message


def test_lean_monitor_exports_again_after_faust_clears_partition_metrics() -> None:
    registry = CollectorRegistry()
    monitor = faust_kafka.LeanPrometheusMonitor(metrics=FaustMetrics.create(registry, "faust"))
    tp = TPS[0]
    monitor.track_tp_end_offset(tp, 5)
    monitor._clear_partition_related_metrics()  # what faust does on every rebalance
    monitor.track_tp_end_offset(tp, 7)
    text = generate_latest(registry).decode()
    assert 'faust_topic_partition_end_offset{partition="0",topic="raw.broker.ticks"} 7.0' in text


def test_worker_app_uses_the_lean_monitor() -> None:
    code = (
        "import app.pipeline.faust_app as f\n"
        "from app.compat.faust_kafka import LeanPrometheusMonitor\n"
        "print(type(f.app.monitor) is LeanPrometheusMonitor)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "True", done.stderr


@pytest.fixture
async def delivery(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A real faust consumer and conductor handler, the consumer class patched (and restored)."""
    consumer_class = faust_aiokafka.Consumer
    original = getattr(consumer_class, "_faust_wait_first", consumer_class.wait_first)
    monkeypatch.setattr(consumer_class, "wait_first", original)
    monkeypatch.delattr(consumer_class, "_faust_wait_first", raising=False)
    faust_kafka.deliver_without_tasks()
    app = faust.App("compat-delivery-test", broker="kafka://127.0.0.1:1", store="memory://")
    consumer = app.consumer
    assert isinstance(consumer, consumer_class)
    handler = app.topics._compile_message_handler()
    return SimpleNamespace(app=app, consumer=consumer, handler=handler)


def _counting_tasks(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    created: list[object] = []
    ensure_future = asyncio.ensure_future

    def counted(*args: Any, **kwargs: Any) -> Any:
        created.append(args[0])
        return ensure_future(*args, **kwargs)

    monkeypatch.setattr(asyncio, "ensure_future", counted)
    return created


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the unused wait() is closed
async def test_message_that_needs_no_wait_is_delivered_without_tasks(
    delivery: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: list[object] = []

    async def stream_callback(message: object) -> None:
        got.append(message)

    message = SimpleNamespace(tp=TPS[0])
    delivery.app.topics._tp_to_callback[TPS[0]] = stream_callback
    created = _counting_tasks(monkeypatch)
    suspend = asyncio.Event()
    result = await delivery.consumer.wait_first(delivery.handler(message), suspend.wait())
    assert got == [message]
    assert created == []  # mode's wait_first: four tasks for this one message
    assert not result.stopped


async def test_message_that_waits_is_delivered_later_or_abandoned_on_suspend(
    delivery: Any,
) -> None:
    gate = asyncio.Event()
    got: list[str] = []

    async def stream_callback(message: object) -> None:
        try:
            await gate.wait()  # a full stream buffer
            await asyncio.sleep(0)
            got.append("delivered")
        except asyncio.CancelledError:
            got.append("cancelled")
            raise

    delivery.app.topics._tp_to_callback[TPS[0]] = stream_callback
    suspend = asyncio.Event()
    waiting = asyncio.ensure_future(
        delivery.consumer.wait_first(delivery.handler(SimpleNamespace(tp=TPS[0])), suspend.wait())
    )
    await asyncio.sleep(0.05)
    assert not waiting.done()
    gate.set()
    await asyncio.wait_for(waiting, 5)
    assert got == ["delivered"]

    gate.clear()
    waiting = asyncio.ensure_future(
        delivery.consumer.wait_first(delivery.handler(SimpleNamespace(tp=TPS[0])), suspend.wait())
    )
    await asyncio.sleep(0.05)
    suspend.set()  # a rebalance stops the flow: the delivery is abandoned, as in faust
    await asyncio.wait_for(waiting, 5)
    await asyncio.sleep(0)
    assert got == ["delivered", "cancelled"]


async def test_other_waits_are_left_to_mode(delivery: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def other() -> int:
        return 1

    created = _counting_tasks(monkeypatch)
    result = await delivery.consumer.wait_first(other())
    assert result.results == [1]
    assert len(created) == 3  # mode's own wait_first ran


def test_check_sees_drain_messages_no_longer_using_wait_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from faust.transport import consumer as faust_consumer

    async def drain(self: Any, fetcher: Any) -> None:
        return None

    monkeypatch.setattr(faust_consumer.Consumer, "_drain_messages", drain)
    with pytest.raises(faust_kafka.CompatError, match="_drain_messages"):
        faust_kafka.check_installed()


def test_check_sees_a_sensor_hook_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    def on_message_in(self: Any, tp: Any, offset: int, message: Any, extra: Any) -> None:
        return None

    monkeypatch.setattr(PrometheusMonitor, "on_message_in", on_message_in)
    with pytest.raises(faust_kafka.CompatError, match="on_message_in"):
        faust_kafka.check_installed()
