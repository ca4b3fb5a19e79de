"""The worker class: refuses to start while an interrupted replay is recorded.

A replay killed half-way leaves offsets reset but state maybe not yet cleared (or the
reverse); a worker started on that would skip the replayed input as already applied or
process it against the wrong state. `replay` run again finishes the recorded plan.
"""

from __future__ import annotations

import sys
from typing import Any

import faust

from app.cli.replay_offsets import ReplayRefused, check_no_pending_replay


class Worker(faust.Worker):
    def __init__(self, app: faust.App, *args: Any, **kwargs: Any) -> None:
        try:
            check_no_pending_replay(app.conf.datadir)
        except ReplayRefused as exc:
            sys.stderr.write(f"worker refused: {exc}\n")
            raise SystemExit(3) from None
        super().__init__(app, *args, **kwargs)
