"""The `ingest` console script: the service's faust app and its commands (`faust -A app`)."""

from __future__ import annotations

import importlib.metadata
import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:  # faust's own --version names faust's version only
        from app import __version__

        faust_version = importlib.metadata.version("faust-streaming")
        print(f"data-ingestion {__version__} (faust-streaming {faust_version})")
        return
    from app.pipeline.faust_app import app

    app.main()
