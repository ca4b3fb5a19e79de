"""What a provider's response says, before it becomes a MarketContext message.

Pure values and the small readers every parser shares: a provider's JSON, numbers given
as strings, unix times. Each failure is a ParseError whose reason is the reject code.
"""

from __future__ import annotations

import calendar
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from app.core.errors import ParseError

NS_PER_S = 1_000_000_000
# The range an observation time must be in: 1900-01-01 .. 2200-01-01 UTC. Well inside
# int64 nanoseconds (1677..2262), so every accepted time can be encoded.
MIN_OBSERVATION_NS = -2_208_988_800 * NS_PER_S
MAX_OBSERVATION_NS = 7_258_118_400 * NS_PER_S


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

    def __post_init__(self) -> None:
        """An observation that could not be encoded or ordered is not an observation."""
        when = self.observation_time_ns
        if type(when) is not int or not MIN_OBSERVATION_NS <= when < MAX_OBSERVATION_NS:
            raise ParseError("bad_time", f"{self.series}: time {when!r} outside 1900..2200")
        if type(self.value) is not float or math.isinf(self.value):  # NaN = "no figure"
            raise ParseError("bad_value", f"{self.series}: value {self.value!r} is not finite")

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
        # orjson: NaN/Infinity, nesting over 1024 and numbers beyond a double are errors
        return orjson.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ParseError("malformed_json", f"{exc}: {_preview(body)}") from None


def total_parser(parse: Callable[[bytes, str], list[Observation]]) -> Callable:
    """Make a provider parser total: observations or ParseError, whatever the bytes.

    The parsers check the shapes they know; a shape nobody thought of (a list where an
    object was expected, a number too big for a date) still ends as a reject with a
    reason instead of an exception that stops a collector or the context agent.
    """

    @functools.wraps(parse)
    def wrapper(body: bytes, series: str) -> list[Observation]:
        try:
            return parse(body, series)
        except ParseError:
            raise
        except Exception as exc:
            raise ParseError("unreadable", f"{type(exc).__name__}: {exc}"[:300]) from None

    return wrapper


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
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond a double
        raise ParseError("bad_value", f"{where} is not a number: {raw!r:.80}") from None
    if not math.isfinite(value):
        raise ParseError("bad_value", f"{where} is not finite: {raw!r}")
    return value


def unix_to_ns(raw: Any, where: str) -> int:
    """Unix seconds (int or numeric string) to nanoseconds, inside 1970..2200."""
    if isinstance(raw, str) and len(raw) > 20:
        raise ParseError("bad_time", f"{where} is not a unix time: {raw!r:.40}")
    try:
        seconds = int(raw)
    except (TypeError, ValueError, OverflowError):  # int(Infinity) is an OverflowError
        raise ParseError("bad_time", f"{where} is not a unix time: {raw!r:.40}") from None
    if not 0 < seconds < MAX_OBSERVATION_NS // NS_PER_S:
        raise ParseError("bad_time", f"{where} is not a unix time: {raw!r:.40}")
    return seconds * NS_PER_S


def datetime_to_ns(moment: datetime) -> int:
    """An aware datetime to integer nanoseconds without float rounding."""
    try:
        seconds = calendar.timegm(moment.utctimetuple())
    except (OverflowError, ValueError):  # year 1 at +05:00 has no UTC date
        raise ParseError("bad_time", f"{moment!r} has no UTC time") from None
    return seconds * NS_PER_S + moment.microsecond * 1000


def _preview(body: bytes, limit: int = 120) -> str:
    return body[:limit].decode("utf-8", errors="replace").replace("\n", " ")
