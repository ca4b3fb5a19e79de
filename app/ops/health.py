"""What `/health` reports: sections contributed by the running components.

Sources, the bridge and the collectors each own their live connection state; they
register a section (a function returning JSON-able data) and, optionally, a check that
names a problem. The page is assembled on request, so it never reports stale copies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Section = Callable[[], Any]
Check = Callable[[], str | None]


class HealthRegistry:
    def __init__(self, service_name: str, version: str) -> None:
        self.service_name = service_name
        self.version = version
        self.started = time.monotonic()
        self._sections: dict[str, Section] = {}
        self._checks: dict[str, Check] = {}

    def add_section(self, name: str, section: Section) -> None:
        self._sections[name] = section

    def add_check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def section(self, name: str) -> Any:
        """The current value of one section (None when no component registered it)."""
        section = self._sections.get(name)
        return None if section is None else section()

    def report(self) -> dict[str, Any]:
        problems = {name: msg for name, check in self._checks.items() if (msg := check())}
        body: dict[str, Any] = {
            "service_name": self.service_name,
            "status": "degraded" if problems else "healthy",
            "timestamp": datetime.now(UTC).isoformat(),
            "version": self.version,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
        }
        for name, section in self._sections.items():
            body[name] = section()
        if problems:
            body["problems"] = problems
        return body
