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
from app.core.reasons import STAGE_SOURCE
from app.settings import CollectorSettings
from app.sources.collectors.observation import Observation
from app.wire import codec

log = logging.getLogger(__name__)

Parser = Callable[[bytes, str], list[Observation]]
USER_AGENT = "data-ingestion/1.0 (+market-context collector)"
# No provider answer is near this; a bigger one would not fit a Kafka message either.
MAX_BODY_BYTES = 1024 * 1024
# What of an oversized body goes into its rejection (the start is enough to see what it was).
REJECT_PAYLOAD_BYTES = 64 * 1024
# 2**32 * initial is far above any backoff_max_s: the cap applies long before, no overflow.
MAX_BACKOFF_EXPONENT = 32


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
    raw_write_failures: int = 0
    reject_write_failures: int = 0

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
            "raw_write_failures": self.raw_write_failures,
            "reject_write_failures": self.reject_write_failures,
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
        exponent = min(self.health.consecutive_failures - 1, MAX_BACKOFF_EXPONENT)
        backoff = min(self.cfg.backoff_initial_s * 2**exponent, self.cfg.backoff_max_s)
        if failure.reason == "rate_limited":
            self.health.status = "rate_limited"
            # Retry-After is honoured; parse_retry_after bounds it at MAX_RETRY_AFTER_S.
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
                body, size = await read_limited(resp.content, MAX_BODY_BYTES)
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except TimeoutError:
            raise _PollFailed("timeout", f"no answer within {self.cfg.timeout_s}s") from None
        except aiohttp.ClientError as exc:
            raise _PollFailed("connection_error", f"{type(exc).__name__}: {exc}") from None
        record = codec.RawRecord(
            source=self.name, format=self.provider, payload=body, receive_time_ns=time.time_ns()
        )
        if size > MAX_BODY_BYTES:
            record.payload = body[:REJECT_PAYLOAD_BYTES]
            detail = f"HTTP {status}: body over {MAX_BODY_BYTES} bytes (first {size} read)"
            await self._write_reject(key, "body_too_large", detail, record, api_key)
            raise _PollFailed("body_too_large", detail, retry_after)
        if status >= 400:
            reason = "rate_limited" if status == 429 else f"http_{status}"
            detail = f"HTTP {status}: {self._provider_message(body, fetch)}"
            await self._write_reject(key, reason, detail, record, api_key)
            raise _PollFailed(reason, detail, retry_after)
        # The body is the provider's answer: it goes to the raw topic whatever it says, and
        # the context agent rejects error shapes. Parsing here only steers the backoff.
        # Awaited until Kafka acknowledged it; a failed write fails the poll, which is
        # then retried after the backoff (the answer is fetched again, nothing is lost).
        try:
            await self.sink.raw(key, record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.health.raw_write_failures += 1
            detail = f"raw write failed: {type(exc).__name__}: {exc}"
            raise _PollFailed("raw_write_failed", detail, None) from exc
        self.health.records += 1
        try:
            type(self).parse(body, fetch.series)
        except ParseError as exc:
            raise _PollFailed(exc.reason, exc.detail, retry_after) from None

    async def _write_reject(
        self, key: str, reason: str, detail: str, record: codec.RawRecord, api_key: str | None
    ) -> None:
        """A refused answer to the rejects; a failed write is counted and logged, not raised."""
        rejection = codec.encode_rejection([reason], _redact(detail, api_key), record, STAGE_SOURCE)
        try:
            await self.sink.reject(key, rejection)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.health.reject_write_failures += 1
            log.error("collector %s: reject write failed: %r", self.name, exc)

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


async def read_limited(content: aiohttp.StreamReader, limit: int) -> tuple[bytes, int]:
    """Read a body up to `limit` bytes; returns (what was read, size read); size > limit
    means the body is bigger and the rest was not read (nor held in memory)."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await content.read(min(64 * 1024, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), size


# The longest a provider's Retry-After can hold a collector back: an hour. Longer waits are
# daily quotas, which the next polls will meet again anyway (and report on /health).
MAX_RETRY_AFTER_S = 3600.0


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110).

    Bounded at MAX_RETRY_AFTER_S: "9"*400 would otherwise be an infinite sleep, and 3e11
    a next poll /health cannot show as a date.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return MAX_RETRY_AFTER_S if len(value) > 12 else min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
        seconds = (when.replace(tzinfo=when.tzinfo or UTC) - datetime.now(UTC)).total_seconds()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def _redact(text: str, secret: str | None) -> str:
    """Error texts may echo the request URL; an API key in it must never reach a log."""
    return text.replace(secret, "***") if secret else text


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None
