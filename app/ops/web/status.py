"""The live status page: `GET /` and `/ui/`, pushed by server-sent events (`/ui/events`).

One shared 1 s timer (`StatusFeed`, a faust service) samples the chart history and the
reject counters and, while at least one page is connected, builds ONE snapshot (JSON)
that every connected page receives: the cost does not grow with the number of pages
beyond writing the same bytes to each socket. A slow page only ever holds the newest
snapshot (older ones are dropped, never queued without bound).

The snapshot is built from the same live objects as `/health` (it embeds
`health.report()`, so the page and `/health` cannot disagree) and from this worker's
table partitions, which the page names: with several workers, each page shows its own
partitions.

The page's files live in `static/` next to this module; the charting library
(`lightweight-charts`, from the npm registry) is served from `web/node_modules`, which
`npm ci` in scripts/install.sh fills: never a CDN, so the page works without internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

from aiohttp import web as aioweb
from faust.web import Request, Response, View
from mode import Service

from app.compat.faust_kafka import drop_dummy_index
from app.core.state import BestChoice
from app.ops.market_hours_service import HOURS
from app.ops.metrics import REJECTS
from app.ops.runtime import health
from app.ops.web.tables import _best_json, _pip, _reject_summary, compare
from app.pipeline.faust_app import app, settings
from app.pipeline.topics import raw_broker_ticks
from app.tables.context import last_context
from app.tables.ticks import items_of, symbol_state

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
CHART_LIB = Path("lightweight-charts", "dist", "lightweight-charts.standalone.production.js")
INTERVAL_S = 1.0
HISTORY_POINTS = 900  # 15 minutes of 1 s samples per symbol
REJECT_WINDOWS_S = (60, 300, 900)
# A connected feed that sent nothing (not even a heartbeat) for this long is shown red:
# OANDA (and the simulator) send a heartbeat every 5 s.
SILENT_S = 7.0


def node_modules() -> Path | None:
    """Where `npm ci` put the page's libraries: $STATUS_PAGE_NODE_MODULES, else the first
    `web/node_modules` above this module or the working directory (repo checkout or image)."""
    env = os.environ.get("STATUS_PAGE_NODE_MODULES")
    if env:
        return Path(env)
    for base in (*Path(__file__).resolve().parents, Path.cwd()):
        candidate = base / "web" / "node_modules"
        if (candidate / CHART_LIB).is_file():
            return candidate
    return None


def broker_level(state: dict[str, Any], markets_closed: bool = False) -> str:
    """ok / down / off: what colour a broker's row gets (silent feeds are down too, unless
    every market the broker quotes is closed: a quiet feed on a weekend is expected)."""
    status = state.get("status")
    if status == "disabled":
        return "off"
    if status != "connected":
        return "down"
    idle = state.get("seconds_since_last_message")
    if idle is not None and idle >= SILENT_S:
        return "off" if markets_closed else "down"
    return "ok"


def markets_closed(symbols: list[str], now_ns: int) -> bool:
    """True when the market of every one of `symbols` is closed now (calendar in config)."""
    classes = {settings.instruments[s].asset_class for s in symbols if s in settings.instruments}
    return bool(classes) and not any(HOURS.is_open(c, now_ns) for c in classes)


def _parse_fingerprint(fingerprint: str) -> tuple[str, int | None]:
    """(value, observation time ns) of a context fingerprint `repr(value)@time_ns#attrs`."""
    value, _, rest = fingerprint.partition("@")
    when = rest.partition("#")[0]
    return value, int(when) if when.lstrip("-").isdigit() else None


def _reject_totals() -> dict[str, float]:
    """This worker's rejects since process start: the pipeline's per stage/reason
    (Prometheus counter) and each broker feed's unparseable lines (`source/<broker>`)."""
    totals: dict[str, float] = {
        f"source/{name}": state.get("rejects_total", 0)
        for name, state in (health.section("broker_connections") or {}).items()
        if state.get("status") != "disabled"
    }
    for metric in REJECTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = f"{sample.labels['stage']}/{sample.labels['reason']}"
                totals[key] = sample.value
    return totals


