"""Every adaptation of faust-streaming / aiokafka internals, and the check that they still fit.

`check_installed()` runs before the worker builds its app: a missing or changed internal
stops it with one clear line, instead of a patch that silently does nothing after an
upgrade. The adaptations:

1. **Fetch wait** (`set_fetch_max_wait`). faust 0.15.3 builds its aiokafka consumer with
   `fetch_max_wait_ms=1500` fixed. When a pending fetch covers only partitions without new
   data while others have some, the worker idles that long: a 200,000-tick run showed
   1.2-1.4 s stalls; 100 ms removed them (run time 4.2-8 s -> 3.2 s).
2. **Own changelogs not fetched** (`pause_own_changelogs`). faust "pauses" a partition only
   in its own bookkeeping, so aiokafka keeps fetching every assigned partition, including
   the changelogs of the worker's own active tables, which it writes and never reads after
   recovery (measured at 200 single-tick messages/s: worker CPU 58% -> 44%).
3. **faust's dummy index unmounted** (`drop_dummy_index`), so the status page serves `/`.
4. **Autodiscovery errors are fatal** (`fail_on_discovery_error`). faust logs a module that
   fails to import during autodiscovery as a warning and starts without its agents,
   tables or views: a worker that says "Ready" and processes nothing.
5. **Current event** (`in_event`). faust takes a table key's partition, for writes and for
   RocksDB reads, from the event being processed; the delivery engine reads and writes
   state outside faust's own iteration, so it sets that event itself.
6. **Idempotent producer** (`enable_idempotence`). faust 0.15.3 has no setting for it and
   turns it on only inside transactions (`Producer._settings_extra`). With acks=all on a
   replicated cluster, a send retried after a leader change would otherwise be written
   twice; with idempotence the broker drops the producer's own retried batches.
7. **Cheap per-message sensors** (`LeanPrometheusMonitor`). faust's Prometheus sensor runs
   on every message, stream event, send and table access: `labels()` lookups and the base
   Monitor's in-memory statistics (read by nothing here). At one tick per message that was
   12% of the worker (py-spy, bench/PROFILE.md). Same metric families; labelled children
   cached; no per-event runtime histogram (our agents iterate `noack()` streams, so an
   event "leaves" the stream when the loop moves on, which measures nothing).
8. **Delivery without tasks** (`deliver_without_tasks`). faust's consumer delivers each
   fetched message through `wait_first(callback(message), suspend_flow.wait())`: four tasks
   and an `asyncio.wait` per message, although the callback almost always finishes without
   waiting (the stream buffer has room). Its first step now runs inline; only a callback
   that really waits becomes a task and goes through `wait_first` as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.metadata
import inspect
import logging
import sys
import types
import weakref
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

import faust
import faust.streams
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.sensors import monitor as faust_monitor
from faust.sensors import prometheus as faust_prometheus
from faust.transport import conductor as faust_conductor
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.web import base as faust_web_base
from mode import services as mode_services

log = logging.getLogger(__name__)

# Versions these adaptations were written and measured against. Another version only
# warns; what stops the worker is an internal that is gone or different.
TESTED_VERSIONS = {"faust-streaming": ("0.15.3",), "aiokafka": ("0.13.", "0.14.")}


class CompatError(RuntimeError):
    """An internal that an adaptation relies on is missing or changed."""


def _problems() -> list[str]:
    problems = []
    thread_class = faust_aiokafka.AIOKafkaConsumerThread
    for name in ("_create_worker_consumer", "_ensure_consumer", "call_thread"):
        if not callable(getattr(thread_class, name, None)):
            problems.append(f"faust AIOKafkaConsumerThread.{name} is gone")
    consumer_src = inspect.getsource(AIOKafkaConsumer)
    if "self._fetch_max_wait_ms = fetch_max_wait_ms" not in consumer_src:
        problems.append("aiokafka AIOKafkaConsumer no longer stores _fetch_max_wait_ms")
    if "fetch_max_wait_ms=self._fetch_max_wait_ms" not in inspect.getsource(AIOKafkaConsumer.start):
        problems.append("aiokafka AIOKafkaConsumer.start no longer reads _fetch_max_wait_ms")
    if not callable(getattr(AIOKafkaConsumer, "pause", None)):
        problems.append("aiokafka AIOKafkaConsumer.pause is gone")
    if "self._thread" not in inspect.getsource(faust_aiokafka.Consumer):
        problems.append("faust's aiokafka Consumer no longer keeps its thread in _thread")
    if "onerror=self._on_autodiscovery_error" not in inspect.getsource(faust.App.discover):
        problems.append("faust App.discover no longer reports import errors to a hook")
    if not callable(getattr(faust_aiokafka.Producer, "_settings_extra", None)):
        problems.append("faust's aiokafka Producer._settings_extra is gone")
    if "self._enabled = list(initial)" not in inspect.getsource(faust_web_base.BlueprintManager):
        problems.append("faust's web BlueprintManager no longer keeps its list in _enabled")
    if not isinstance(getattr(faust.streams, "_current_event", None), contextvars.ContextVar):
        problems.append("faust.streams._current_event is no longer a ContextVar")
    problems.extend(_sensor_problems())
    problems.extend(_delivery_problems())
    return problems


def _sensor_problems() -> list[str]:
    problems = []
    fields = getattr(faust_prometheus.FaustMetrics, "_fields", ())
    missing = sorted(set(LEAN_METRICS) - set(fields))
    if missing:
        problems.append(f"faust FaustMetrics lost {', '.join(missing)}")
    monitor = faust_prometheus.PrometheusMonitor
    for name, lean in vars(LeanPrometheusMonitor).items():
        if not name.startswith(("on_", "track_")):
            continue
        theirs = getattr(monitor, name, None)
        if theirs is None or list(inspect.signature(theirs).parameters) != list(
            inspect.signature(lean).parameters
        ):
            problems.append(f"faust PrometheusMonitor.{name} is gone or changed")
    for name in ("_clear_partition_related_metrics", "_stream_label", "ms_since"):
        if not callable(getattr(monitor, name, None)):
            problems.append(f"faust PrometheusMonitor.{name} is gone")
    if "time" not in inspect.signature(faust_monitor.Monitor.__init__).parameters:
        problems.append("faust Monitor no longer takes its clock (`time`)")
    return problems


def _delivery_problems() -> list[str]:
    problems = []
    drain = " ".join(inspect.getsource(faust_consumer.Consumer._drain_messages).split())
    if "await self.wait_first( callback(message), self.suspend_flow.wait() )" not in drain:
        problems.append("faust Consumer._drain_messages no longer delivers through wait_first")
    handler = inspect.getsource(faust_conductor.Conductor._compile_message_handler)
    if "async def on_message(message: Message)" not in handler:
        problems.append("faust Conductor's message handler is no longer `on_message`")
    wait_first = getattr(mode_services.Service, "wait_first", None)
    if wait_first is None or "timeout" not in inspect.signature(wait_first).parameters:
        problems.append("mode Service.wait_first is gone or changed")
    if getattr(mode_services, "WaitResults", None) is None:
        problems.append("mode.services.WaitResults is gone")
    return problems


def check_installed() -> None:
    """Raise CompatError naming every internal that changed; warn on an untested version."""
    for package, prefixes in TESTED_VERSIONS.items():
        version = importlib.metadata.version(package)
        if not version.startswith(prefixes):
            log.warning("%s %s is untested (tested: %s)", package, version, ", ".join(prefixes))
    problems = _problems()
    if problems:
        raise CompatError("faust/aiokafka internals changed: " + "; ".join(problems))


def set_fetch_max_wait(ms: int) -> None:
    """Have every consumer faust creates from now on use `fetch_max_wait_ms=ms`."""
    thread_class = faust_aiokafka.AIOKafkaConsumerThread
    create = getattr(thread_class, "_faust_create_worker_consumer", None)
    if create is None:
        create = thread_class._create_worker_consumer
        thread_class._faust_create_worker_consumer = create  # type: ignore[attr-defined]

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = ms  # read by AIOKafkaConsumer.start()
        return consumer

    thread_class._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def enable_idempotence() -> None:
    """Have faust's producers (acks=all only) use aiokafka's `enable_idempotence=True`."""
    producer_class = faust_aiokafka.Producer
    extra = getattr(producer_class, "_faust_settings_extra", None)
    if extra is None:
        extra = producer_class._settings_extra
        producer_class._faust_settings_extra = extra  # type: ignore[attr-defined]

    def settings_extra(self: Any) -> dict[str, Any]:
        options = dict(extra(self))
        if self.acks in (-1, "all"):  # aiokafka refuses idempotence with acks 0/1
            options.setdefault("enable_idempotence", True)
        return options

    producer_class._settings_extra = settings_extra  # type: ignore[method-assign]


def own_changelog_partitions(app: faust.App) -> list[TopicPartition]:
    """Changelog partitions of this worker's active tables (standbys must keep reading)."""
    assignor = app.assignor
    changelogs = app.tables.changelog_topics
    return sorted(
        TopicPartition(tp.topic, tp.partition)
        for tp in assignor.assigned_actives() - assignor.assigned_standbys()
        if tp.topic in changelogs
    )


