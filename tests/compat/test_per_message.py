"""The per-message adaptations (bench/PROFILE.md): the lean Prometheus monitor exports what
faust's does, and a fetched message reaches its stream without tasks unless it must wait."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
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


def test_check_sees_a_sensor_hook_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    def on_message_in(self: Any, tp: Any, offset: int, message: Any, extra: Any) -> None:
        return None

    monkeypatch.setattr(PrometheusMonitor, "on_message_in", on_message_in)
    with pytest.raises(faust_kafka.CompatError, match="on_message_in"):
        faust_kafka.check_installed()
