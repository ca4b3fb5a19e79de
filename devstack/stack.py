"""Run a real single-node Kafka (KRaft) broker and a real nats-server with JetStream on loopback.

No Docker: the Kafka jars come from Maven Central via ``deploy/kafka/pom.xml`` and nats-server
comes from the Debian package. Processes run in their own session so they outlive this CLI;
their pids live in the run dir, which is how ``down``/``status`` find them later.

Usage: ``python -m devstack.stack up|down|status|start|stop [kafka|nats] [options]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack import secure as secure_mod

log = logging.getLogger("devstack.stack")

REPO_ROOT = Path(__file__).resolve().parents[1]
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
COMPONENTS = ("kafka", "nats")
NATS_SERVER = "nats-server"
STOP_GRACE_S = 30.0
LOG_TAIL_LINES = 30

EXIT_FAILED = 1
EXIT_PRECONDITION = 2
EXIT_NOT_RUNNING = 3

LOG4J2_YAML = """\
Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      target: SYSTEM_OUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
"""


class StackError(Exception):
    """A stack operation failed; ``exit_code`` is what the CLI exits with."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class StackConfig:
    """Where the stack lives and which loopback ports it uses."""

    run_dir: Path = field(default_factory=lambda: REPO_ROOT / ".run" / "stack")
    kafka_port: int = 9092
    controller_port: int | None = None  # None: kafka_port + 1
    nats_port: int = 4222
    nats_monitor_port: int = 8222
    timeout: float = 90.0
    libs_dir: Path = field(default_factory=lambda: REPO_ROOT / ".cache" / "kafka-libs")
    # SASL_SSL Kafka (SCRAM-SHA-512) and TLS + user NATS; see devstack/secure.py
    secure: bool = False

    def __post_init__(self) -> None:
        # Absolute paths: they are matched against /proc/<pid>/cmdline to recognise our processes.
        self.run_dir = Path(self.run_dir).resolve()
        self.libs_dir = Path(self.libs_dir).resolve()
        if self.controller_port is None:
            self.controller_port = self.kafka_port + 1

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "stack.json"

    @property
    def secure_dir(self) -> Path:
        return self.run_dir / "secure"

    def material(self) -> secure_mod.Material:
        """The secured stack's certificates and credentials (made on first use)."""
        return secure_mod.material(self.secure_dir)

    def client_env(self) -> dict[str, str]:
        """INGEST__... settings a client of this stack needs (secrets included when secure)."""
        if not self.secure:
            return {
                "INGEST__KAFKA__BOOTSTRAP_SERVERS": self.kafka_bootstrap,
                "INGEST__NATS__URL": self.nats_url,
            }
        return self.material().client_env(self.kafka_bootstrap, self.nats_url)

    def ports(self, component: str) -> dict[str, int]:
        """Ports a component listens on, by name (used for checks and status)."""
        if component == "kafka":
            assert self.controller_port is not None
            return {"kafka_port": self.kafka_port, "controller_port": self.controller_port}
        return {"nats_port": self.nats_port, "nats_monitor_port": self.nats_monitor_port}

    def component_dir(self, component: str) -> Path:
        return self.run_dir / component

    def pid_file(self, component: str) -> Path:
        return self.component_dir(component) / f"{component}.pid"

    def log_file(self, component: str) -> Path:
        return self.component_dir(component) / f"{component}.log"

    @classmethod
    def resolve(
        cls,
        run_dir: str | Path | None = None,
        kafka_port: int | None = None,
        controller_port: int | None = None,
        nats_port: int | None = None,
        nats_monitor_port: int | None = None,
        timeout: float = 90.0,
        secure: bool | None = None,
    ) -> StackConfig:
        """Merge explicit values > STACK_* env vars > the run dir's stack.json > defaults.

        stack.json lets ``down``/``status`` given only ``--run-dir`` report the ports ``up`` used.
        """
        run_dir = Path(run_dir or os.environ.get("STACK_RUN_DIR") or REPO_ROOT / ".run" / "stack")
        saved: dict[str, int] = {}
        state_file = run_dir / "stack.json"
        if state_file.is_file():
            with contextlib.suppress(ValueError, OSError):
                saved = {k: int(v) for k, v in json.loads(state_file.read_text()).items()}

        def pick(explicit: int | None, env: str) -> int | None:
            if explicit is not None:
                return explicit
            return int(os.environ[env]) if os.environ.get(env) else None

        kafka = pick(kafka_port, "STACK_KAFKA_PORT")
        controller = pick(controller_port, "STACK_CONTROLLER_PORT")
        if controller is None and kafka is None:  # a new kafka port implies kafka+1
            controller = saved.get("controller_port")
        nats = pick(nats_port, "STACK_NATS_PORT")
        monitor = pick(nats_monitor_port, "STACK_NATS_MONITOR_PORT")
        return cls(
            run_dir=run_dir,
            kafka_port=kafka if kafka is not None else saved.get("kafka_port", 9092),
            controller_port=controller,
            nats_port=nats if nats is not None else saved.get("nats_port", 4222),
            nats_monitor_port=monitor
            if monitor is not None
            else saved.get("nats_monitor_port", 8222),
            timeout=timeout,
            secure=bool(saved.get("secure", 0)) if secure is None else secure,
        )


