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
7. **No record fetched before a seek is delivered after it** (`drop_stale_fetches`). The
   consumer thread hands faust a whole batch; faust's `Consumer.getmany` then yields it
   record by record while the main loop awaits each agent put, and checks only
   `flow_active` and the generation id on the way (faust/transport/consumer.py 746-766).
   The seek to the committed offsets that ends every rebalance (`perform_seek` from
   `Recovery.on_recovery_completed`, faust/tables/recovery.py 649-656: stream partitions
   resumed first, then the seek awaited in the consumer thread) does neither, so the rest
   of a batch fetched before it is delivered after it. That batch can start past the
   committed offset C (records aiokafka returned while faust dropped them for a partition
   it had paused, consumer.py 758-762), so `_drain_messages` (consumer.py 1207-1223) sees
   a jump from the read offset C that `perform_seek` just set (consumer.py 569) to the
   batch's first offset: it records a gap (counted as acked at the next commit: those
   offsets are committed unprocessed, a loss) and moves the read offset to the batch's
   end, so that the offsets re-fetched from C are dropped as "already read" (consumer.py
   1209/1224). Without gap filling the commit sticks at C instead and the skipped messages
   are read again at the next rebalance, after later ones: out of order, and the agents
   skip them as already applied. Each batch now remembers the position it was fetched at
   (aiokafka's partition state and its seek count); a record whose partition was sought
   or reassigned since is not delivered: aiokafka fetches it again from the new position.
8. **Offset gaps exact** (`exact_offset_gaps`). `_drain_messages` passes the offset of the
   message it just read as the gap's end (consumer.py 1215) and `_add_gap` keeps the end
   (consumer.py 1164): that message counts as acked before it is processed. `_new_offset`
   copies gap offsets into the acked list but not into `_acked_index` (consumer.py
   1123-1127), so an offset of a gap that is then acked for real is in the list twice, and
   `consecutive_numbers` stops at every doubled entry: the commit advanced about one
   offset per commit interval (the 11-26 s crawl for ~130 messages after a rebalance).
   The gap now ends before the message read, and gap offsets are counted once.
9. **Cheap per-message sensors** (`LeanPrometheusMonitor`). faust's Prometheus sensor runs
   on every message, stream event, send and table access: `labels()` lookups and the base
   Monitor's in-memory statistics (read by nothing here). At one tick per message that was
   12% of the worker (py-spy, bench/PROFILE.md). Same metric families; labelled children
   cached; no per-event runtime histogram (our agents iterate `noack()` streams, so an
   event "leaves" the stream when the loop moves on, which measures nothing).
10. **Stream partitions resumed after the seek and the queue clear**
   (`resume_streams_after_seek`). At the end of every rebalance faust resumes the stream
   partitions, then awaits the seek to the committed offsets, then resumes flow control
   (`Recovery.on_recovery_completed`, faust/tables/recovery.py 649-660, and
   `Recovery._resume_streams`, 314-328). Flow control was already resumed for the
   changelog reading, so records are fetched and put into the agents' queues while the
   seek is awaited - and `FlowControlEvent.resume()` then clears every agent queue
   (mode/utils/queues.py, `clear_on_resume`). Those records are gone: aiokafka's
   position is past them, and `perform_seek` has just set the read offset back to the
   committed offset, so the next record read opens a gap over them that the next commit
   counts as done. Seen in the rebalance storm as runs of up to 10 consecutive
   market-data-stream offsets per partition that the NATS bridge never received (and raw
   messages the processing agents never received), with every later offset processed.
   The stream partitions are now resumed only once the seek is done and flow control
   has cleared the queues: the first record fetched is the one at the committed offset.
11. **An empty fetch filter fetches nothing** (`LiveFilter`, in `drop_stale_fetches`'
   fetch). faust hands aiokafka its live set of active partitions as the filter of each
   fetch (faust/transport/drivers/aiokafka.py 1080-1106), and the set changes while the
   fetch waits for data. aiokafka drains "every partition" when the filter is empty
   (`if partitions and tp not in partitions`, aiokafka/consumer/fetcher.py 1221): when
   recovery pauses the changelogs it has read while the stream partitions are still
   paused, the set is empty for a moment, and a waiting fetch then takes the buffered
   records of the paused stream partitions too, which faust's `getmany` drops as not
   active (consumer.py 758-762) after aiokafka moved its position past them. After the
   seek (adaptation 10 resumes the stream partitions only after it) nothing fetches them
   again, and the read offset of the seek turns the jump into a gap: seen in the storm as
   runs of 20-30 raw messages per partition never processed. The filter is now a live
   view that is never empty to aiokafka.
"""

from __future__ import annotations

import contextvars
import importlib.metadata
import inspect
import logging
import sys
import weakref
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faust
import faust.streams
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer import subscription_state
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.structs import TopicPartition
from faust.sensors import monitor as faust_monitor
from faust.sensors import prometheus as faust_prometheus
from faust.tables import recovery as faust_recovery
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.web import base as faust_web_base
from mode.utils.queues import FlowControlEvent

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
    problems.extend(_stale_fetch_problems())
    problems.extend(_offset_gap_problems())
    problems.extend(_sensor_problems())
    problems.extend(_resume_order_problems())
    return problems


# What each of faust's stream-resuming methods calls, in this order (adaptation 10).
RESUME_ORDER = ("consumer.resume_partitions(", "consumer.perform_seek()", "flow_control.resume()")


def _resume_order_problems() -> list[str]:
    problems = []
    for name in ("on_recovery_completed", "_resume_streams"):
        source = _source(_original(faust_recovery.Recovery, name))
        at = [source.find(call) for call in RESUME_ORDER]
        if not 0 <= at[0] < at[1] < at[2]:
            problems.append(
                f"faust Recovery.{name} no longer resumes stream partitions, seeks, then"
                " resumes flow control"
            )
    if "self.clear()" not in _source(FlowControlEvent.resume) or "queue.clear()" not in _source(
        FlowControlEvent.clear
    ):
        problems.append("mode FlowControlEvent.resume no longer clears the queues")
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


def _stale_fetch_problems() -> list[str]:
    problems = []
    state_class = subscription_state.TopicPartitionState
    for name in ("seek", "reset_to"):
        if not callable(getattr(state_class, name, None)):
            problems.append(f"aiokafka TopicPartitionState.{name} is gone")
    if not callable(getattr(subscription_state.Assignment, "state_value", None)):
        problems.append("aiokafka Assignment.state_value is gone")
    fetch = _original(faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records")
    if "fetcher.fetched_records(\n                    active_partitions," not in _source(fetch):
        problems.append("faust AIOKafkaConsumerThread._fetch_records no longer fetches records")
    if "if partitions and tp not in partitions:" not in _source(Fetcher.fetched_records):
        problems.append("aiokafka Fetcher.fetched_records no longer filters by `tp in partitions`")
    if "self.scheduler.iterate(records)" not in _source(faust_consumer.Consumer.getmany):
        problems.append("faust Consumer.getmany no longer iterates the fetched lists")
    init = _source(faust_consumer.Consumer.__init__)
    made, reset = init.find("self._read_offset = defaultdict("), init.find("self._reset_state()")
    if not 0 <= made < reset:
        problems.append("faust Consumer.__init__ no longer sets _read_offset before _reset_state")
    drain = _source(faust_consumer.Consumer._drain_messages)
    if "set_read_offset = self._read_offset.__setitem__" not in drain:
        problems.append("faust Consumer._drain_messages no longer sets read offsets by item")
    return problems


def _offset_gap_problems() -> list[str]:
    problems = []
    drain = _source(faust_consumer.Consumer._drain_messages)
    if "await self._add_gap(tp, r_offset + 1, offset)" not in drain:
        problems.append("faust Consumer._drain_messages no longer adds gaps up to the read offset")
    add_gap = _source(_original(faust_consumer.Consumer, "_add_gap"))
    if "gap_for_tp.addi(offset_from, offset_to + 1)" not in add_gap:
        problems.append("faust Consumer._add_gap no longer keeps the gap's end")
    new_offset = _source(_original(faust_consumer.Consumer, "_new_offset"))
    if "acked.extend(stuff_to_add)" not in new_offset:
        problems.append("faust Consumer._new_offset no longer copies gaps into the acked list")
    return problems


def _original(cls: type, name: str) -> Any:
    """`cls.name` as faust defines it (the unpatched one once an adaptation replaced it)."""
    return getattr(cls, f"_faust{name}", None) or getattr(cls, name, None)


def _source(obj: Any) -> str:
    """The source of a function, "" when it is gone or has none."""
    try:
        return inspect.getsource(obj)
    except (TypeError, OSError):
        return ""


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


class FetchedBatch(list):  # type: ignore[type-arg]
    """One partition's records of one fetch; iterating stops once the partition was sought
    or reassigned since the fetch (the rest is fetched again from the new position)."""

    __slots__ = ("_consumer", "_read_offsets", "_seeks", "_state", "_tp")

    def __init__(
        self, records: list[Any], consumer: AIOKafkaConsumer, tp: Any, read_offsets: Any
    ) -> None:
        super().__init__(records)
        self._consumer = consumer
        self._tp = tp
        self._read_offsets = read_offsets if isinstance(read_offsets, ReadOffsets) else None
        self._state = partition_state(consumer, tp)
        self._seeks = getattr(self._state, "_compat_seeks", 0)

    def current(self) -> bool:
        """True while the partition is at the position these records were fetched from."""
        state = partition_state(self._consumer, self._tp)
        return state is self._state and getattr(state, "_compat_seeks", 0) == self._seeks

    def __iter__(self) -> Iterator[Any]:
        for record in super().__iter__():
            if not self.current():
                log.info("%s moved after a fetch: its stale records are not delivered", self._tp)
                return
            if self._read_offsets is not None:
                self._read_offsets.delivering[self._tp] = (record.offset, self)
            yield record


class ReadOffsets(defaultdict):  # type: ignore[type-arg]
    """faust's `Consumer._read_offset`, except that the read offset of a message whose
    partition was sought while it was being delivered does not replace the seek's."""

    def __init__(self, offsets: Any) -> None:
        super().__init__(lambda: None, offsets)
        self.delivering: dict[Any, tuple[int, FetchedBatch]] = {}

    def __setitem__(self, tp: Any, offset: Any) -> None:
        pending = self.delivering.get(tp)
        if pending is not None and pending[0] == offset and not pending[1].current():
            log.info("%s sought while offset %s was delivered: read offset kept", tp, offset)
            return
        super().__setitem__(tp, offset)


class LiveFilter:
    """faust's active partitions as the filter of one aiokafka fetch (adaptation 11): looked
    up when aiokafka drains its buffer, and never "no filter" - aiokafka reads an empty
    partition set as every partition."""

    __slots__ = ("_live",)

    def __init__(self, live: Any) -> None:
        self._live = live

    def __contains__(self, tp: Any) -> bool:
        return tp in self._live

    def __bool__(self) -> bool:
        return True


def partition_state(consumer: AIOKafkaConsumer, tp: Any) -> Any:
    """aiokafka's state of `tp` in the current assignment (None if not assigned)."""
    subscription = consumer._subscription.subscription
    assignment = subscription.assignment if subscription is not None else None
    return assignment.state_value(tp) if assignment is not None else None


def drop_stale_fetches() -> None:
    """Count every position change of a partition, and stamp each fetched batch with it."""
    state_class = subscription_state.TopicPartitionState
    for name in ("seek", "reset_to"):
        original = _original(state_class, name)
        setattr(state_class, f"_faust{name}", original)

        def moved(self: Any, position: int, _original: Any = original) -> None:
            self._compat_seeks = getattr(self, "_compat_seeks", 0) + 1
            _original(self, position)

        setattr(state_class, name, moved)

    thread_class = faust_aiokafka.AIOKafkaConsumerThread
    fetch = _original(thread_class, "_fetch_records")
    thread_class._faust_fetch_records = fetch  # type: ignore[attr-defined]

    async def fetch_records(
        self: Any, consumer: AIOKafkaConsumer, active: Any, *args: Any, **kw: Any
    ) -> Any:
        records = await fetch(
            self, consumer, None if active is None else LiveFilter(active), *args, **kw
        )
        offsets = self.consumer._read_offset
        # No await between the fetch and the stamp: no seek can come in between.
        return {tp: FetchedBatch(batch, consumer, tp, offsets) for tp, batch in records.items()}

    thread_class._fetch_records = fetch_records  # type: ignore[method-assign]

    consumer_class = faust_consumer.Consumer
    reset_state = _original(consumer_class, "_reset_state")
    consumer_class._faust_reset_state = reset_state  # type: ignore[attr-defined]

    def reset_with_read_offsets(self: Any) -> None:
        reset_state(self)  # faust's __init__ has just made _read_offset a defaultdict
        if not isinstance(self._read_offset, ReadOffsets):
            self._read_offset = ReadOffsets(self._read_offset)

    consumer_class._reset_state = reset_with_read_offsets  # type: ignore[method-assign]


def exact_offset_gaps() -> None:
    """A gap ends before the message read; a gap offset acked for real is counted once."""
    consumer_class = faust_consumer.Consumer
    add_gap = _original(consumer_class, "_add_gap")
    new_offset = _original(consumer_class, "_new_offset")
    consumer_class._faust_add_gap = add_gap  # type: ignore[attr-defined]
    consumer_class._faust_new_offset = new_offset  # type: ignore[attr-defined]

    async def exact_add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        # faust passes the offset of the message just read (not part of the gap).
        await add_gap(self, tp, offset_from, offset_to - 1)

    def counted_once(self: Any, tp: Any) -> int | None:
        acked, gap = self._acked[tp], self._gap[tp]
        if acked and gap:
            index = self._acked_index[tp]
            top = max(acked)
            filled = {
                offset
                for interval in gap.overlap(0, top)
                for offset in range(interval.begin, interval.end)
            }
            gap.chop(0, max([top + 1, *(o + 1 for o in filled)]))
            new = sorted(filled - index)
            acked.extend(new)
            index.update(new)
        return new_offset(self, tp)

    consumer_class._add_gap = exact_add_gap  # type: ignore[method-assign]
    consumer_class._new_offset = counted_once  # type: ignore[method-assign]


@contextmanager
def _stream_resume_deferred(app: faust.App) -> Iterator[None]:
    """Within: `consumer.resume_partitions` only notes the partitions, and they are resumed
    right after `app.flow_control.resume()` has cleared the agents' queues."""
    consumer, flow_control = app.consumer, app.flow_control
    deferred: set[Any] = set()
    resume_partitions, resume_flow_control = consumer.resume_partitions, flow_control.resume

    def resume_then_fetch() -> None:
        resume_flow_control()  # clears every agent queue
        if deferred:
            resume_partitions(set(deferred))
            deferred.clear()

    consumer.resume_partitions = deferred.update  # type: ignore[method-assign]
    flow_control.resume = resume_then_fetch  # type: ignore[method-assign]
    try:
        yield
    finally:
        del consumer.resume_partitions
        del flow_control.resume
        if deferred:  # the seek failed: resumed as faust would have
            resume_partitions(deferred)


def resume_streams_after_seek() -> None:
    """Resume stream partitions after the seek to the committed offsets and the queue clear."""
    recovery_class = faust_recovery.Recovery
    for name in ("on_recovery_completed", "_resume_streams"):
        original = _original(recovery_class, name)
        setattr(recovery_class, f"_faust{name}", original)

        async def resume_streams(
            self: Any, generation_id: int = 0, _original: Any = original
        ) -> None:
            with _stream_resume_deferred(self.app):
                await _original(self, generation_id)

        setattr(recovery_class, name, resume_streams)


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


def install(app: faust.App, fetch_max_wait_ms: int) -> None:
    """Apply every adaptation to the worker's app (after `check_installed`)."""
    fail_on_discovery_error(app)
    set_fetch_max_wait(fetch_max_wait_ms)
    enable_idempotence()
    drop_stale_fetches()
    exact_offset_gaps()
    resume_streams_after_seek()
    app.on_rebalance_complete.connect(pause_own_changelogs)
