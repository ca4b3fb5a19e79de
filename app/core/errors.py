"""Named errors of the service. A bad record becomes a Rejection with the reason code."""

from __future__ import annotations


class IngestError(Exception):
    """Base of the service's own errors."""


class ParseError(IngestError):
    """A record that cannot be read; `reason` is the code that goes to market-data-rejects."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ProviderError(IngestError):
    """A provider answered with an error (HTTP status, error body, rate limit)."""

    def __init__(self, provider: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{provider}: {detail}" + (f" (HTTP {status})" if status else ""))
        self.provider = provider
        self.detail = detail
        self.status = status
