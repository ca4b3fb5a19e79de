"""Typed service configuration: `config/*.yaml`, overridden by environment variables.

A broken file or value stops the process with a message naming the field, because a
market-data service that starts on silently-defaulted settings publishes wrong prices.
Secrets never live here: a broker or collector names the environment variable that
holds its token, and the token is read from the environment when it is used. Transport
secrets (Kafka SASL password, NATS password/token, web token) are `SecretStr` fields that
only an `INGEST__...` environment variable may set; a config file that holds one is refused.

Environment overrides are parsed strictly: a value that is valid JSON (number, true/false,
null, list, object) is taken as such, anything else is the literal string. YAML 1.1's
octal (`010` -> 8) and sexagesimal (`1:30` -> 90) readings cannot happen, and an invalid
value is reported under the environment variable's name. (pydantic-settings was not used:
its env source gives no such attribution and does not merge into the YAML layer per key.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from app.core.candles import CandleSettings
from app.core.market_hours import MarketHoursSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "config" / "service.yaml"
CONFIG_ENV = "INGEST_CONFIG"
OVERRIDE_PREFIX = "INGEST__"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file, field and problem."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored.

    inf/nan are refused by every numeric field: `max_spread_pips: .inf` used to load and
    then fail every group at run time.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ServiceSettings(Section):
    name: str = "data-ingestion"
    app_id: str = "data-ingestion"
    data_dir: Path = REPO_ROOT / ".run" / "worker"
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, gt=0, lt=65536)
    # Bearer token for every web path except /livez; only from INGEST__SERVICE__WEB_TOKEN.
    web_token: SecretStr | None = None
    store: str = "rocksdb://"
    log_level: Literal["debug", "info", "warn", "error"] = "info"


class KafkaSettings(Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = Field(8, gt=0)
    replication_factor: int = Field(1, gt=0)
    producer_acks: Literal[0, 1, -1] = -1
    producer_linger_ms: int = Field(0, ge=0)  # batches form anyway while a send is in flight
    # Per-partition producer batch: the 16 KB default holds about one batched output message,
    # which serialised every send behind the previous acks=all round trip.
    producer_max_batch_size: int = Field(524_288, gt=0, le=1_000_000)
    commit_interval_s: float = Field(1.0, gt=0)
    # Acknowledged groups' table writes are merged over this long: a key is written once
    # per interval instead of once per raw message (at most this much more to re-process
    # after a crash; outputs are never delayed by it).
    table_write_interval_ms: float = Field(50.0, gt=0, le=10_000)
    # Longest wait of a consumer fetch without data (faust's fixed 1500 ms stalled runs).
    fetch_max_wait_ms: int = Field(100, gt=0, le=1500)
    # How long a dead worker keeps its partitions before the group moves them on.
    session_timeout_s: float = Field(10.0, ge=6)
    heartbeat_interval_s: float = Field(3.0, gt=0)
    # Transport security (app/pipeline/kafka_clients.py turns these into client options).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None  # INGEST__KAFKA__SASL_PASSWORD only
    ssl_cafile: Path | None = None  # None: the system trust store
    ssl_certfile: Path | None = None  # client certificate (mutual TLS)
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None  # INGEST__KAFKA__SSL_KEY_PASSWORD only
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _security_is_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and "
                "sasl_password (INGEST__KAFKA__SASL_PASSWORD)"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together (mutual TLS)")
        return self


class RawWriterSettings(Section):
    """How sources batch raw records into Kafka messages (app/sources/raw_writer.py)."""

    # Wait this long at an idle partition before sending, so that the records of other
    # symbols of the partition arriving meanwhile share the message (0: send at once).
    linger_ms: float = Field(0.0, ge=0, le=1000)
    max_records: int = Field(500, gt=0)
    max_bytes: int = Field(524_288, gt=1024, le=1_000_000)
    max_buffered: int = Field(100_000, gt=0)


class NatsSettings(Section):
    url: str = "nats://127.0.0.1:4222"
    subject_prefix: str = "market"
    mode: Literal["jetstream", "core"] = "jetstream"
    stream_name: str = "MARKET"
    max_age_s: float = Field(86400.0, gt=0)
    max_bytes: int = Field(1_073_741_824, gt=0)
    duplicate_window_s: float = Field(120.0, gt=0)
    max_in_flight: int = Field(2000, gt=0)
    # A publish whose JetStream ack has not come back by then is sent again (same
    # Nats-Msg-Id, so the stream drops it if the first copy did arrive).
    ack_timeout_s: float = Field(5.0, gt=0)
    reconnect_wait_s: float = Field(1.0, gt=0)
    drain_timeout_s: float = Field(5.0, gt=0)
    # Authentication: one of user+password, token, NKey seed file or .creds file.
    user: str | None = None
    password: SecretStr | None = None  # INGEST__NATS__PASSWORD only
    token: SecretStr | None = None  # INGEST__NATS__TOKEN only
    nkeys_seed_file: Path | None = None
    creds_file: Path | None = None
    # TLS: on when the URL is tls:// or a CA/client cert is given.
    tls_cafile: Path | None = None
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    tls_hostname: str | None = None  # name checked in the server certificate, default URL host

    # JetStream key-value bucket with the latest best price per symbol and the latest best
    # candle per timeframe, each with its stream sequence (docs/last-value.md); "" = none.
    last_value_bucket: str = "market-last"

    @model_validator(mode="after")
    def _auth_is_consistent(self) -> NatsSettings:
        methods = [
            name
            for name, on in (
                ("user/password", self.user is not None or self.password is not None),
                ("token", self.token is not None),
                ("nkeys_seed_file", self.nkeys_seed_file is not None),
                ("creds_file", self.creds_file is not None),
            )
            if on
        ]
        if len(methods) > 1:
            raise ValueError(f"choose one NATS authentication, got {', '.join(methods)}")
        if (self.user is None) != (self.password is None):
            raise ValueError("user and password go together (INGEST__NATS__PASSWORD)")
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together (mutual TLS)")
        return self

    @field_validator("subject_prefix")
    @classmethod
    def _prefix_is_a_subject(cls, prefix: str) -> str:
        tokens = prefix.split(".")
        if any(not t or any(c in t for c in " \t\r\n*>") for t in tokens):
            raise ValueError(f"must be dot-separated NATS tokens without wildcards, got {prefix!r}")
        return prefix


class BrokerSettings(Section):
    """What every broker feed has. `kind` picks the kind's own settings model, which adds its
    fields (app.sources.brokers.registry): a new kind needs no change here."""

    kind: str = "oanda_v20"
    display_name: str = ""
    enabled: bool = True
    symbols: list[str] = Field(min_length=1)
    priority: int = Field(ge=1)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)

    @field_validator("symbols")
    @classmethod
    def _symbols_are_normalised(cls, symbols: list[str]) -> list[str]:
        bad = [s for s in symbols if not s.isalnum() or not s.isupper()]
        if bad:
            raise ValueError(f"symbols must be upper-case without separators, got {bad}")
        return symbols


def _broker_of_its_kind(data: Any) -> Any:
    """Validate a broker entry with the settings model its `kind` registered."""
    if not isinstance(data, Mapping):
        return data
    # Imported here: the registry imports the kinds' modules, which import this one.
    from app.sources.brokers.registry import KINDS

    kind = data.get("kind", "oanda_v20")
    if kind not in KINDS:
        raise ValueError(f"unknown broker kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    return KINDS[kind].settings.model_validate(dict(data))


class InstrumentSettings(Section):
    """An instrument's facts; the one place they live (sources, rules and tools read them)."""

    asset_class: str
    pip: Decimal = Field(gt=0)
    decimals: int = Field(ge=0, le=9)  # digits a broker quotes
    dukascopy_scale: int | None = Field(None, gt=0)  # Dukascopy points per 1.0 of price


