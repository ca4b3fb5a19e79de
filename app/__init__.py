"""Market-data ingestion service: `faust -A app worker` runs it.

The faust app is created on first access, so that importing pure modules such as
`app.core.models` in tests or tools does not read the configuration.
"""

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from app.pipeline.faust_app import app

        return app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
