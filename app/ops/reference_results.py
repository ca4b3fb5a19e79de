"""Where `reference-check` keeps each symbol's latest result, for the views that show it.

One JSON file per symbol under `historical.results_dir`, replaced atomically, so the check
can run anywhere that shares the data directory and the worker only reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from app.core.reference import ReferenceComparison
from app.settings import Settings


def results_dir(settings: Settings) -> Path:
    configured = settings.historical.results_dir
    return configured or Path(settings.service.data_dir) / "dukascopy" / "reference"


def result_path(settings: Settings, symbol: str) -> Path:
    return results_dir(settings) / f"{symbol}.json"


def write_result(settings: Settings, result: ReferenceComparison) -> Path:
    """Atomically replace the symbol's latest result (a view may read it at any time)."""
    path = result_path(settings, result.symbol)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    tmp.replace(path)
    return path


def read_result(settings: Settings, symbol: str) -> ReferenceComparison | None:
    """The latest result, or None when none has run (or the file is unreadable)."""
    try:
        return ReferenceComparison.from_dict(json.loads(result_path(settings, symbol).read_text()))
    except (OSError, ValueError, TypeError):
        return None