# --------------------------------------------------------------------------- processes


def _alive(pid: int) -> bool:
    """True unless the pid is gone or a zombie (a zombie still answers kill(pid, 0))."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    """argv of a live process.

    Right after exec (seen with nats-server) /proc/<pid>/cmdline is briefly empty, so an empty
    answer from a live process is retried instead of being taken as "not ours".
    """
    for _ in range(50):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return []
        if raw or not _alive(pid):
            return [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        time.sleep(0.01)
    return []


def _is_ours(cfg: StackConfig, component: str, pid: int) -> bool:
    """True if pid is this run dir's component, so a recycled pid is never signalled."""
    argv = _cmdline(pid)
    if not argv:
        return False
    if component == "kafka":
        props = str(cfg.component_dir("kafka") / "server.properties")
        return "kafka.Kafka" in argv and props in argv
    store = str(cfg.component_dir("nats") / "store")
    return Path(argv[0]).name == NATS_SERVER and store in argv


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie (API use from tests)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _running_pid(cfg: StackConfig, component: str) -> int | None:
    try:
        pid = int(cfg.pid_file(component).read_text().strip())
    except (OSError, ValueError):
        return None
    _reap(pid)
    return pid if _is_ours(cfg, component, pid) else None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the component's process group: it was started as a session leader, so pgid == pid."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(cfg: StackConfig, component: str, pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not _is_ours(cfg, component, pid):
            return True
        time.sleep(0.1)
    return False


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _port_free(port: int) -> bool:
    """Bind like a server would (SO_REUSEADDR): fails only if someone else holds the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _check_ports(cfg: StackConfig, components: list[str]) -> None:
    """Refuse to start when a port is held by something else: better than a half-started stack."""
    for component in components:
        for name, port in cfg.ports(component).items():
            if not _port_free(port):
                raise StackError(
                    f"port {port} ({component} {name}) is already in use by another process; "
                    f"free it or choose another port (--{name.replace('_', '-')})",
                    EXIT_PRECONDITION,
                )


def _require_binary(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"'{name}' not found on PATH: {hint}", EXIT_PRECONDITION)
    return path


def _nats_binary() -> str:
    path = shutil.which(NATS_SERVER) or (
        "/usr/sbin/nats-server" if os.access("/usr/sbin/nats-server", os.X_OK) else None
    )
    if path is None:
        raise StackError(
            "nats-server not found: run `apt-get install -y nats-server`", EXIT_PRECONDITION
        )
    return path


# --------------------------------------------------------------------------- kafka


def resolve_kafka_libs(cfg: StackConfig) -> Path:
    """Copy the Kafka jars into the cache dir unless it already matches the current pom.xml.

    A file lock plus copy-then-rename keeps concurrent callers (dev stack and tests) from
    seeing a half-filled directory.
    """
    pom_sha = hashlib.sha256(POM.read_bytes()).hexdigest()
    marker = cfg.libs_dir / ".pom.sha256"

    def fresh() -> bool:
        return marker.is_file() and marker.read_text().strip() == pom_sha

    if fresh():
        return cfg.libs_dir
    mvn = _require_binary("mvn", "install Maven (apt-get install -y maven)")
    cfg.libs_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(cfg.libs_dir.parent / f".{cfg.libs_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if fresh():
            return cfg.libs_dir
        tmp = cfg.libs_dir.with_name(f"{cfg.libs_dir.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("resolving Kafka jars with Maven into %s", cfg.libs_dir)
        started = time.monotonic()
        proc = subprocess.run(
            [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
             f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0 or not any(tmp.glob("kafka_*.jar")):
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-LOG_TAIL_LINES:])
            raise StackError(
                f"mvn failed to resolve the Kafka jars (rc={proc.returncode}):\n{tail}"
            )
        (tmp / ".pom.sha256").write_text(pom_sha + "\n")
        shutil.rmtree(cfg.libs_dir, ignore_errors=True)
        tmp.rename(cfg.libs_dir)
        log.info("Kafka jars resolved in %.1fs", time.monotonic() - started)
    return cfg.libs_dir


def _kafka_properties(cfg: StackConfig) -> str:
    data = cfg.component_dir("kafka") / "data"
    if cfg.secure:
        assert cfg.controller_port is not None
        return secure_mod.kafka_properties(
            cfg.material(), cfg.kafka_port, cfg.controller_port, data
        )
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{cfg.controller_port}
listeners=PLAINTEXT://127.0.0.1:{cfg.kafka_port},CONTROLLER://127.0.0.1:{cfg.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{cfg.kafka_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""


def _kafka_command(cfg: StackConfig, libs: Path) -> list[str]:
    java = _require_binary("java", "install a JDK 17+ (apt-get install -y openjdk-17-jre-headless)")
    kdir = cfg.component_dir("kafka")
    kdir.mkdir(parents=True, exist_ok=True)
    (kdir / "log4j2.yaml").write_text(LOG4J2_YAML)
    props = kdir / "server.properties"
    props.write_text(_kafka_properties(cfg))
    classpath = f"{libs}/*"
    scram = cfg.material().scram_args() if cfg.secure else []
    formatted = (kdir / "data" / "meta.properties").exists()
    if formatted and cfg.secure != (kdir / "data" / ".secure").exists():
        raise StackError(
            f"{kdir / 'data'} was formatted {'without' if cfg.secure else 'with'} --secure; "
            "run `down --purge` first",
            EXIT_PRECONDITION,
        )
    if not formatted:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        proc = subprocess.run(
            [java, "-cp", classpath, "kafka.tools.StorageTool", "format",
             # `=` form: a base64url id may start with '-' and parse as an option otherwise
             f"--cluster-id={cluster_id}", "-c", str(props), *scram],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise StackError(f"kafka storage format failed:\n{proc.stdout}{proc.stderr}")
        if cfg.secure:
            (kdir / "data" / ".secure").write_text("SCRAM users created at format time\n")
        log.info("kafka: formatted storage, cluster id %s", cluster_id)
    return [
        java, "-Xms256m", "-Xmx512m", f"-Dlog4j2.configurationFile={kdir / 'log4j2.yaml'}",
        "-cp", classpath, "kafka.Kafka", str(props),
    ]  # fmt: skip


async def _kafka_answers(bootstrap: str, options: dict[str, Any] | None = None) -> bool:
    """A real metadata round trip: the broker is registered and serves metadata."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=3000, **(options or {})
    )
    try:
        await asyncio.wait_for(admin.start(), 5)
        cluster = await asyncio.wait_for(admin.describe_cluster(), 5)
        await asyncio.wait_for(admin.list_topics(), 5)
        return bool(cluster.get("brokers"))
    except Exception:  # any failure just means "not ready yet"
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _kafka_ready(cfg: StackConfig) -> bool:
    if not _tcp_open(cfg.kafka_port):
        return False
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)  # connection errors while booting are expected
    try:
        # A worker thread gets its own event loop, so up() also works when called from async code.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            options = cfg.material().kafka_client_options() if cfg.secure else None
            answers = _kafka_answers(cfg.kafka_bootstrap, options)
            return pool.submit(asyncio.run, answers).result()
    finally:
        aiokafka_log.setLevel(level)


