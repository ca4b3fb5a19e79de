"""The `ingest` console script: the service's faust app and its commands (`faust -A app`)."""

from __future__ import annotations

import importlib.metadata
import sys

# The service's own commands, listed before faust's generic ones in `ingest --help`.
SERVICE_COMMANDS = {
    "worker": "run the pipeline (sources, agents, NATS bridge, web views)",
    "import-dukascopy": "import Dukascopy .bi5 hours into raw.historical.ticks",
    "reference-check": "compare live broker mids with the Dukascopy reference",
    "replay": "reset the raw topics' offsets and the state derived from them",
    "tail": "print decoded messages of a service topic",
}


def main() -> None:
    args = sys.argv[1:]
    if args == ["--version"]:  # faust's own --version names faust's version only
        from app import __version__

        faust_version = importlib.metadata.version("faust-streaming")
        print(f"data-ingestion {__version__} (faust-streaming {faust_version})")
        return
    if args in ([], ["--help"], ["-h"]):
        print("Service commands (ingest COMMAND --help for their options):")
        for name, text in SERVICE_COMMANDS.items():
            print(f"  {name:<17} {text}")
        print("\nAll commands, with faust's generic ones:\n")
        sys.argv[1:] = ["--help"]
    from app.pipeline.faust_app import app

    app.main()
