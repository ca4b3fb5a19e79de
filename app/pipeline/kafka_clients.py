"""The one place that turns `settings.kafka` into Kafka client options.

The worker (faust), the commands (replay, tail, historical import/check), the topic
visibility check and the bench all build their aiokafka clients through here, so a
secured cluster (SASL/SCRAM over TLS, optionally mutual TLS) needs no per-command code.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust
from aiokafka.helpers import create_ssl_context

from app.settings import KafkaSettings


def ssl_context(cfg: KafkaSettings) -> ssl.SSLContext | None:
    """TLS context for SSL/SASL_SSL (CA file or the system store, optional client cert)."""
    if cfg.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    key_password = cfg.ssl_key_password.get_secret_value() if cfg.ssl_key_password else None
    context = create_ssl_context(
        cafile=str(cfg.ssl_cafile) if cfg.ssl_cafile else None,
        certfile=str(cfg.ssl_certfile) if cfg.ssl_certfile else None,
        keyfile=str(cfg.ssl_keyfile) if cfg.ssl_keyfile else None,
        password=key_password,
    )
    context.check_hostname = cfg.ssl_check_hostname
    return context


def client_options(cfg: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer/Consumer/AdminClient (besides bootstrap)."""
    options: dict[str, Any] = {"security_protocol": cfg.security_protocol}
    context = ssl_context(cfg)
    if context is not None:
        options["ssl_context"] = context
    if cfg.security_protocol.startswith("SASL_"):
        assert cfg.sasl_password is not None  # enforced by KafkaSettings
        options["sasl_mechanism"] = cfg.sasl_mechanism
        options["sasl_plain_username"] = cfg.sasl_username
        options["sasl_plain_password"] = cfg.sasl_password.get_secret_value()
    return options


def faust_credentials(cfg: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """faust's `broker_credentials`: SASLCredentials (SCRAM-SHA-512 etc.) or SSLCredentials.

    faust 0.15.3 maps these onto the same aiokafka options as `client_options`
    (faust/transport/drivers/aiokafka.py credentials_to_aiokafka_auth).
    """
    context = ssl_context(cfg)
    if cfg.security_protocol.startswith("SASL_"):
        assert cfg.sasl_password is not None
        # protocol follows the context: SASL_SSL with one, SASL_PLAINTEXT without
        return faust.SASLCredentials(
            username=cfg.sasl_username,
            password=cfg.sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=cfg.sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def kafka_options() -> dict[str, Any]:
    """`client_options` of the process-wide settings (for commands and helpers)."""
    from app.settings import get_settings

    return client_options(get_settings().kafka)
