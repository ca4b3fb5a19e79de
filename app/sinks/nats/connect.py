"""nats-py connect options from `settings.nats`: authentication and TLS in one place."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

from app.settings import NatsSettings


def tls_context(cfg: NatsSettings) -> ssl.SSLContext | None:
    """A verifying TLS context when the URL is tls:// or a CA / client cert is configured."""
    wants_tls = any(urlsplit(u.strip()).scheme == "tls" for u in cfg.url.split(",")) or any(
        p is not None for p in (cfg.tls_cafile, cfg.tls_certfile)
    )
    if not wants_tls:
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(cfg.tls_cafile) if cfg.tls_cafile else None
    )
    if cfg.tls_certfile is not None:
        context.load_cert_chain(str(cfg.tls_certfile), str(cfg.tls_keyfile))
    return context


def connect_options(cfg: NatsSettings) -> dict[str, Any]:
    """Keyword arguments for `nats.connect` besides the URL and callbacks."""
    options: dict[str, Any] = {}
    if cfg.user is not None and cfg.password is not None:
        options["user"] = cfg.user
        options["password"] = cfg.password.get_secret_value()
    if cfg.token is not None:
        options["token"] = cfg.token.get_secret_value()
    if cfg.nkeys_seed_file is not None:
        options["nkeys_seed"] = str(cfg.nkeys_seed_file)
    if cfg.creds_file is not None:
        options["user_credentials"] = str(cfg.creds_file)
    context = tls_context(cfg)
    if context is not None:
        options["tls"] = context
        if cfg.tls_hostname:
            options["tls_hostname"] = cfg.tls_hostname
    return options


def secret_values(cfg: NatsSettings) -> list[str]:
    """The secret strings of these settings, to scrub from error texts."""
    secrets = [s.get_secret_value() for s in (cfg.password, cfg.token) if s is not None]
    userinfo = [urlsplit(u.strip()).password for u in cfg.url.split(",")]
    return secrets + [p for p in userinfo if p]
