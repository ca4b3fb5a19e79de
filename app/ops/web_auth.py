"""Optional bearer token on the web port (everything but the liveness probe).

faust's aiohttp driver passes `web_application_options` straight to
`aiohttp.web.Application` (a documented faust setting), so the check is an ordinary
aiohttp middleware and no faust internal is touched.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from app.settings import ServiceSettings

LIVENESS_PATH = "/livez"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_middleware(token: str) -> Any:
    """401 unless `Authorization: Bearer <token>`; /livez stays open for probes."""
    expected = token.encode()

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == LIVENESS_PATH:
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            return web.json_response(
                {"error": "unauthorized: send Authorization: Bearer <token>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="data-ingestion"'},
            )
        return await handler(request)

    return check_token


def web_application_options(cfg: ServiceSettings) -> dict[str, Any]:
    """faust's `web_application_options` for these settings (empty without a token)."""
    if cfg.web_token is None:
        return {}
    return {"middlewares": [bearer_middleware(cfg.web_token.get_secret_value())]}
