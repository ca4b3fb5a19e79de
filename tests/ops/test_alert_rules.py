"""Alert rules, dashboard and compose services of deploy/: checked with promtool and
against the metric names a worker really exports.

promtool comes from Debian's `prometheus` package (scripts/install.sh installs it).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from app.ops import metrics as app_metrics
from app.ops.health import HealthRegistry
from app.ops.metrics import LiveStateCollector
from devstack.stack import StackConfig
from tests.support.kafka import create_topics, produce
from tests.support.worker import Worker

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "ingest.json"
COMPOSE = REPO / "docker-compose.yml"

# Series that Prometheus itself makes, not the worker.
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE"}
METRIC_NAME = re.compile(r"\b((?:ingest|faust)_[a-zA-Z0-9_]+)\b")

# Each alert with a guard removed: the quiet cases of alerts_test.yml must catch it.
WEAKENED = {
    "IngestFeedDown": "ingest_source_connected == 0",
    "IngestNoTicksDuringMarketHours": (
        "sum by (symbol, asset_class) (increase(ingest_symbol_ticks_in_total[5m])) == 0"
    ),
    "IngestConsumerLagGrowing": (
        "sum by (job, instance, topic) (ingest:consumer_lag_messages) > 1000"
    ),
    "IngestRejectRateHigh": (
        "(sum by (job, instance) (rate(ingest_rejects_total[5m]))"
        " / sum by (job, instance) (rate(ingest_ticks_in_total[5m]))) > 0.05"
    ),
    "IngestNatsBridgeStalled": (
        "ingest_bridge_lag_messages > 0"
        " and on (job, instance) rate(ingest_bridge_published_total[2m]) == 0"
    ),
    "IngestCollectorFailing": "ingest_collector_consecutive_failures >= 1",
}

promtool_missing = shutil.which("promtool") is None
needs_promtool = pytest.mark.skipif(
    promtool_missing, reason="promtool missing: run scripts/install.sh (Debian prometheus)"
)


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def load_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in load_rules() if "alert" in rule]


def dashboard_exprs() -> list[str]:
    def panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for panel in items:
            out.append(panel)
            out.extend(panels(panel.get("panels", [])))
        return out

    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in panels(doc["panels"]) for t in p.get("targets", [])]


def as_plain_promql(expr: str) -> str:
    """Grafana's variables replaced by values, so promtool can parse the expression."""
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*")


def used_metric_names(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}


def exported_names(exposition: str) -> set[str]:
    """Every series name the exposition text can produce, samples or not (a labelled
    counter that never moved has only its TYPE line)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "counter" and not name.endswith("_total"):
                names.add(name + "_total")
            if kind == "histogram":
                names.update({name + "_bucket", name + "_sum", name + "_count"})
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


# ------------------------------------------------------------------------ promtool


@needs_promtool
def test_alert_rules_are_valid() -> None:
    result = promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


@needs_promtool
def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", ALERTS_TEST)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_prometheus_config_is_valid() -> None:
    result = promtool("check", "config", PROM_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid prometheus config file" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = [
        case
        for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert set(alert_names()) - fires == set(), "alerts never shown to fire"
    assert set(alert_names()) - quiet == set(), "alerts without an evaluation expecting none"
    assert fires | quiet <= set(alert_names()), "unit tests of alerts that do not exist"


def _with_expr(tmp_path: Path, alert: str, expr: str) -> Path:
    """Copies of alerts.yml (one alert's expression replaced) and alerts_test.yml."""
    doc = yaml.safe_load(ALERTS.read_text())
    hits = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == alert]
    assert len(hits) == 1
    hits[0]["expr"] = expr
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    return tmp_path / "alerts_test.yml"


@needs_promtool
@pytest.mark.parametrize("alert", alert_names())
def test_unit_tests_fail_when_an_alert_never_fires(tmp_path: Path, alert: str) -> None:
    result = promtool("test", "rules", _with_expr(tmp_path, alert, "vector(1) == 0"))
    assert result.returncode != 0, f"{alert}: unit tests still pass with a dead expression"
    assert f"alertname: {alert}," in result.stdout + result.stderr


@needs_promtool
@pytest.mark.parametrize("alert", sorted(WEAKENED))
def test_unit_tests_fail_when_a_guard_is_removed(tmp_path: Path, alert: str) -> None:
    """The healthy series of the unit tests keep a too-broad alert from passing."""
    result = promtool("test", "rules", _with_expr(tmp_path, alert, WEAKENED[alert]))
    assert result.returncode != 0, f"{alert}: unit tests pass without the guard"
    assert f"alertname: {alert}," in result.stdout + result.stderr


@needs_promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": as_plain_promql(e)}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ names and wiring


def test_recorded_series_used_by_alerts_are_defined() -> None:
    recorded = {r["record"] for r in load_rules() if "record" in r}
    used = {m for r in load_rules() for m in re.findall(r"\b\w+:\w+\b", r["expr"])}
    assert used <= recorded


def _in_process_exposition() -> str:
    """What the worker's registries export: app/ops/metrics.py, its live-state collector (fed
    every section it reads) and faust's sensor with the app's prefix."""
    health = HealthRegistry("data-ingestion", "1")
    health.add_section("broker_connections", lambda: {"oanda": {"status": "connected"}})
    health.add_section(
        "nats_bridge", lambda: {"state": "connected", "lag_messages": 0, "acked": 0, "resends": 0}
    )
    health.add_section(
        "collectors",
        lambda: {
            "ecb": {
                "provider": "ecb",
                "status": "ok",
                "consecutive_failures": 0,
                "failures": 0,
                "polls": 1,
                "records": 1,
            }
        },
    )
    live = CollectorRegistry()
    live.register(LiveStateCollector(health))
    faust_registry = CollectorRegistry()
    FaustMetrics.create(faust_registry, "faust")
    own = CollectorRegistry()
    for value in vars(app_metrics).values():
        if isinstance(value, MetricWrapperBase):
            own.register(value)
    return "".join(generate_latest(r).decode() for r in (live, faust_registry, own))


