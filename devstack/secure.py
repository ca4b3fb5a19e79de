"""Throwaway TLS material and credentials for `python -m devstack.stack up --secure`.

openssl makes a CA and a server certificate for 127.0.0.1/localhost (2 days); Kafka gets a
SASL_SSL listener with SCRAM-SHA-512 users (created when its storage is formatted) and
nats-server gets TLS plus a user. The client settings land in `<run-dir>/secure/client.env`
(mode 0600), ready for `set -a; . client.env` or a test's worker environment.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KAFKA_USER = "ingest"
KAFKA_ADMIN = "admin"  # the broker's own inter-broker identity
NATS_USER = "ingest"
MECHANISM = "SCRAM-SHA-512"
CERT_DAYS = "2"


class SecureError(Exception):
    """Making the TLS material failed (message says which openssl step)."""


@dataclass(frozen=True)
class Material:
    """Paths and secrets of one secured stack (secrets are random per run dir)."""

    dir: Path
    kafka_password: str
    kafka_admin_password: str
    nats_password: str
    keystore_password: str

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @property
    def keystore(self) -> Path:
        return self.dir / "server.p12"

    @property
    def env_file(self) -> Path:
        return self.dir / "client.env"

    def scram_args(self) -> list[str]:
        """`kafka-storage format` arguments that create the SCRAM users."""
        return [
            f"--add-scram={MECHANISM}=[name={name},password={password}]"
            for name, password in (
                (KAFKA_USER, self.kafka_password),
                (KAFKA_ADMIN, self.kafka_admin_password),
            )
        ]

    def client_env(self, kafka_bootstrap: str, nats_url: str) -> dict[str, str]:
        """INGEST__... settings for a client of this stack (secrets included)."""
        return {
            "INGEST__KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "INGEST__KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "INGEST__KAFKA__SASL_MECHANISM": MECHANISM,
            "INGEST__KAFKA__SASL_USERNAME": KAFKA_USER,
            "INGEST__KAFKA__SASL_PASSWORD": self.kafka_password,
            "INGEST__KAFKA__SSL_CAFILE": str(self.ca),
            "INGEST__NATS__URL": nats_url.replace("nats://", "tls://", 1),
            "INGEST__NATS__USER": NATS_USER,
            "INGEST__NATS__PASSWORD": self.nats_password,
            "INGEST__NATS__TLS_CAFILE": str(self.ca),
        }

    def kafka_client_options(self) -> dict[str, Any]:
        """aiokafka keyword arguments for the stack's own readiness check."""
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": MECHANISM,
            "sasl_plain_username": KAFKA_USER,
            "sasl_plain_password": self.kafka_password,
            "ssl_context": ssl.create_default_context(cafile=str(self.ca)),
        }


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SecureError("'openssl' not found on PATH: apt-get install -y openssl")
    proc = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SecureError(f"openssl {args[0]} failed: {proc.stderr.strip()[-500:]}")


def material(directory: Path) -> Material:
    """The run dir's material, created on first use and reused after (storage keeps users)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    state = directory / "credentials.json"
    if state.is_file():
        return Material(dir=directory, **json.loads(state.read_text()))
    mat = Material(
        dir=directory,
        kafka_password=secrets.token_hex(16),
        kafka_admin_password=secrets.token_hex(16),
        nats_password=secrets.token_hex(16),
        keystore_password=secrets.token_hex(16),
    )
    d = directory
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", CERT_DAYS,
             "-subj", "/CN=devstack throwaway CA", "-keyout", "ca.key", "-out", "ca.crt",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=CA:FALSE\n"
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", CERT_DAYS, "-extfile", "server.ext",
             "-out", "server.crt", cwd=d)  # fmt: skip
    _openssl("pkcs12", "-export", "-in", "server.crt", "-inkey", "server.key",
             "-name", "server", "-out", "server.p12",
             "-passout", f"pass:{mat.keystore_password}", cwd=d)  # fmt: skip
    for name in ("ca.key", "server.key", "server.p12"):
        os.chmod(d / name, 0o600)
    fields = {k: v for k, v in mat.__dict__.items() if k != "dir"}
    state.write_text(json.dumps(fields, indent=2) + "\n")
    os.chmod(state, 0o600)
    return mat


def write_client_env(mat: Material, kafka_bootstrap: str, nats_url: str) -> Path:
    """`client.env` (0600) with the settings a worker or command needs for this stack."""
    lines = [f"{k}={v}" for k, v in mat.client_env(kafka_bootstrap, nats_url).items()]
    mat.env_file.write_text("\n".join(lines) + "\n")
    os.chmod(mat.env_file, 0o600)
    return mat.env_file


def kafka_properties(mat: Material, kafka_port: int, controller_port: int, data: Path) -> str:
    """server.properties of a single KRaft node with a SASL_SSL client/inter-broker listener.

    The controller listener stays PLAINTEXT on loopback (only the node itself uses it).
    """
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{KAFKA_ADMIN}" password="{mat.kafka_admin_password}";'
    )
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=SASL_SSL://127.0.0.1:{kafka_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=SASL_SSL://127.0.0.1:{kafka_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms={MECHANISM}
sasl.mechanism.inter.broker.protocol={MECHANISM}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}
ssl.keystore.type=PKCS12
ssl.keystore.location={mat.keystore}
ssl.keystore.password={mat.keystore_password}
ssl.key.password={mat.keystore_password}
ssl.truststore.type=PEM
ssl.truststore.location={mat.ca}
ssl.client.auth=none
ssl.endpoint.identification.algorithm=https
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""


def nats_config(mat: Material) -> str:
    """nats-server config: TLS with the throwaway certificate and one user."""
    return f"""\
tls {{
  cert_file: "{mat.server_cert}"
  key_file: "{mat.server_key}"
  ca_file: "{mat.ca}"
  timeout: 2
}}
authorization {{
  users = [
    {{ user: "{NATS_USER}", password: "{mat.nats_password}" }}
  ]
}}
"""
