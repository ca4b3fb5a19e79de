"""Market-data ingestion service: `faust -A app worker` runs it.

The faust app is created on first access, so that importing pure modules such as
`app.core.models` in tests or tools does not read the configuration.
"""

import importlib.metadata
from typing import Any

__all__ = ["__version__", "app"]

try:  # the one version string: pyproject.toml's, shown by /health, the hub and --version
    __version__ = importlib.metadata.version("data-ingestion-service")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "app":
        from app.pipeline.faust_app import app

        return app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
