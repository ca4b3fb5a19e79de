"""The live status page in a real browser: Debian's chromium + chromedriver via Selenium.

Stack + OANDA simulator + a worker with its three brokers on; the page is opened headless
and must (1) update itself (server-sent events), (2) show the same broker statuses,
best prices, partitions and quality ranking as `/health` and the tables, (3) load
everything from the worker (no CDN), (4) turn a broker red within seconds of the
simulator stalling its stream, and show the service's `degraded` reason when /health
does. The screenshot goes to docs/status-page.png (shown in the README).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import StackConfig
from tests.support.simulator import SimulatorProcess
from tests.support.worker import REPO, Worker

pytestmark = pytest.mark.integration

BROKERS = ("ic_markets", "pepperstone", "fxcm")
SCREENSHOT = REPO / "docs" / "status-page.png"
RED = "rgb(217, 48, 37)"  # --down in style.css
GREEN = "rgb(31, 157, 85)"  # --ok


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` until it returns something truthy; its last error names the failure."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except AssertionError as exc:
            last = exc
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last}")


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(
        tmp_path / "simulator.log",
        "--seed", "5", "--rate", "4", "--heartbeat-s", "1",
        "--profile", "pepperstone:malformed_every=25",  # some rejects for the page to show
    )  # fmt: skip
    yield sim
    sim.stop()


@pytest.fixture
def worker(
    clean_kafka: StackConfig, tmp_path: Path, app_id: str, simulator: SimulatorProcess
) -> Iterator[Worker]:
    env = {}
    for name in BROKERS:  # the suite disables brokers by default (tests/conftest.py)
        prefix = f"INGEST__BROKERS__{name.upper()}__"
        env[prefix + "ENABLED"] = "true"
        env[prefix + "STREAM_URL"] = f"{simulator.url}/{name}"
        env[prefix + "BACKOFF_INITIAL_S"] = "0.2"
        env[prefix + "BACKOFF_MAX_S"] = "1"
        # a stalled stream stays "connected" for this long: the page must flag the silence
        env[prefix + "HEARTBEAT_TIMEOUT_S"] = "60"
        env[f"OANDA_TOKEN_{name.upper()}"] = f"token-of-{name}"
    w = Worker(clean_kafka, tmp_path, app_id, env=env)
    try:
        yield w.start(timeout=120)
    finally:
        w.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.fail("chromium and chromium-driver are needed: run scripts/install.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def page_brokers(driver: Any) -> dict[str, dict[str, str]]:
    return driver.execute_script(
        """
        const out = {};
        for (const tr of document.querySelectorAll('#brokers tr[data-broker]')) {
          const pill = tr.querySelector('.pill');
          out[tr.dataset.broker] = {status: tr.dataset.status, level: tr.dataset.level,
                                    color: getComputedStyle(pill).color};
        }
        return out;"""
    )


def page_best(driver: Any) -> dict[str, dict[str, str]]:
    return driver.execute_script(
        """
        const out = {};
        for (const tr of document.querySelectorAll('#best tr[data-symbol]')) {
          out[tr.dataset.symbol] = {source: tr.dataset.source,
            bid: tr.querySelector('[data-field=bid]').textContent,
            ask: tr.querySelector('[data-field=ask]').textContent};
        }
        return out;"""
    )


def snapshots(driver: Any) -> int:
    return int(driver.execute_script("return document.body.dataset.snapshots || 0"))


def test_status_page_live_matches_health_and_turns_red(
    worker: Worker, simulator: SimulatorProcess, browser: Any
) -> None:
    wait_until(
        lambda: (
            {
                n: c["status"]
                for n, c in worker.health()["broker_connections"].items()
                if c["status"] != "disabled"  # the shipped MT5 entries are off in tests
            }
            == dict.fromkeys(BROKERS, "connected")
            and len(worker.get_json("/tables/best-price")) >= 9
        ),
        timeout=90,
        what="three connected brokers and best prices for the nine symbols",
    )
    browser.get(f"http://127.0.0.1:{worker.web_port}/")

    # 1. live: snapshots keep arriving without a reload
    first = wait_until(lambda: snapshots(browser), 20, "the first snapshot")
    wait_until(lambda: snapshots(browser) >= first + 3, 20, "three more snapshots")

    # 2. everything the page loaded came from the worker (no CDN), and the chart drew
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    origin = f"http://127.0.0.1:{worker.web_port}/"
    assert resources and all(r.startswith(origin) for r in resources), resources
    assert any(r.endswith("/ui/lib/lightweight-charts.js") for r in resources)
    assert browser.execute_script("return typeof LightweightCharts") == "object"
    assert browser.execute_script("return document.querySelectorAll('#chart canvas').length")

    # 3. the numbers match /health and the tables. Prices frozen (heartbeats only) so
    # that the page and the table can be compared exactly.
    simulator.control("all", paused=True)

    def best_matches() -> bool:
        table = worker.get_json("/tables/best-price")
        expected = {
            s: {"source": b["source"], "bid": b["bid"], "ask": b["ask"]} for s, b in table.items()
        }
        shown = page_best(browser)
        assert shown == expected, (shown, expected)
        return True

    wait_until(best_matches, 20, "the page's best prices to equal /tables/best-price")
    assert len(page_best(browser)) >= 9

    health = worker.health()
    shown = page_brokers(browser)
    assert {n: b["status"] for n, b in shown.items()} == {
        n: c["status"] for n, c in health["broker_connections"].items()
    }
    enabled = {n: b for n, b in shown.items() if b["status"] != "disabled"}
    assert set(enabled) == set(BROKERS)
    assert {b["level"] for b in enabled.values()} == {"ok"}
    assert {b["color"] for b in enabled.values()} == {GREEN}
    assert {b["level"] for n, b in shown.items() if n not in enabled} <= {"off"}
    status = browser.find_element("id", "status")
    assert status.get_attribute("data-status") == health["status"] == "healthy"
    assert browser.find_element("id", "problems").get_attribute("hidden") is not None
    # one worker owns all four partitions, and the page says so
    assert browser.find_element("id", "worker").get_attribute("data-partitions") == "0,1,2,3"
    compare = worker.get_json("/brokers/compare/EURUSD")
    ranking = browser.execute_script(
        "return [...document.querySelectorAll('#quality tr[data-symbol=EURUSD] .rank')]"
        ".map(e => e.textContent.trim().split(' ')[1])"
    )
    assert ranking == compare["ranking"] and len(ranking) == 3

    # 4. a broker stalled by the simulator turns red within seconds, the others stay green
    simulator.control("all", paused=False)
    simulator.control("fxcm", stall=True)
    stalled_at = time.monotonic()
    wait_until(lambda: page_brokers(browser)["fxcm"]["level"] == "down", 15, "fxcm to turn red")
    red_after = time.monotonic() - stalled_at
    shown = page_brokers(browser)
    assert shown["fxcm"]["color"] == RED
    assert shown["ic_markets"]["level"] == shown["pepperstone"]["level"] == "ok"
    assert worker.health()["broker_connections"]["fxcm"]["status"] == "connected"  # silent
    print(f"fxcm red on the page {red_after:.1f}s after the stall")

    # the unparseable lines from pepperstone are counted per source
    rejects = browser.execute_script(
        "const r = document.querySelector('#rejects tr[data-reason=\"source/pepperstone\"]');"
        "return r ? r.cells[3].textContent : null"
    )
    assert rejects is not None and int(rejects.replace(",", "")) > 0, rejects

    # ... a feed refused by the server (401) makes /health degraded (a stalled feed only
    # does so until its reconnect succeeds): the page's banner says why
    simulator.control("fxcm", stall=False, drop_after=1, auth_fail=True)
    wait_until(lambda: worker.health()["status"] == "degraded", 30, "/health to degrade")
    problems = worker.health()["problems"]
    banner = wait_until(
        lambda: (
            browser.find_element("id", "problems").is_displayed()
            and browser.find_element("id", "problem-list").text
        ),
        10,
        "the degraded banner",
    )
    assert "broker_connections" in problems and "fxcm" in problems["broker_connections"]
    assert "broker_connections" in banner and "fxcm" in banner
    assert browser.find_element("id", "status").get_attribute("data-status") == "degraded"

    assert page_brokers(browser)["fxcm"]["status"] == "auth_failed"

    # 5. the screenshot the README shows: the whole page, one broker red
    time.sleep(2)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, height)
    chrome = height - browser.execute_script("return window.innerHeight")  # window vs viewport
    browser.set_window_size(1400, height + chrome + 10)
    time.sleep(1.5)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))


def test_two_workers_each_page_shows_its_own_partitions(
    worker: Worker, clean_kafka: StackConfig, tmp_path: Path, app_id: str, browser: Any
) -> None:
    """A second worker of the same group takes some partitions: each page names its own,
    together they cover the topic once, and each shows exactly its worker's symbols."""
    wait_until(
        lambda: len(worker.get_json("/tables/best-price")) >= 9, 90, "best prices on worker 1"
    )
    second = Worker(clean_kafka, tmp_path / "second", app_id)  # brokers off: no second feed
    try:
        second.start(timeout=120)

        def page_view(w: Worker) -> tuple[list[int], dict[str, str]]:
            browser.get(f"http://127.0.0.1:{w.web_port}/ui/")
            wait_until(lambda: snapshots(browser) >= 1, 20, "a snapshot")
            parts = browser.find_element("id", "worker").get_attribute("data-partitions")
            text = browser.find_element("id", "worker").text
            shown = [int(p) for p in parts.split(",") if p]
            assert text.startswith(f"this worker: partitions {', '.join(map(str, shown))} of 4")
            best = {s: b["source"] for s, b in page_best(browser).items()}
            table = {s: b["source"] for s, b in w.get_json("/tables/best-price").items()}
            assert set(best) == set(table), (best, table)
            return shown, best

        def split_and_consistent() -> bool:
            first_parts, first_best = page_view(worker)
            second_parts, second_best = page_view(second)
            assert first_parts and second_parts, (first_parts, second_parts)
            assert sorted(first_parts + second_parts) == [0, 1, 2, 3]
            assert first_best and second_best and not set(first_best) & set(second_best)
            assert len(first_best) + len(second_best) >= 9
            return True

        wait_until(split_and_consistent, 120, "the two pages to split the partitions")
    finally:
        second.stop()
