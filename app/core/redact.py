"""Showing URLs and errors without their secrets (logs, /health, hub payload, exceptions)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str | None) -> str | None:
    """`url` without userinfo (`nats://user:pw@h:4222` -> `nats://h:4222`); lists too."""
    if not url:
        return url
    if "," in url:  # NATS/Kafka server lists
        return ",".join(redact_url(part.strip()) or "" for part in url.split(","))
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every non-empty secret value replaced by `***` (for error strings)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