class StatusFeed(Service):
    """The shared timer: samples history every second, fans one snapshot out to all pages."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clients: set[asyncio.Queue[bytes | None]] = set()
        self.history: dict[str, deque[tuple[int, float, float]]] = {}
        self.reject_samples: deque[tuple[float, dict[str, float]]] = deque()
        self.last_event: bytes | None = None
        self.snapshots_built = 0

    # -- clients ---------------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue[bytes | None]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=2)
        self.clients.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes | None]) -> None:
        self.clients.discard(queue)

    def _publish(self, message: bytes | None) -> None:
        for queue in self.clients:
            if queue.full():  # a slow page: drop its older snapshot, keep the newest
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(message)

    async def on_stop(self) -> None:
        self._publish(None)  # ends every open event stream, so the web server can stop

    # -- the timer -------------------------------------------------------------------
    @Service.timer(INTERVAL_S)
    async def _tick(self) -> None:
        try:
            best_items = items_of(symbol_state, "best")
            self.sample(best_items)
            if self.clients:
                started = time.perf_counter()
                body = self.snapshot(best_items)
                body["build_ms"] = round((time.perf_counter() - started) * 1000, 2)
                body["pages"] = len(self.clients)
                self.last_event = event("snapshot", body)
                self.snapshots_built += 1
                self._publish(self.last_event)
        except Exception:  # the page must never take the worker down
            log.exception("status page: snapshot failed")

    def sample(self, best_items: list[tuple[str, BestChoice]]) -> None:
        now = time.time()
        second = int(now)
        for symbol, best in best_items:
            points = self.history.setdefault(symbol, deque(maxlen=HISTORY_POINTS))
            if not points or points[-1][0] < second:
                points.append((second, best.bid / 1e9, best.ask / 1e9))
        self.reject_samples.append((now, _reject_totals()))
        while self.reject_samples and now - self.reject_samples[0][0] > max(REJECT_WINDOWS_S):
            self.reject_samples.popleft()

    # -- content ---------------------------------------------------------------------
    def history_json(self) -> dict[str, list[tuple[int, float, float]]]:
        return {symbol: list(points) for symbol, points in sorted(self.history.items())}

    def snapshot(self, best_items: list[tuple[str, BestChoice]] | None = None) -> dict[str, Any]:
        """Everything the page shows; `best_items` are the rows just sampled for the chart."""
        report = health.report()
        now_ns = time.time_ns()
        brokers = {
            name: {
                **state,
                "level": broker_level(state, markets_closed(state.get("symbols") or [], now_ns)),
            }
            for name, state in sorted((report.get("broker_connections") or {}).items())
        }
        best = {}
        for symbol, b in items_of(symbol_state, "best") if best_items is None else best_items:
            row = _best_json(b)
            pip = _pip(symbol)
            row["spread_pips"] = round((b.ask - b.bid) / pip, 2) if pip else None
            row["point"] = self.history.get(symbol, [None])[-1]
            best[symbol] = row
        quality = {}
        for symbol, stats in items_of(symbol_state, "quality"):
            c = compare(symbol, stats)
            quality[symbol] = {
                "ranking": c.get("ranking", []),
                "best_broker": c.get("best_broker"),
                "scores": {b: m.get("score") for b, m in c.get("metrics", {}).items()},
            }
        return {
            "service": report["service_name"],
            "version": report["version"],
            "status": report["status"],
            "problems": report.get("problems", {}),
            "time": time.time(),
            "uptime_seconds": report["uptime_seconds"],
            "worker": worker_info(),
            "brokers": brokers,
            "best": best,
            "quality": quality,
            "rejects": self.rejects(),
            "lag": consumer_lag(),
            "pipeline": report.get("aggregation_metrics"),
            "nats_bridge": report.get("nats_bridge"),
            "collectors": report.get("collectors") or {},
            "context": context_values(),
        }

    def rejects(self) -> dict[str, Any]:
        """Per reason: counts over the last 1/5/15 minutes (this process) and the table total."""
        windows: dict[str, dict[str, float]] = {}
        if self.reject_samples:
            now, latest = self.reject_samples[-1]
            for seconds in REJECT_WINDOWS_S:
                base = next(
                    (totals for t, totals in self.reject_samples if now - t <= seconds), latest
                )
                for key, value in latest.items():
                    windows.setdefault(key, {})[f"{seconds // 60}m"] = value - base.get(key, 0.0)
        table = _reject_summary(symbol_state)["by_reason"]
        return {"recent": dict(sorted(windows.items())), "table_by_reason": table}


def event(name: str, data: Any) -> bytes:
    """One server-sent event (JSON on a single data line)."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def worker_info() -> dict[str, Any]:
    """Which partitions of the raw broker topic (= which symbols) this worker's page shows."""
    try:
        actives = app.assignor.assigned_actives()
    except Exception:  # not assigned yet
        actives = set()
    mine = sorted(tp.partition for tp in actives if tp.topic == raw_broker_ticks.get_topic_name())
    return {
        "url": str(app.conf.canonical_url),
        "partitions": mine,
        "partitions_total": settings.kafka.partitions,
        "topic": raw_broker_ticks.get_topic_name(),
    }


