"""The secured profile: a second stack (SASL_SSL/SCRAM Kafka, TLS+user NATS) of its own.

Ports and run dir derive from TEST_PORT_BASE with offsets no other fixture uses, so the
normal suite's stack (tests/conftest.py) and this one can run side by side. Only tests
under tests/secure/ start it.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import StackConfig, down, up
from tests.conftest import PORT_BASE

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def secure_stack() -> Iterator[StackConfig]:
    cfg = StackConfig(
        run_dir=REPO / ".run" / f"test-secure-stack-{PORT_BASE}",
        kafka_port=PORT_BASE + 392,
        controller_port=PORT_BASE + 393,
        nats_port=PORT_BASE + 322,
        nats_monitor_port=PORT_BASE + 422,
        timeout=180.0,
        secure=True,
    )
    up(cfg)
    yield cfg
    if os.environ.get("KEEP_TEST_STACK") != "1":
        down(cfg, purge=True)


def kafka_options(stack: StackConfig, password: str | None = None) -> dict[str, Any]:
    """aiokafka options for the test's own clients (optionally with another password)."""
    options = stack.material().kafka_client_options()
    if password is not None:
        options["sasl_plain_password"] = password
    return options


def nats_options(stack: StackConfig) -> dict[str, Any]:
    mat = stack.material()
    return {
        "user": "ingest",
        "password": mat.nats_password,
        "tls": ssl.create_default_context(cafile=str(mat.ca)),
    }
