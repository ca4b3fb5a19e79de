"""Commands behave like Unix tools: 0 done, 1 failed, 2 bad usage; one line per error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app import __version__

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("import-dukascopy", "EURUSD", "--from", "2024-13-01", "--to", "2024-01-02"),
         "not a date/time: '2024-13-01'"),
        (("import-dukascopy", "EURUSD", "--from", "2024-01-03", "--to", "2024-01-02"),
         "--from 2024-01-03 is not before --to 2024-01-02"),
        (("import-dukascopy", "BTCUSD", "--from", "2024-01-01", "--to", "2024-01-02"),
         "no point scale for instrument 'BTCUSD'"),
        (("tail", "no-such-topic"), "unknown topic 'no-such-topic'"),
        (("replay", "--to-earliest", "--topic", "market-data-stream"),
         "not a raw topic: market-data-stream"),
        (("replay", "--to-earliest"), "no terminal to confirm on: add --yes (or --dry-run)"),
        (("replay",), "give exactly one of --to-earliest or --to-datetime"),
    ],
)  # fmt: skip
def test_bad_usage_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    done = run(*args)
    assert done.returncode == 2, done.stderr
    assert message in one_error_line(done)


def test_replay_dry_run_prints_what_it_would_do_and_touches_nothing() -> None:
    done = run("replay", "--to-earliest", "--topic", "raw.broker.ticks", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "reset raw.broker.ticks to the earliest offset" in done.stdout
    assert "delete changelog topic data-ingestion-symbol-state-changelog" in done.stdout
    assert "historical" not in done.stdout  # only the state derived from that topic


def test_ingest_version_is_the_service_version() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv[1:] = ['--version'];"
         " from app.cli.main import main; main()"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stdout.startswith(f"data-ingestion {__version__} (faust-streaming ")