# --------------------------------------------------------------------------- nats


def _nats_command(cfg: StackConfig) -> list[str]:
    ndir = cfg.component_dir("nats")
    (ndir / "store").mkdir(parents=True, exist_ok=True)
    config: list[str] = []
    if cfg.secure:
        conf = ndir / "nats.conf"
        conf.write_text(secure_mod.nats_config(cfg.material()))
        os.chmod(conf, 0o600)
        config = ["-c", str(conf)]
    return [
        _nats_binary(), *config, "-a", "127.0.0.1", "-p", str(cfg.nats_port), "-js",
        "-sd", str(ndir / "store"), "-m", str(cfg.nats_monitor_port),
    ]  # fmt: skip


def _nats_ready(cfg: StackConfig) -> bool:
    if not _tcp_open(cfg.nats_port):
        return False
    url = f"http://127.0.0.1:{cfg.nats_monitor_port}/healthz?js-enabled-only=true"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200 and json.load(resp).get("status") == "ok"
    except (OSError, ValueError, urllib.error.URLError):
        return False


_READY = {"kafka": _kafka_ready, "nats": _nats_ready}


# --------------------------------------------------------------------------- lifecycle


def _save_state(cfg: StackConfig) -> None:
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    ports = {**cfg.ports("kafka"), **cfg.ports("nats"), "secure": int(cfg.secure)}
    tmp = cfg.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(ports, indent=2) + "\n")
    tmp.replace(cfg.state_file)