async def pause_own_changelogs(app: faust.App, **_: Any) -> None:
    """After recovery: stop fetching the changelogs this worker only writes.

    Connected to `app.on_rebalance_complete`, which faust sends once the active tables
    are recovered. A rebalance gives aiokafka a fresh, unpaused assignment, so recovery
    after it reads the changelogs as before, and this runs again when it is done.
    """
    tps = own_changelog_partitions(app)
    if not tps:
        return
    thread = app.consumer._thread  # type: ignore[attr-defined]

    async def pause() -> None:
        thread._ensure_consumer().pause(*tps)

    await thread.call_thread(pause)
    log.info("not fetching %d changelog partitions of own active tables", len(tps))


@contextmanager
def in_event(event: faust.EventT) -> Iterator[None]:
    """Make `event` faust's current event: table reads and writes use its partition."""
    token = faust.streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust.streams._current_event.reset(token)


def drop_dummy_index(app: faust.App) -> None:
    """Unmount faust's placeholder `GET /` ({"status": "OK"}) so the status page can take `/`.

    faust has no setting for it: the blueprint is removed from its web manager's list.
    """
    blueprints = app.web.blueprints
    blueprints._enabled = [
        (prefix, bp) for prefix, bp in blueprints._enabled if "production_index" not in str(bp)
    ]


