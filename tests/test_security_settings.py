"""Security settings, strict overrides, client options, redaction and the web token."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.core.redact import redact_url, scrub
from app.ops.web_auth import bearer_middleware
from app.pipeline.kafka_clients import client_options, faust_credentials
from app.settings import DEFAULT_CONFIG, ConfigError, load_settings
from app.sinks.nats.connect import connect_options

SASL = {
    "INGEST__KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
    "INGEST__KAFKA__SASL_USERNAME": "ingest",
    "INGEST__KAFKA__SASL_PASSWORD": "0123",  # digits: must stay the text "0123"
}


def test_env_values_are_json_or_text_not_yaml_1_1() -> None:
    # YAML 1.1 read these as 8 (octal) and 90 (sexagesimal)
    assert (
        load_settings(DEFAULT_CONFIG, {"INGEST__KAFKA__PARTITIONS": "010"}).kafka.partitions == 10
    )
    with pytest.raises(ConfigError) as info:
        load_settings(DEFAULT_CONFIG, {"INGEST__KAFKA__PARTITIONS": "1:30"})
    message = str(info.value)
    assert message.startswith("invalid environment override:")
    assert (
        "INGEST__KAFKA__PARTITIONS (kafka.partitions): Input should be a valid integer" in message
    )
    assert "service.yaml" not in message


@pytest.mark.parametrize("value", [".inf", "inf", "NaN", "Infinity", "-Infinity", "nan"])
def test_env_inf_and_nan_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="INGEST__BEST_PRICE__MAX_AGE_MS"):
        load_settings(DEFAULT_CONFIG, {"INGEST__BEST_PRICE__MAX_AGE_MS": value})


@pytest.mark.parametrize(
    "text",
    [
        "validation:\n  defaults:\n    max_spread_pips: .inf\n",
        "quality:\n  weights:\n    latency: .nan\n",
        "instruments:\n  EURUSD:\n    asset_class: fx\n    pip: .inf\n",
    ],
)
def test_file_inf_and_nan_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="finite number"):
        load_settings(path, environ={})


def test_secrets_come_from_the_environment_only(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  sasl_password: hunter2\nnats:\n  token: t0k\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    message = str(info.value)
    assert "INGEST__KAFKA__SASL_PASSWORD" in message and "INGEST__NATS__TOKEN" in message
    assert "hunter2" not in message and "t0k" not in message


def test_env_secret_is_a_secretstr_kept_verbatim() -> None:
    cfg = load_settings(DEFAULT_CONFIG, SASL).kafka
    assert cfg.sasl_password is not None and cfg.sasl_password.get_secret_value() == "0123"
    assert "0123" not in repr(cfg) and "0123" not in str(cfg.model_dump())


def test_incomplete_security_is_refused_without_showing_the_secret() -> None:
    env = {**SASL, "INGEST__KAFKA__SASL_USERNAME": "null", "INGEST__KAFKA__SASL_PASSWORD": "s3cr3t"}
    with pytest.raises(ConfigError) as info:
        load_settings(DEFAULT_CONFIG, env)
    assert "needs sasl_username and sasl_password" in str(info.value)
    assert "s3cr3t" not in str(info.value)
    both = {"INGEST__NATS__TOKEN": "t", "INGEST__NATS__CREDS_FILE": "/x.creds"}
    with pytest.raises(ConfigError, match="choose one NATS authentication"):
        load_settings(DEFAULT_CONFIG, both)


def test_kafka_client_options_and_faust_credentials(tmp_path: Path) -> None:
    cfg = load_settings(DEFAULT_CONFIG, {**SASL, "INGEST__KAFKA__SASL_MECHANISM": "SCRAM-SHA-512"})
    options = client_options(cfg.kafka)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("ingest", "0123")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    creds = faust_credentials(cfg.kafka)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.protocol.value, creds.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert "0123" not in repr(creds)
    plain = load_settings(DEFAULT_CONFIG, {})
    assert client_options(plain.kafka) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(plain.kafka) is None


def test_nats_connect_options() -> None:
    env = {
        "INGEST__NATS__URL": "tls://nats.example:4222",
        "INGEST__NATS__USER": "ingest",
        "INGEST__NATS__PASSWORD": "pw",
    }
    options = connect_options(load_settings(DEFAULT_CONFIG, env).nats)
    assert (options["user"], options["password"]) == ("ingest", "pw")
    assert isinstance(options["tls"], ssl.SSLContext)
    creds = {"INGEST__NATS__CREDS_FILE": "/etc/nats/ingest.creds"}
    options = connect_options(load_settings(DEFAULT_CONFIG, creds).nats)
    assert options == {"user_credentials": "/etc/nats/ingest.creds"}


def test_redact_url() -> None:
    assert redact_url("nats://user:pass@host:4222") == "nats://host:4222"
    assert redact_url("tls://tok@h:1,nats://a:b@h2:2") == "tls://h:1,nats://h2:2"
    assert redact_url("http://hub:8080/x?y=1") == "http://hub:8080/x?y=1"
    assert redact_url(None) is None
    assert scrub("boom pass here", ["pass", None, ""]) == "boom *** here"


async def test_bearer_token_guards_all_but_livez() -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    web_app = web.Application(middlewares=[bearer_middleware("tok")])
    web_app.router.add_get("/health", ok)
    web_app.router.add_get("/livez", ok)
    async with TestClient(TestServer(web_app)) as client:
        assert (await client.get("/health")).status == 401
        assert (await client.get("/health", headers={"Authorization": "Bearer nope"})).status == 401
        assert (await client.get("/health", headers={"Authorization": "Bearer tok"})).status == 200
        assert (await client.get("/livez")).status == 200


def test_web_port_binds_loopback_by_default() -> None:
    assert load_settings(DEFAULT_CONFIG, {}).service.web_host == "127.0.0.1"
