"""The one place that turns `settings.kafka` into Kafka client options.

The worker (faust), the commands (replay, tail, historical import/check), the topic
visibility check and the bench all build their aiokafka clients through here, so a
secured cluster (SASL/SCRAM over TLS, optionally mutual TLS) needs no per-command code.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import faust
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, SaslAuthenticationFailed
from aiokafka.helpers import create_ssl_context

from app.settings import KafkaSettings

EXIT_KAFKA_UNREACHABLE = 1
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


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


async def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    """Partition ids of a topic ([] if it does not exist).

    Asked of the admin client: a consumer without a subscription has no metadata for
    the topic (aiokafka 0.14 `consumer.topics()` does not fill `partitions_for_topic`).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options())
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"]:
        return []
    return sorted(p["partition"] for p in described["partitions"])


async def diagnose(cfg: KafkaSettings, timeout_s: float = 10.0) -> str:
    """One line saying why the first bootstrap server refuses a connection.

    aiokafka's bootstrap only raises "Unable to bootstrap" and logs the cause; one direct
    connection with the same options gets the cause itself (never a secret: the password
    is not part of any message built here).
    """
    server = cfg.bootstrap_servers.split(",")[0].strip()
    host, _, port = server.rpartition(":")
    where = f"Kafka at {server} ({cfg.security_protocol})"
    options = client_options(cfg)
    try:
        conn = await asyncio.wait_for(
            create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **options),
            timeout_s,
        )
    except SaslAuthenticationFailed:
        return (
            f"{where}: authentication failed ({cfg.sasl_mechanism} as {cfg.sasl_username!r}): "
            "check INGEST__KAFKA__SASL_USERNAME and INGEST__KAFKA__SASL_PASSWORD"
        )
    except ssl.SSLCertVerificationError as exc:
        return (
            f"{where}: server certificate not trusted ({exc.verify_message}): "
            "check INGEST__KAFKA__SSL_CAFILE"
        )
    except ssl.SSLError as exc:
        return f"{where}: TLS handshake failed ({exc.reason or exc}): check security_protocol"
    except TimeoutError:
        return f"{where}: no answer within {timeout_s:.0f}s (wrong port or protocol?)"
    except (OSError, KafkaError) as exc:
        return f"{where}: cannot connect ({type(exc).__name__}: {exc})"
    conn.close()
    return f"{where}: connection and authentication work; the request failed later"


def exits_on_kafka_failure(fun: F) -> F:
    """For the commands: a Kafka connection failure is one clear stderr line and exit 1."""

    @functools.wraps(fun)
    async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await fun(self, *args, **kwargs)
        except (KafkaConnectionError, ssl.SSLError) as exc:
            from app.settings import get_settings

            reason = await diagnose(get_settings().kafka)
            sys.stderr.write(f"data-ingestion: {reason}\n")
            raise SystemExit(EXIT_KAFKA_UNREACHABLE) from exc

    return run  # type: ignore[return-value]