class ValidationLimits(Section):
    """Thresholds of the tick rules; every field optional so that layers can override."""

    max_spread_pips: float | None = Field(None, gt=0)
    max_move_pct: float | None = Field(None, gt=0)
    min_interval_ms: float | None = Field(None, ge=0)
    max_stale_ms: float | None = Field(None, gt=0)
    max_future_ms: float | None = Field(None, ge=0)


class ValidationSettings(Section):
    defaults: ValidationLimits = ValidationLimits(
        max_spread_pips=5,
        max_move_pct=2.0,
        min_interval_ms=0,
        max_stale_ms=5000,
        max_future_ms=2000,
    )
    asset_classes: dict[str, ValidationLimits] = {}
    symbols: dict[str, ValidationLimits] = {}


class BestPriceSettings(Section):
    max_age_ms: float = Field(3000.0, gt=0)


class QualityWeights(Section):
    """Weights of the composite broker score; only their ratios matter."""

    latency: float = Field(0.25, ge=0)
    spread: float = Field(0.25, ge=0)
    uptime: float = Field(0.2, ge=0)
    completeness: float = Field(0.2, ge=0)
    rejects: float = Field(0.1, ge=0)


class QualitySettings(Section):
    """Broker quality: how latency and gaps are measured and how the score is weighted.

    A gap is an interval between two accepted ticks longer than gap_factor times the
    expected interval (OANDA conflates to 250 ms); the ticks "missing" in a gap count
    against completeness. latency_ref_ms / spread_ref_pips are the values that score 0.5.
    """

    latency_ewma_alpha: float = Field(0.05, gt=0, le=1)
    expected_interval_ms: float = Field(250.0, gt=0)
    gap_factor: float = Field(4.0, ge=1)
    latency_ref_ms: float = Field(100.0, gt=0)
    spread_ref_pips: float = Field(1.0, gt=0)
    weights: QualityWeights = QualityWeights()


