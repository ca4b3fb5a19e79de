"""The polling loop every collector shares: fetch, write raw, back off, report health.

A provider module only says which requests make one poll (`requests`) and how to read
the answer (`parse`). Everything about time - interval, timeouts, exponential backoff,
HTTP 429 and Retry-After, a provider's own rate-limit body - lives here once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Protocol

import aiohttp

from app.core.errors import ParseError
from app.settings import CollectorSettings
from app.sources.collectors.observation import Observation
from app.wire import codec

log = logging.getLogger(__name__)

Parser = Callable[[bytes, str], list[Observation]]
USER_AGENT = "data-ingestion/1.0 (+market-context collector)"


class Sink(Protocol):
    """Where a collector writes: Kafka in the worker, a list in unit tests."""

    async def raw(self, key: str, record: codec.RawRecord) -> None: ...

    async def reject(self, key: str, rejection: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Fetch:
    """One HTTP GET of a poll; `series` is written into the raw key for the parser."""

    url: str
    series: str = ""
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class CollectorHealth:
    """Live state of one collector, shown on /health."""

    provider: str
    enabled: bool
    status: str = "starting"
    polls: int = 0
    records: int = 0
    consecutive_failures: int = 0
    failures: int = 0  # failed polls since start (a Prometheus counter)
    last_success: float | None = None
    last_error: str | None = None
    last_error_reason: str | None = None
    last_error_at: float | None = None
    next_poll: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "enabled": self.enabled,
            "status": self.status,
            "polls": self.polls,
            "records": self.records,
            "consecutive_failures": self.consecutive_failures,
            "failures": self.failures,
            "last_success": _iso(self.last_success),
            "last_error": self.last_error,
            "last_error_reason": self.last_error_reason,
            "last_error_at": _iso(self.last_error_at),
            "next_poll": _iso(self.next_poll),
        }

    def problem(self) -> str | None:
        """A problem for the health check: a missing key, or polls that keep failing."""
        if self.status == "missing_api_key" or self.consecutive_failures:
            return f"{self.status}: {self.last_error} ({self.consecutive_failures} failed polls)"
        return None


class _PollFailed(Exception):
    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


class Collector:
    """Polls one provider on its own interval until cancelled; never raises out of `run`."""

    provider: ClassVar[str]
    category: ClassVar[str]
    parse: ClassVar[Parser]
    #: A keyed provider idles with status missing_api_key until the variable is set.
    key_required: ClassVar[bool] = False

    def __init__(
        self,
        name: str,
        cfg: CollectorSettings,
        sink: Sink,
        session: aiohttp.ClientSession,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.sink = sink
        self.session = session
        self.environ = environ
        self.base_url = cfg.base_url.rstrip("/")
        self.health = CollectorHealth(provider=self.provider, enabled=cfg.enabled)

    def requests(self, api_key: str | None) -> list[Fetch]:
        """The GETs of one poll, built from `cfg.params` (provider-specific)."""
        raise NotImplementedError

    def raw_key(self, fetch: Fetch) -> str:
        return f"{self.provider}:{fetch.series}" if fetch.series else self.name

    async def run(self) -> None:
        """Poll forever: interval after success, exponential backoff after failure."""
        while True:
            delay = await self.poll_once()
            self.health.next_poll = time.time() + delay
            await asyncio.sleep(delay)

    async def poll_once(self) -> float:
        """One poll of every request; returns the seconds to wait before the next one."""
        api_key = self.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
        if self.key_required and not api_key:
            self.health.status = "missing_api_key"
            self.health.last_error = f"environment variable {self.cfg.api_key_env} is not set"
            self.health.last_error_reason = "missing_api_key"
            return max(self.cfg.interval_s, self.cfg.backoff_max_s)
        self.health.polls += 1
        failure: _PollFailed | None = None
        for fetch in self.requests(api_key):
            try:
                await self._fetch_one(fetch, api_key)
            except _PollFailed as exc:
                failure = exc
                self._record_failure(exc, api_key)
                if exc.reason == "rate_limited":
                    break  # the whole provider said "slow down", not one series
        if failure is None:
            self.health.status = "ok"
            self.health.consecutive_failures = 0
            self.health.last_success = time.time()
            return self.cfg.interval_s
        self.health.consecutive_failures += 1
        self.health.failures += 1
        backoff = min(
            self.cfg.backoff_initial_s * 2 ** (self.health.consecutive_failures - 1),
            self.cfg.backoff_max_s,
        )
        if failure.reason == "rate_limited":
            self.health.status = "rate_limited"
            return max(backoff, failure.retry_after or 0.0)
        self.health.status = "failing"
        return backoff

    async def _fetch_one(self, fetch: Fetch, api_key: str | None) -> None:
        key = self.raw_key(fetch)
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*", **fetch.headers}
        try:
            async with self.session.get(
                fetch.url,
                params=dict(fetch.query),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s),
            ) as resp:
                body = await resp.read()
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except TimeoutError:
            raise _PollFailed("timeout", f"no answer within {self.cfg.timeout_s}s") from None
        except aiohttp.ClientError as exc:
            raise _PollFailed("connection_error", f"{type(exc).__name__}: {exc}") from None
        record = codec.RawRecord(
            source=self.name, format=self.provider, payload=body, receive_time_ns=time.time_ns()
        )
        if status >= 400:
            reason = "rate_limited" if status == 429 else f"http_{status}"
            detail = f"HTTP {status}: {self._provider_message(body, fetch)}"
            await self.sink.reject(
                key, codec.encode_rejection([reason], _redact(detail, api_key), record, "source")
            )
            raise _PollFailed(reason, detail, retry_after)
        # The body is the provider's answer: it goes to the raw topic whatever it says, and
        # the context agent rejects error shapes. Parsing here only steers the backoff.
        await self.sink.raw(key, record)
        self.health.records += 1
        try:
            type(self).parse(body, fetch.series)
        except ParseError as exc:
            raise _PollFailed(exc.reason, exc.detail, retry_after) from None

    def _provider_message(self, body: bytes, fetch: Fetch) -> str:
        """The provider's own words for an error answer (its error shape), else the body."""
        try:
            type(self).parse(body, fetch.series)
        except ParseError as exc:
            return exc.detail
        return body[:200].decode("utf-8", errors="replace")

    def _record_failure(self, exc: _PollFailed, api_key: str | None) -> None:
        detail = _redact(exc.detail, api_key)
        self.health.last_error = detail
        self.health.last_error_reason = exc.reason
        self.health.last_error_at = time.time()
        log.warning("collector %s: %s: %s", self.name, exc.reason, detail)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _redact(text: str, secret: str | None) -> str:
    """Error texts may echo the request URL; an API key in it must never reach a log."""
    return text.replace(secret, "***") if secret else text


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None