def test_every_metric_in_rules_and_dashboard_is_exported() -> None:
    exported = exported_names(_in_process_exposition())
    used_by_alerts = used_metric_names([r["expr"] for r in load_rules()])
    used_by_dashboard = used_metric_names(dashboard_exprs())
    assert "ingest_symbol_ticks_in_total" in used_by_alerts
    assert "ingest_end_to_end_latency_seconds_bucket" in used_by_dashboard
    assert used_by_alerts - exported == set()
    assert used_by_dashboard - exported == set()


def test_name_check_catches_a_misspelt_metric() -> None:
    exported = exported_names(_in_process_exposition())
    assert used_metric_names(["rate(ingest_tick_in_total[5m])"]) - exported == {
        "ingest_tick_in_total"
    }


def test_compose_monitoring_services_are_provisioned() -> None:
    """docker-compose.yml loads; both services are in the `monitoring` profile, bound to
    127.0.0.1, and mount files that exist."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("prometheus", "grafana"):
        svc = services[name]
        assert svc["profiles"] == ["monitoring"]
        assert all(port.startswith("127.0.0.1:") for port in svc["ports"])
        for volume in svc["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), volume
    mounted = " ".join(services["prometheus"]["volumes"] + services["grafana"]["volumes"])
    assert "deploy/prometheus/alerts.yml" in mounted
    assert "deploy/grafana/dashboards" in mounted
    datasources = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    uids = {ds["uid"] for ds in datasources}
    dashboard = json.loads(DASHBOARD.read_text())
    assert {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])} <= (
        uids
    )
    scrape = yaml.safe_load(PROM_CONFIG.read_text())["scrape_configs"]
    assert scrape[0]["static_configs"][0]["targets"] == ["worker:6066"]  # compose service name


# ------------------------------------------------------------------------ real worker


def _batch(symbol: str, n: int) -> bytes:
    from app.wire import codec

    t0 = time.time_ns()
    records = [
        codec.RawRecord(
            source="ic_markets",
            format="tick",
            tick=codec.MarketTick(
                symbol=symbol,
                source="ic_markets",
                bid_e9=1_100_000_000 + i * 10_000,
                ask_e9=1_100_050_000 + i * 10_000,
                event_time_ns=t0 + i * 100_000_000,
                receive_time_ns=t0 + i * 100_000_000 + 1_000_000,
            ),
        )
        for i in range(n)
    ]
    return codec.encode_raw_batch(records)


def _lag(text: str, topic: str) -> float | None:
    """Sum over partitions of end offset - committed offset, as the recording rule does."""
    ends: dict[str, float] = {}
    commits: dict[str, float] = {}
    for line in text.splitlines():
        for name, into in (
            ("faust_topic_partition_end_offset{", ends),
            ("faust_topic_partition_offset_commited{", commits),
        ):
            if line.startswith(name) and f'topic="{topic}"' in line:
                into[line.split("partition=")[1].split('"')[1]] = float(line.rsplit(" ", 1)[1])
    if not commits:
        return None
    return sum(max(ends.get(p, 0.0) - c, 0.0) for p, c in commits.items())


@pytest.mark.integration
async def test_a_real_worker_exports_every_name_used(
    clean_kafka: StackConfig, tmp_path: Path, app_id: str
) -> None:
    """Scrape a worker's /metrics: every name in the alerts and the dashboard is there,
    the per-symbol counter counts live ticks, and the lag of a drained topic is 0."""
    await create_topics(clean_kafka.kafka_bootstrap, ["raw.broker.ticks"], partitions=4)
    env = {
        "INGEST__NATS__STREAM_NAME": f"M{app_id[5:].upper()}",
        "INGEST__NATS__SUBJECT_PREFIX": f"m{app_id[5:]}",
        "INGEST__KAFKA__COMMIT_INTERVAL_S": "0.5",
    }
    with Worker(clean_kafka, tmp_path, app_id, env=env) as worker:
        before = worker.get_text("/metrics")
        await produce(
            clean_kafka.kafka_bootstrap,
            "raw.broker.ticks",
            [(b"EURUSD", _batch("EURUSD", 7)), (b"GBPUSD", _batch("GBPUSD", 3))],
        )
        deadline = time.monotonic() + 30
        text = before
        while time.monotonic() < deadline:
            text = worker.get_text("/metrics")
            if _lag(text, "raw.broker.ticks") == 0 and "ingest_bridge_published_total 2" in text:
                break
            await asyncio.sleep(0.5)
    exported = exported_names(text)
    used_by_alerts = used_metric_names([r["expr"] for r in load_rules()])
    used_by_dashboard = used_metric_names(dashboard_exprs())
    assert used_by_alerts - exported == set()
    assert used_by_dashboard - exported == set()
    # Configured symbols exist at 0 before any tick (the "never ticked" case alerts too).
    assert 'ingest_symbol_ticks_in_total{asset_class="fx_major",symbol="EURUSD"} 0.0' in before
    assert 'ingest_symbol_ticks_in_total{asset_class="fx_major",symbol="EURUSD"} 7.0' in text
    assert 'ingest_symbol_ticks_in_total{asset_class="fx_major",symbol="GBPUSD"} 3.0' in text
    assert 'ingest_source_enabled{source="ic_markets"} 0.0' in text  # disabled in tests
    assert _lag(text, "raw.broker.ticks") == 0