class CollectorSettings(Section):
    """One external-data collector; provider-specific knobs go under `params`."""

    enabled: bool = True
    base_url: str
    interval_s: float = Field(gt=0)
    timeout_s: float = Field(10.0, gt=0)
    api_key_env: str | None = None
    params: dict[str, Any] = {}
    # After a failed poll: initial * 2**(failures-1), capped; Retry-After wins when longer.
    backoff_initial_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)


class HubSettings(Section):
    """Central Hub service registry; off unless `url` is set."""

    url: str | None = None
    advertise_host: str = "data-ingestion"
    advertise_port: int | None = Field(None, gt=0, lt=65536)  # default: service.web_port
    protocol: str = "nats+kafka"
    reregister_interval_s: float = Field(30.0, gt=0)
    timeout_s: float = Field(5.0, gt=0)


class HistoricalSettings(Section):
    """Dukascopy import and reference checks; relative dirs default under service.data_dir."""

    base_url: str = "https://datafeed.dukascopy.com/datafeed"
    source_dir: Path | None = None
    cache_dir: Path | None = None
    checkpoint_dir: Path | None = None
    results_dir: Path | None = None
    concurrency: int = Field(4, gt=0)
    retries: int = Field(3, ge=0)
    backoff_s: float = Field(0.5, ge=0)
    timeout_s: float = Field(30.0, gt=0)
    batch_ticks: int = Field(1000, gt=0, le=5000)
    reference_max_age_ms: float = Field(60_000.0, gt=0)


