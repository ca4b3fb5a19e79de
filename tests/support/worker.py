"""`faust -A app worker` as a real subprocess against the test stack."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Worker:
    """One worker process; `env` adds INGEST__... overrides on top of the test stack's."""

    def __init__(
        self,
        stack: Any,
        data_dir: Path,
        app_id: str,
        env: dict[str, str] | None = None,
        web_port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.web_port = web_port or free_port()
        self.log_path = data_dir / f"worker-{self.web_port}.log"
        self.env = {
            **os.environ,
            "INGEST__KAFKA__BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
            "INGEST__NATS__URL": stack.nats_url,
            "INGEST__SERVICE__APP_ID": app_id,
            "INGEST__SERVICE__DATA_DIR": str(data_dir),
            "INGEST__SERVICE__WEB_PORT": str(self.web_port),
            "INGEST__KAFKA__PARTITIONS": "4",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Worker:
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> Worker:
        """Start the process without waiting (several workers then start side by side)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "worker", "-l", "info"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float) -> None:
        """Ready = faust says so and /health answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.log_tail()}")
            if b"Ready" in self.log_path.read_bytes():
                try:
                    self.health()
                    return
                except OSError:
                    pass
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready in {timeout}s:\n{self.log_tail()}")

    def get_json(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.web_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())

    def get_text(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.web_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()

    def health(self) -> dict[str, Any]:
        return self.get_json("/health")

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (faust commits offsets and flushes tables on a clean stop)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int | None:
        """SIGKILL the whole process group: a crash, nothing flushed."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(10)

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
