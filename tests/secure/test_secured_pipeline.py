"""The pipeline on the secured stack: TLS + SCRAM Kafka, TLS + user NATS, web token.

raw -> worker -> market-data-stream -> NATS end to end; wrong credentials and an untrusted
certificate each give one clear line (commands: exit 1; worker: exit or degraded /health);
known secret values never show up in logs, /health, /metrics, rejects or command output.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.wire import codec
from devstack.stack import StackConfig
from tests.secure.conftest import REPO, kafka_options, nats_options
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

MS = 1_000_000
T0 = 1_796_029_200_000_000_000
RAW = "raw.broker.ticks"
WEB_TOKEN = "web-token-" + uuid.uuid4().hex


class SecureWorker(Worker):
    """A worker whose web port wants the bearer token (when it has one)."""

    token: str | None = None

    def _request(self, path: str, token: str | None) -> urllib.request.Request:
        req = urllib.request.Request(f"http://127.0.0.1:{self.web_port}{path}")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        return req

    def get_text(self, path: str, token: str | None = "default") -> str:
        token = self.token if token == "default" else token
        with urllib.request.urlopen(self._request(path, token), timeout=5) as resp:
            return resp.read().decode()

    def get_json(self, path: str) -> Any:
        return json.loads(self.get_text(path))


def tick(source: str, bid: str, ask: str, at_ms: int) -> codec.RawRecord:
    event = T0 + at_ms * MS
    t = codec.MarketTick(
        symbol="EURUSD",
        source=source,
        bid_e9=round(float(bid) * 1e9),
        ask_e9=round(float(ask) * 1e9),
        bid_volume=1e6,
        ask_volume=1e6,
        event_time_ns=event,
        receive_time_ns=event + 5 * MS,
    )
    return codec.RawRecord(source=source, format="tick", receive_time_ns=event + 5 * MS, tick=t)


def worker_env(stack: StackConfig, tag: str, **extra: str) -> dict[str, str]:
    return {
        **stack.client_env(),
        "INGEST__NATS__SUBJECT_PREFIX": f"s{tag}",
        "INGEST__NATS__STREAM_NAME": f"S{tag.upper()}",
        "INGEST__NATS__RECONNECT_WAIT_S": "0.5",
        **extra,
    }


async def fresh_raw_topic(stack: StackConfig) -> None:
    """Empty Kafka (topics of earlier tests deleted), then the raw topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap, **kafka_options(stack))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if not t.startswith("__")]
        if names:
            await admin.delete_topics(names)
        deadline = time.monotonic() + 30
        while set(names) & set(await admin.list_topics()) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await admin.create_topics([NewTopic(RAW, 4, 1)])
    finally:
        await admin.close()


async def produce_raw(stack: StackConfig, batches: list[bytes]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap, acks="all", **kafka_options(stack)
    )
    await producer.start()
    try:
        for value in batches:
            await producer.send_and_wait(RAW, value=value, key=b"EURUSD")
    finally:
        await producer.stop()


async def read_all(stack: StackConfig, topic: str, timeout: float = 20.0) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **kafka_options(stack),
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            got = [m.value for msgs in batch.values() for m in msgs]
            values.extend(got)
            if values and not got:
                break
    finally:
        await consumer.stop()
    return values