class Settings(Section):
    service: ServiceSettings = ServiceSettings()
    kafka: KafkaSettings = KafkaSettings()
    nats: NatsSettings = NatsSettings()
    raw_writer: RawWriterSettings = RawWriterSettings()
    brokers: dict[str, Annotated[BrokerSettings, BeforeValidator(_broker_of_its_kind)]] = {}
    instruments: dict[str, InstrumentSettings] = {}
    validation: ValidationSettings = ValidationSettings()
    best_price: BestPriceSettings = BestPriceSettings()
    quality: QualitySettings = QualitySettings()
    collectors: dict[str, CollectorSettings] = {}
    hub: HubSettings = HubSettings()
    historical: HistoricalSettings = HistoricalSettings()
    candles: CandleSettings = CandleSettings()
    market_hours: MarketHoursSettings = MarketHoursSettings()


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def parse_env_value(raw: str) -> Any:
    """A JSON value when `raw` is one (NaN/Infinity excluded), else the string itself."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return raw


def _is_secret(model: type[BaseModel], path: list[str]) -> bool:
    """True when `path` leads to a SecretStr field of `model` (through nested sections)."""
    for i, part in enumerate(path):
        info = model.model_fields.get(part)
        if info is None:
            return False
        ann = info.annotation
        args = getattr(ann, "__args__", ())
        if ann is SecretStr or SecretStr in args:
            return i == len(path) - 1
        nested = next(
            (a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if nested is None:
            return False
        model = nested
    return False


def apply_env_overrides(
    data: dict[str, Any],
    environ: Mapping[str, str],
    origins: dict[tuple[str, ...], str] | None = None,
) -> dict[str, Any]:
    """Apply `INGEST__SECTION__KEY=value` variables (strict JSON-or-string values).

    `origins` records which config path each variable set, so errors can name the variable.
    Secret fields take the raw string: a password `123` stays the text "123".
    """
    for name, raw in sorted(environ.items()):
        if not name.startswith(OVERRIDE_PREFIX):
            continue
        path = name[len(OVERRIDE_PREFIX) :].lower().split("__")
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {'.'.join(path)} does not name a config section")
            node = child
        node[path[-1]] = raw if _is_secret(Settings, path) else parse_env_value(raw)
        if origins is not None:
            origins[tuple(path)] = name
    return data


def _secrets_in_file(data: Any, model: type[BaseModel], prefix: list[str]) -> list[str]:
    """Paths of SecretStr fields set in the file (secrets come from the environment only)."""
    found: list[str] = []
    if not isinstance(data, dict):
        return found
    for key, value in data.items():
        path = [*prefix, str(key)]
        if _is_secret(model, path):
            found.append(".".join(path))
        elif isinstance(value, dict):
            found.extend(_secrets_in_file(value, model, path))
    return found


def _describe(
    exc: ValidationError, origin: str, origins: dict[tuple[str, ...], str] | None = None
) -> str:
    """One line per error, under the environment variable that set the value if one did."""
    origins = origins or {}
    lines = []
    from_file = False
    for err in exc.errors(include_input=False):
        loc = tuple(str(p) for p in err["loc"])
        field = ".".join(loc) or "(top level)"
        var = next((v for p, v in origins.items() if loc[: len(p)] == p), None)
        from_file = from_file or var is None
        lines.append(f"  {var} ({field}): {err['msg']}" if var else f"  {field}: {err['msg']}")
    head = f"invalid configuration in {origin}:" if from_file else "invalid environment override:"
    lines.insert(0, head)
    return "\n".join(lines)


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read, override and validate the configuration; raise ConfigError naming the problem."""
    environ = os.environ if environ is None else environ
    config_path = Path(path or environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    try:
        text = config_path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {config_path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{config_path}: top level must be a mapping, got {type(data).__name__}")
    secrets = _secrets_in_file(data, Settings, [])
    if secrets:
        names = ", ".join(
            f"{p} (set {OVERRIDE_PREFIX}{p.replace('.', '__').upper()})" for p in secrets
        )
        raise ConfigError(f"{config_path}: secrets come from the environment only: {names}")
    origins: dict[tuple[str, ...], str] = {}
    data = apply_env_overrides(data, environ, origins)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(config_path), origins)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded once from INGEST_CONFIG or config/service.yaml."""
    return load_settings()