class DiscoveryError(RuntimeError):
    """A module of the service could not be imported while the worker discovered it."""


def fail_on_discovery_error(app: faust.App) -> None:
    """Make a module that fails to import during autodiscovery stop the worker."""

    def on_error(name: str) -> None:
        raise DiscoveryError(f"cannot import {name}: {sys.exc_info()[1]!r}")

    app._on_autodiscovery_error = on_error  # type: ignore[method-assign]


# FaustMetrics fields the lean monitor updates itself
LEAN_METRICS = (
    "messages_received",
    "active_messages",
    "messages_received_per_topics",
    "messages_received_per_topics_partition",
    "total_events",
    "total_active_events",
    "total_events_per_stream",
    "table_operations",
    "topic_messages_sent",
    "total_sent_messages",
    "producer_send_latency",
    "topic_partition_end_offset",
)


class LeanPrometheusMonitor(faust_prometheus.PrometheusMonitor):
    """faust's Prometheus sensor, cheap on the per-message hooks (same metric families).

    A labelled child is looked up once and kept (`labels()` costs microseconds per call);
    the kept children of per-partition metrics are dropped whenever faust clears those
    metrics (rebalances). The base Monitor's in-memory statistics are not kept.
    """

    def __init__(self, metrics: Any, **kwargs: Any) -> None:
        super().__init__(metrics, **kwargs)
        self._lean_children: dict[Any, Any] = {}

    def _child(self, key: Any, metric: Any, *labels: Any) -> Any:
        child = self._lean_children.get(key)
        if child is None:
            child = self._lean_children[key] = metric.labels(*labels)
        return child

    def _clear_partition_related_metrics(self) -> None:
        super()._clear_partition_related_metrics()
        self._lean_children.clear()

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        m = self._metrics
        m.messages_received.inc()
        m.active_messages.inc()
        self._child(tp.topic, m.messages_received_per_topics, tp.topic).inc()
        key = ("in", tp)
        self._child(key, m.messages_received_per_topics_partition, tp.topic, tp.partition).set(
            offset
        )

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> Any:
        m = self._metrics
        m.total_events.inc()
        m.total_active_events.inc()
        child = self._lean_children.get(stream)
        if child is None:
            label = f"stream.{self._stream_label(stream)}.events"
            child = self._lean_children[stream] = m.total_events_per_stream.labels(label)
        child.inc()
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        self._metrics.total_active_events.dec()

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        self._metrics.active_messages.dec()

    def _table(self, table: Any, operation: str) -> None:
        key = (table.name, operation)
        self._child(key, self._metrics.table_operations, f"table.{table.name}", operation).inc()

    def on_table_get(self, table: Any, key: Any) -> None:
        self._table(table, self.KEYS_RETRIEVED)

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        self._table(table, self.KEYS_UPDATED)

    def on_table_del(self, table: Any, key: Any) -> None:
        self._table(table, self.KEYS_DELETED)

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> Any:
        self._child(("sent", topic), self._metrics.topic_messages_sent, f"topic.{topic}").inc()
        return self.time()

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        self._metrics.total_sent_messages.inc()
        self._metrics.producer_send_latency.observe(self.ms_since(state))

    def track_tp_end_offset(self, tp: Any, offset: int) -> None:
        self.tp_end_offsets[tp] = offset
        key = ("end", tp)
        self._child(key, self._metrics.topic_partition_end_offset, tp.topic, tp.partition).set(
            offset
        )


