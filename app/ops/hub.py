"""Central Hub registration: announce the service at start, keep it registered, leave at stop.

The hub API is the design document's `register_service` payload, POSTed to
`{url}/services`; leaving is `DELETE {url}/services/{name}`. Registration is re-sent on
an interval, so a hub that restarts (or was down at our start) learns about us again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import mode

from app import __version__
from app.core.redact import redact_url
from app.settings import Settings
from app.sources.contract import Backoff

log = logging.getLogger(__name__)


def registration(settings: Settings, subject_prefix: str) -> dict[str, Any]:
    """The payload the design document registers with."""
    hub = settings.hub
    return {
        "name": settings.service.name,
        "host": hub.advertise_host,
        "port": hub.advertise_port or settings.service.web_port,
        "protocol": hub.protocol,
        "health_endpoint": "/health",
        "version": __version__,
        "topics": ["market-data-stream", "market-context-stream"],
        "subjects": [f"{subject_prefix}.*.ticks", f"{subject_prefix}.context.*"],
    }


class HubRegistration(mode.Service):
    """Registers with the hub every `reregister_interval_s`; failures are logged and retried."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.url = (settings.hub.url or "").rstrip("/")
        self.shown_url = redact_url(self.url)  # logs and /health: no userinfo
        self.payload = registration(settings, settings.nats.subject_prefix)
        self.registered = False
        self.last_error: str | None = None
        self.last_success: float | None = None
        self._session: aiohttp.ClientSession | None = None

    def status(self) -> dict[str, Any]:
        return {
            "url": self.shown_url,
            "registered": self.registered,
            "last_success_age_s": None
            if self.last_success is None
            else round(time.monotonic() - self.last_success, 1),
            "last_error": self.last_error,
        }

    async def on_start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.hub.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)

    async def register(self) -> bool:
        assert self._session is not None
        try:
            async with self._session.post(f"{self.url}/services", json=self.payload) as resp:
                if resp.status >= 300:
                    raise aiohttp.ClientResponseError(
                        resp.request_info, (), status=resp.status, message=await resp.text()
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.registered = False
            # aiohttp's error text carries the request URL, userinfo included
            error = str(exc).replace(self.url, self.shown_url or "")
            self.last_error = f"register failed: {error}"
            log.warning("central hub %s: %s", self.shown_url, self.last_error)
            return False
        if not self.registered:
            log.info("registered with central hub %s", self.shown_url)
        self.registered, self.last_error, self.last_success = True, None, time.monotonic()
        return True

    @mode.Service.task
    async def _keep_registered(self) -> None:
        interval = self.settings.hub.reregister_interval_s
        backoff = Backoff(min(1.0, interval), interval)
        while not self.should_stop:
            ok = await self.register()
            if ok:
                backoff.reset()
            await self.sleep(interval if ok else backoff.next_delay())

    async def on_stop(self) -> None:
        if self._session is None:
            return
        if self.registered:
            try:
                url = f"{self.url}/services/{self.payload['name']}"
                async with self._session.delete(url) as resp:
                    log.info(
                        "deregistered from central hub %s (HTTP %s)", self.shown_url, resp.status
                    )
            except (aiohttp.ClientError, TimeoutError, asyncio.CancelledError) as exc:
                log.warning(
                    "central hub %s: deregister failed: %s",
                    self.shown_url,
                    str(exc).replace(self.url, self.shown_url or ""),
                )
        await self._session.close()