def consumer_lag() -> dict[str, dict[str, int]]:
    """Per input topic over this worker's partitions: messages not read yet, read but not
    committed (faust's consumer bookkeeping; changelogs are left out)."""
    out: dict[str, dict[str, int]] = {}
    try:
        consumer = app.consumer
        assignment = consumer.assignment()
    except Exception:
        return out
    for tp in sorted(assignment):
        if tp.topic.endswith("-changelog") or "__assignor" in tp.topic:
            continue
        try:
            highwater = consumer.highwater(tp)
        except Exception:
            highwater = None
        read = consumer._read_offset.get(tp)
        committed = consumer._committed_offset.get(tp)
        row = out.setdefault(tp.topic, {"partitions": 0, "lag": 0, "uncommitted": 0})
        row["partitions"] += 1
        if highwater is not None:
            row["lag"] += max(0, highwater - (read + 1 if read is not None else 0))
        if read is not None:
            row["uncommitted"] += max(0, read - (committed if committed is not None else -1))
    return out


def context_values() -> dict[str, dict[str, Any]]:
    """The last emitted value per provider:series (this worker's partitions)."""
    out = {}
    for key, fingerprint in sorted(last_context.items()):
        if fingerprint:
            value, when = _parse_fingerprint(fingerprint)
            out[key] = {"value": value, "observation_time_ns": when}
    return out


feed = StatusFeed()
app.service(feed)  # type: ignore[arg-type]  # faust starts/stops instances too


# faust's dummy `GET /` gives way to the status page (an adaptation: app/compat). With
# faust's statistics pages on (`web_stats_enabled`), they keep `/` and the page is at /ui/.
drop_dummy_index(app)
_SERVE_ROOT = not app.conf.web_stats_enabled


def _file_response(path: Path) -> aioweb.Response:
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return aioweb.Response(
        body=path.read_bytes(),
        content_type=content_type,
        headers={"Cache-Control": "no-cache"},
    )


class StatusPage(View):
    async def get(self, request: Request) -> Response:
        return _file_response(STATIC_DIR / "index.html")  # type: ignore[return-value]


app.page("/ui/")(StatusPage)
if _SERVE_ROOT:
    app.page("/")(type("StatusRoot", (StatusPage,), {}))


@app.page("/ui/static/{name}")
class StatusStatic(View):
    async def get(self, request: Request, name: str) -> Response:
        if name not in {p.name for p in STATIC_DIR.iterdir()}:  # no path traversal
            return self.json({"error": f"no such file {name!r}"}, status=404)
        return _file_response(STATIC_DIR / name)  # type: ignore[return-value]


@app.page("/ui/lib/lightweight-charts.js")
class StatusChartLibrary(View):
    async def get(self, request: Request) -> Response:
        modules = node_modules()
        if modules is None or not (modules / CHART_LIB).is_file():
            return self.text(
                "lightweight-charts is not installed: run scripts/install.sh (npm ci in web/)",
                status=404,
            )
        return _file_response(modules / CHART_LIB)  # type: ignore[return-value]


@app.page("/ui/snapshot")
class StatusSnapshot(View):
    """The page's data as JSON, built on request (for scripts and checks)."""

    async def get(self, request: Request) -> Response:
        return self.json(feed.snapshot())


@app.page("/ui/events")
class StatusEvents(View):
    """Server-sent events: `history` once (chart points), then a `snapshot` every second."""

    async def get(self, request: Request) -> Response:
        raw: aioweb.Request = request  # type: ignore[assignment]  # the aiohttp driver's own
        response = aioweb.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(raw)
        queue = feed.subscribe()
        try:
            await response.write(b"retry: 2000\n\n" + event("history", feed.history_json()))
            if feed.last_event is not None:
                await response.write(feed.last_event)
            while (message := await queue.get()) is not None:
                await response.write(message)
        except (ConnectionResetError, ConnectionError):
            pass  # the page went away
        finally:
            feed.unsubscribe(queue)
        return response  # type: ignore[return-value]