def lean_prometheus_sensors(app: faust.App, name_prefix: str) -> None:
    """faust's `setup_prometheus_sensors` (metrics, /metrics page) with the lean monitor."""
    faust_prometheus.setup_prometheus_sensors(app, name_prefix=name_prefix)
    app.monitor = LeanPrometheusMonitor(metrics=app.monitor._metrics)  # type: ignore[attr-defined]


DELIVERY_QUALNAME = "Conductor._compile_message_handler.<locals>.on_message"


@types.coroutine
def _resume(coro: Any, yielded: Any) -> Generator[Any, Any, Any]:
    """Go on driving `coro`, already started and waiting on `yielded`, in the current task."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # handed to the coroutine, as a task would
            try:
                yielded = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as done:
                return done.value


async def _continued(coro: Any, yielded: Any) -> Any:
    return await _resume(coro, yielded)


def deliver_without_tasks() -> None:
    """Run the first step of faust's per-message delivery inline in the consumer's loop."""
    consumer_class = faust_aiokafka.Consumer
    original = getattr(consumer_class, "_faust_wait_first", None)
    if original is None:
        original = consumer_class.wait_first
        consumer_class._faust_wait_first = original  # type: ignore[attr-defined]

    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
        first = coros[0] if coros else None
        code = getattr(first, "cr_code", None)
        if timeout is None and code is not None and code.co_qualname == DELIVERY_QUALNAME:
            try:
                yielded = first.send(None)
            except StopIteration as done:
                for other in coros[1:]:  # the suspend_flow.wait() it was raced against
                    if inspect.iscoroutine(other):
                        other.close()
                if self._stopped.is_set() or self._crashed.is_set():
                    return mode_services.WaitResults([], [], True)
                return mode_services.WaitResults([first], [done.value], False)
            # It waits (a full buffer, flow control): the rest as a task, raced as before.
            rest = asyncio.ensure_future(_continued(first, yielded), loop=self.loop)
            coros = (rest, *coros[1:])
        return await original(self, *coros, timeout=timeout)

    consumer_class.wait_first = wait_first  # type: ignore[method-assign]


def install(app: faust.App, fetch_max_wait_ms: int) -> None:
    """Apply every adaptation to the worker's app (after `check_installed`)."""
    fail_on_discovery_error(app)
    set_fetch_max_wait(fetch_max_wait_ms)
    enable_idempotence()
    deliver_without_tasks()
    app.on_rebalance_complete.connect(pause_own_changelogs)