def _check_saved_ports(cfg: StackConfig, component: str) -> None:
    """A running component keeps its ports; asking for others would silently be ignored."""
    try:
        saved = json.loads(cfg.state_file.read_text())
    except (OSError, ValueError):
        return
    for name, port in cfg.ports(component).items():
        if name in saved and saved[name] != port:
            raise StackError(
                f"{component} is already running with {name}={saved[name]} (asked for {port}); "
                "run `down` first to change ports",
                EXIT_PRECONDITION,
            )


def _spawn(cfg: StackConfig, component: str, argv: list[str]) -> int:
    logfile = cfg.log_file(component)
    with open(logfile, "ab") as out:
        out.write(f"\n=== stack: starting {component} at {time.ctime()} ===\n".encode())
        out.flush()
        # Own session: survives the CLI, ignores the parent's Ctrl-C, killable as a group.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cfg.component_dir(component),
            start_new_session=True,
        )
    cfg.pid_file(component).write_text(f"{proc.pid}\n")
    log.info("%s: started pid %d", component, proc.pid)
    return proc.pid


def _wait_ready(cfg: StackConfig, pending: dict[str, int]) -> None:
    """Poll each component until it answers, dies, or the timeout passes."""
    deadline = time.monotonic() + cfg.timeout
    started = time.monotonic()
    pending = dict(pending)
    while pending:
        for component, pid in list(pending.items()):
            _reap(pid)
            if not _is_ours(cfg, component, pid):
                cfg.pid_file(component).unlink(missing_ok=True)
                raise StackError(
                    f"{component} exited during start; last lines of "
                    f"{cfg.log_file(component)}:\n{_log_tail(cfg.log_file(component))}"
                )
            if _READY[component](cfg):
                log.info("%s: ready after %.1fs", component, time.monotonic() - started)
                del pending[component]
        if pending and time.monotonic() > deadline:
            component = next(iter(pending))
            raise StackError(
                f"{component} did not become ready within {cfg.timeout:.0f}s; last lines of "
                f"{cfg.log_file(component)}:\n{_log_tail(cfg.log_file(component))}"
            )
        if pending:
            time.sleep(0.2)


