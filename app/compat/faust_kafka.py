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
"""

from __future__ import annotations

import contextvars
import importlib.metadata
import inspect
import logging
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faust
import faust.streams
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.web import base as faust_web_base

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


def install(app: faust.App, fetch_max_wait_ms: int) -> None:
    """Apply every adaptation to the worker's app (after `check_installed`)."""
    fail_on_discovery_error(app)
    set_fetch_max_wait(fetch_max_wait_ms)
    enable_idempotence()
    app.on_rebalance_complete.connect(pause_own_changelogs)