def run_command(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def leaks(text: str | bytes, secrets: list[str]) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [s for s in secrets if s.encode() in data]


def wait_health(worker: SecureWorker, check: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        health = worker.health()
        if check(health):
            return health
        time.sleep(0.5)
    raise AssertionError(f"health never matched: {json.dumps(health)[:2000]}")


async def test_pipeline_end_to_end_with_tls_and_auth_and_no_secret_anywhere(
    secure_stack: StackConfig, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    mat = secure_stack.material()
    secrets = [mat.kafka_password, mat.nats_password, WEB_TOKEN]
    await fresh_raw_topic(secure_stack)
    nc = await nats.connect(secure_stack.nats_url, **nats_options(secure_stack))
    received: list[tuple[str, bytes]] = []

    async def on_msg(msg: Any) -> None:
        received.append((msg.subject, msg.data))

    await nc.subscribe(f"s{tag}.>", cb=on_msg)
    env = worker_env(secure_stack, tag, INGEST__SERVICE__WEB_TOKEN=WEB_TOKEN)
    worker = SecureWorker(secure_stack, tmp_path / "w", f"sec-{tag}", env=env)
    worker.token = WEB_TOKEN
    try:
        await asyncio.to_thread(worker.start, 180.0)
        await produce_raw(
            secure_stack,
            [
                codec.encode_raw_batch(
                    [
                        tick("ic_markets", "1.10000", "1.10010", 0),
                        tick("rogue", "1.10004", "1.10005", 10),  # unknown_source
                        tick("pepperstone", "1.10005", "1.10010", 300),
                    ]
                )
            ],
        )

        # raw -> worker -> market-data-stream -> NATS, both over TLS with authentication
        def best_sources() -> list[str]:
            return [t.source for _, data in received for t in codec.decode_market_data(data).ticks]

        deadline = time.monotonic() + 60
        while len(best_sources()) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert {s for s, _ in received} == {f"s{tag}.data-ingestion.ticks"}
        assert best_sources() == ["ic_markets", "pepperstone"]  # never "rogue"
        rejects = await read_all(secure_stack, "market-data-rejects")
        reasons = [codec.decode_rejection(v).reasons for v in rejects]
        assert [list(r) for r in reasons] == [["unknown_source"]]

        health = wait_health(worker, lambda h: h["nats_bridge"]["state"] == "connected")
        assert health["nats_bridge"]["url"] == f"tls://127.0.0.1:{secure_stack.nats_port}"
        health_text = worker.get_text("/health")
        metrics = worker.get_text("/metrics")
        # the web token guards everything but /livez
        with pytest.raises(urllib.error.HTTPError) as denied:
            worker.get_text("/health", token=None)
        assert denied.value.code == 401
        with pytest.raises(urllib.error.HTTPError):
            worker.get_text("/metrics", token="wrong")
        assert json.loads(worker.get_text("/livez", token=None)) == {"status": "alive"}

        tail = run_command(
            ["tail", "market-data-rejects", "--from-beginning", "--timeout", "3"], env
        )
        assert tail.returncode == 0, tail.stderr[-2000:]
        assert "unknown_source" in tail.stdout
    finally:
        worker.stop()
        await nc.close()
    replay = run_command(
        ["replay", "--to-earliest", "--yes"], {**env, "INGEST__SERVICE__APP_ID": f"sec-{tag}"}
    )
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert "replay ready" in replay.stdout

    log_text = worker.log_path.read_bytes()
    assert b"Ready" in log_text
    places = {
        "worker log": log_text,
        "/health": health_text,
        "/metrics": metrics,
        "rejects": b"".join(rejects),
        "tail output": tail.stdout + tail.stderr,
        "replay output": replay.stdout + replay.stderr,
    }
    found = {where: leaks(text, secrets) for where, text in places.items()}
    assert found == {where: [] for where in places}


async def test_wrong_nats_password_degrades_health_with_the_reason_and_no_secret(
    secure_stack: StackConfig, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    wrong = "wrong-nats-" + uuid.uuid4().hex
    env = worker_env(secure_stack, tag)
    # credentials in the URL: nats-py accepts them; they must never be shown
    env.pop("INGEST__NATS__USER")
    env.pop("INGEST__NATS__PASSWORD")
    env["INGEST__NATS__URL"] = f"tls://ingest:{wrong}@127.0.0.1:{secure_stack.nats_port}"
    worker = SecureWorker(secure_stack, tmp_path / "w", f"sec-{tag}", env=env)
    try:
        await asyncio.to_thread(worker.start, 180.0)
        health = await asyncio.to_thread(
            wait_health,
            worker,
            lambda h: h["status"] == "degraded" and "nats_bridge" in str(h.get("problems")),
        )
        problems = json.dumps(health.get("problems"))
        assert "authorization violation" in problems.lower(), problems
        assert health["nats_bridge"]["url"] == f"tls://127.0.0.1:{secure_stack.nats_port}"
        health_text = worker.get_text("/health")
        metrics = worker.get_text("/metrics")
    finally:
        worker.stop()
    log_text = worker.log_path.read_bytes()
    assert b"nats:" in log_text
    assert leaks(log_text, [wrong]) == []
    assert leaks(health_text, [wrong]) == []
    assert leaks(metrics, [wrong]) == []


def test_wrong_kafka_password_is_one_clear_line_and_exit_1(secure_stack: StackConfig) -> None:
    wrong = "wrong-kafka-" + uuid.uuid4().hex
    env = {**secure_stack.client_env(), "INGEST__KAFKA__SASL_PASSWORD": wrong}
    proc = run_command(["tail", "market-data-stream", "--timeout", "2"], env)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("data-ingestion:")]
    assert lines == [
        f"data-ingestion: Kafka at {secure_stack.kafka_bootstrap} (SASL_SSL): authentication "
        "failed (SCRAM-SHA-512 as 'ingest'): check INGEST__KAFKA__SASL_USERNAME and "
        "INGEST__KAFKA__SASL_PASSWORD"
    ]
    assert leaks(proc.stdout + proc.stderr, [wrong]) == []


def test_wrong_kafka_password_stops_the_worker_with_the_reason(
    secure_stack: StackConfig, tmp_path: Path
) -> None:
    wrong = "wrong-kafka-" + uuid.uuid4().hex
    env = {**worker_env(secure_stack, "x"), "INGEST__KAFKA__SASL_PASSWORD": wrong}
    worker = SecureWorker(secure_stack, tmp_path / "w", f"sec-{uuid.uuid4().hex[:8]}", env=env)
    with pytest.raises(RuntimeError, match="worker exited 1"):
        worker.start(120.0)
    log_text = worker.log_path.read_text()
    reasons = [ln for ln in log_text.splitlines() if "SaslAuthenticationFailed" in ln]
    assert len(reasons) == 1 and "invalid credentials" in reasons[0]
    assert wrong not in log_text


def _other_ca(tmp_path: Path) -> Path:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=not the stack's CA", "-keyout", str(tmp_path / "other.key"),
         "-out", str(tmp_path / "other.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    return tmp_path / "other.crt"


def test_untrusted_kafka_certificate_is_one_clear_line_and_exit_1(
    secure_stack: StackConfig, tmp_path: Path
) -> None:
    env = {**secure_stack.client_env(), "INGEST__KAFKA__SSL_CAFILE": str(_other_ca(tmp_path))}
    proc = run_command(["tail", "market-data-stream", "--timeout", "2"], env)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("data-ingestion:")]
    assert len(lines) == 1
    assert "server certificate not trusted" in lines[0] and "SSL_CAFILE" in lines[0]


async def test_untrusted_nats_certificate_degrades_health_with_the_reason(
    secure_stack: StackConfig, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    env = worker_env(secure_stack, tag, INGEST__NATS__TLS_CAFILE=str(_other_ca(tmp_path)))
    worker = SecureWorker(secure_stack, tmp_path / "w", f"sec-{tag}", env=env)
    try:
        await asyncio.to_thread(worker.start, 180.0)
        health = await asyncio.to_thread(
            wait_health, worker, lambda h: "nats_bridge" in str(h.get("problems"))
        )
    finally:
        worker.stop()
    assert health["status"] == "degraded"
    assert "CERTIFICATE_VERIFY_FAILED" in json.dumps(health["problems"])