def _start(cfg: StackConfig, components: list[str]) -> dict[str, str]:
    """Start the components that are not running and wait for all of them to answer."""
    result: dict[str, str] = {}
    to_start: list[str] = []
    for component in components:
        if _running_pid(cfg, component) is not None:
            _check_saved_ports(cfg, component)
            result[component] = "already running"
        else:
            to_start.append(component)
    if not to_start:
        return result

    # Every precondition first, so a failure leaves nothing half started.
    if "nats" in to_start:
        _nats_binary()
    if "kafka" in to_start:
        _require_binary("java", "install a JDK 17+ (apt-get install -y openjdk-17-jre-headless)")
    _check_ports(cfg, to_start)
    libs = resolve_kafka_libs(cfg) if "kafka" in to_start else None
    for component in to_start:
        cfg.component_dir(component).mkdir(parents=True, exist_ok=True)
    if cfg.secure:
        try:
            material = cfg.material()
        except secure_mod.SecureError as exc:
            raise StackError(str(exc), EXIT_PRECONDITION) from None
        secure_mod.write_client_env(material, cfg.kafka_bootstrap, cfg.nats_url)
    _save_state(cfg)

    spawned: dict[str, int] = {}
    try:
        for component in to_start:
            argv = (
                _kafka_command(cfg, libs) if libs and component == "kafka" else _nats_command(cfg)
            )
            spawned[component] = _spawn(cfg, component, argv)
        _wait_ready(cfg, spawned)
    except BaseException:
        for component in spawned:
            _stop_one(cfg, component)
        raise
    result.update(dict.fromkeys(to_start, "started"))
    return result


def _stop_one(cfg: StackConfig, component: str) -> str:
    pid = _running_pid(cfg, component)
    if pid is None:
        cfg.pid_file(component).unlink(missing_ok=True)
        return "not running"
    log.info("%s: stopping pid %d", component, pid)
    _signal_group(pid, signal.SIGTERM)
    if not _wait_gone(cfg, component, pid, STOP_GRACE_S):
        log.warning("%s: pid %d ignored SIGTERM for %.0fs, killing", component, pid, STOP_GRACE_S)
        _signal_group(pid, signal.SIGKILL)
        _wait_gone(cfg, component, pid, 5)
    # Stragglers in the group (none expected) must not outlive the component.
    _signal_group(pid, signal.SIGKILL)
    cfg.pid_file(component).unlink(missing_ok=True)
    return "stopped"


def _component(component: str) -> str:
    if component not in COMPONENTS:
        raise StackError(f"unknown component {component!r}: use kafka or nats", EXIT_PRECONDITION)
    return component


def up(cfg: StackConfig) -> dict[str, str]:
    """Start Kafka and NATS (idempotent), wait until both answer; returns action per component."""
    return _start(cfg, list(COMPONENTS))


def start(cfg: StackConfig, component: str) -> str:
    """Start one component, reusing its existing data."""
    return _start(cfg, [_component(component)])[component]


def stop(cfg: StackConfig, component: str) -> str:
    """Stop one component, keeping its data for a later ``start``."""
    return _stop_one(cfg, _component(component))


def down(cfg: StackConfig, purge: bool = False) -> dict[str, str]:
    """Stop everything; with purge also delete the data (only paths this module creates)."""
    result = {component: _stop_one(cfg, component) for component in COMPONENTS}
    if purge:
        for component in COMPONENTS:
            shutil.rmtree(cfg.component_dir(component), ignore_errors=True)
        shutil.rmtree(cfg.secure_dir, ignore_errors=True)  # throwaway keys and passwords
        cfg.state_file.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            cfg.run_dir.rmdir()
        log.info("purged %s", cfg.run_dir)
    return result


