"""What a provider's response says, before it becomes a MarketContext message.

Pure values and the small readers every parser shares: a provider's JSON, numbers given
as strings, unix times. Each failure is a ParseError whose reason is the reject code.
"""

from __future__ import annotations

import calendar
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.core.errors import ParseError

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Observation:
    """One value of one series at one time, as a provider published it."""

    provider: str
    series: str
    value: float
    unit: str
    observation_time_ns: int
    category: str
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Kafka key of the context stream and of the last-emitted table: provider:series."""
        return f"{self.provider}:{self.series}"

    def fingerprint(self) -> str:
        """What must change for the observation to be emitted again (NaN compares equal)."""
        attrs = "|".join(f"{k}={v}" for k, v in sorted(self.attributes.items()))
        return f"{self.value!r}@{self.observation_time_ns}#{attrs}"


def load_json(body: bytes) -> Any:
    """Decode a JSON body; an HTML page (proxy, captcha, error page) gets its own reason."""
    stripped = body.lstrip()
    if stripped[:1] == b"<":
        raise ParseError("html_page", f"expected JSON, got markup: {_preview(body)}")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError("malformed_json", f"{exc}: {_preview(body)}") from None


def require(obj: Any, name: str, where: str) -> Any:
    """`obj[name]` of a JSON object, or ParseError missing_field naming where it was sought."""
    if not isinstance(obj, dict):
        raise ParseError("missing_field", f"{where} is not an object (looking for {name!r})")
    if name not in obj or obj[name] is None:
        raise ParseError("missing_field", f"{where}.{name} is missing")
    return obj[name]


def to_float(raw: Any, where: str) -> float:
    """A finite number from a JSON number or numeric string (providers send both)."""
    if isinstance(raw, bool):
        raise ParseError("bad_value", f"{where} is a boolean")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ParseError("bad_value", f"{where} is not a number: {raw!r}") from None
    if not math.isfinite(value):
        raise ParseError("bad_value", f"{where} is not finite: {raw!r}")
    return value


def unix_to_ns(raw: Any, where: str) -> int:
    """Unix seconds (int or numeric string) to nanoseconds."""
    try:
        seconds = int(raw)
    except (TypeError, ValueError):
        raise ParseError("bad_time", f"{where} is not a unix time: {raw!r}") from None
    if seconds <= 0:
        raise ParseError("bad_time", f"{where} is not a unix time: {raw!r}")
    return seconds * NS_PER_S


def datetime_to_ns(moment: datetime) -> int:
    """An aware datetime to integer nanoseconds without float rounding."""
    return calendar.timegm(moment.utctimetuple()) * NS_PER_S + moment.microsecond * 1000


def _preview(body: bytes, limit: int = 120) -> str:
    return body[:limit].decode("utf-8", errors="replace").replace("\n", " ")
