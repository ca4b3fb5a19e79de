"""The commands' exit statuses: 0 done, 1 failed, 2 bad usage or configuration.

An error is one line on stderr, never a traceback: faust runs a command inside its worker
machinery, where an exception (even click's UsageError) is logged with its traceback, so
the commands leave through SystemExit with the status instead.
"""

from __future__ import annotations

import sys
from typing import NoReturn

EXIT_FAILED = 1
EXIT_USAGE = 2


def usage_error(message: str) -> NoReturn:
    sys.stderr.write(f"data-ingestion: {message}\n")
    raise SystemExit(EXIT_USAGE)


def failed(message: str) -> NoReturn:
    sys.stderr.write(f"data-ingestion: {message}\n")
    raise SystemExit(EXIT_FAILED)