def status(cfg: StackConfig) -> dict[str, dict[str, Any]]:
    """Per component: running flag, pid and ports."""
    out: dict[str, dict[str, Any]] = {}
    for component in COMPONENTS:
        pid = _running_pid(cfg, component)
        out[component] = {"running": pid is not None, "pid": pid, **cfg.ports(component)}
    return out


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m devstack.stack",
        description="Local single-node Kafka (KRaft) + NATS JetStream on 127.0.0.1, no Docker.",
    )
    p.add_argument("command", choices=["up", "down", "status", "start", "stop"])
    p.add_argument("component", nargs="?", choices=COMPONENTS, help="for start/stop")
    p.add_argument("--run-dir", help="state/data dir (env STACK_RUN_DIR, default .run/stack)")
    p.add_argument("--kafka-port", type=int, help="env STACK_KAFKA_PORT, default 9092")
    p.add_argument("--controller-port", type=int, help="env STACK_CONTROLLER_PORT, default kafka+1")
    p.add_argument("--nats-port", type=int, help="env STACK_NATS_PORT, default 4222")
    p.add_argument(
        "--nats-monitor-port", type=int, help="env STACK_NATS_MONITOR_PORT, default 8222"
    )
    p.add_argument("--timeout", type=float, default=90.0, help="readiness timeout in s (90)")
    p.add_argument(
        "--secure",
        action="store_true",
        help="up: SASL_SSL Kafka (SCRAM-SHA-512) and TLS+user NATS with a throwaway CA",
    )
    p.add_argument("--purge", action="store_true", help="down: also delete the data")
    p.add_argument("--json", action="store_true", help="status: print JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _print_status(st: dict[str, dict[str, Any]]) -> None:
    for component, info in st.items():
        state = "running" if info["running"] else "stopped"
        ports = " ".join(f"{k.removesuffix('_port') or 'port'}={v}" for k, v in info.items()
                         if k.endswith("_port"))  # fmt: skip
        print(f"{component:6} {state:8} pid={info['pid'] or '-'} {ports}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="stack: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
    if args.command in ("start", "stop") and args.component is None:
        print(f"stack: {args.command} needs a component: kafka or nats", file=sys.stderr)
        return EXIT_PRECONDITION
    if args.command not in ("start", "stop") and args.component is not None:
        print(f"stack: {args.command} takes no component", file=sys.stderr)
        return EXIT_PRECONDITION
    cfg = StackConfig.resolve(
        run_dir=args.run_dir,
        kafka_port=args.kafka_port,
        controller_port=args.controller_port,
        nats_port=args.nats_port,
        nats_monitor_port=args.nats_monitor_port,
        timeout=args.timeout,
        secure=True if args.secure else None,
    )
    try:
        if args.command == "status":
            st = status(cfg)
            if args.json:
                print(json.dumps(st, indent=2))
            else:
                _print_status(st)
            return 0 if all(info["running"] for info in st.values()) else EXIT_NOT_RUNNING
        started = time.monotonic()
        if args.command == "up":
            result = up(cfg)
        elif args.command == "down":
            result = down(cfg, purge=args.purge)
        elif args.command == "start":
            result = {args.component: start(cfg, args.component)}
        else:
            result = {args.component: stop(cfg, args.component)}
    except StackError as exc:
        print(f"stack: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("stack: interrupted", file=sys.stderr)
        return 130
    for component, action in result.items():
        where = cfg.kafka_bootstrap if component == "kafka" else cfg.nats_url
        print(f"{component}: {action} ({where})")
    if args.command == "up":
        print(f"up in {time.monotonic() - started:.1f}s")
        if cfg.secure:
            env_file = cfg.material().env_file
            print(f"secured: client settings (with secrets, mode 0600) in {env_file}")
            print(f"  use: set -a; . {env_file}; set +a")
    return 0


if __name__ == "__main__":
    sys.exit(main())
