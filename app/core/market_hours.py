"""When a market is open: per-asset-class session calendars from the config (no clock).

A calendar is a set of weekly sessions in a time zone ("Sun 17:00" to "Fri 17:00"
America/New_York for FX), minus daily breaks (metals: 17:00-18:00 New York) and holidays
(a date closed all day, or from / until a local time), or simply `always_open` (crypto).
Local wall times are turned into UTC by the zone's rules for that date, so New York 17:00
is 21:00 UTC in summer and 22:00 UTC in winter, and a London calendar moves on the EU dates.

Everything is computed as exact integer nanosecond intervals, so `open_ns_between` is
additive (open(a, b) + open(b, c) == open(a, c)) and a weekend between two ticks is not
counted as a gap. The caller passes every time: nothing here reads a clock.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from app.core.models import NS_PER_SECOND

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BUCKET_NS = 7 * 86400 * NS_PER_SECOND  # intervals are computed per fixed UTC week
_MEMO_SIZE = 64
_INT64_MAX = 2**63 - 1
_US = timedelta(microseconds=1)
_DAY_MIN = 24 * 60
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])$")


def _minutes(text: str, allow_24: bool = False) -> int:
    """ "HH:MM" -> minutes after local midnight; "24:00" only where a day's end is meant."""
    match = _CLOCK.match(text)
    if not match:
        raise ValueError(f"time of day must be HH:MM, got {text!r}")
    minutes = int(match.group(1)) * 60 + int(match.group(2))
    if minutes > _DAY_MIN or (minutes == _DAY_MIN and not allow_24):
        raise ValueError(f"time of day out of range: {text!r}")
    return minutes


def _weekly(text: str) -> int:
    """ "Sun 17:00" -> minutes after Monday 00:00 local."""
    day, _, clock = text.strip().partition(" ")
    if day.lower() not in _WEEKDAYS:
        raise ValueError(f"weekly time must be like 'Sun 17:00', got {text!r}")
    return _WEEKDAYS.index(day.lower()) * _DAY_MIN + _minutes(clock.strip())


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WeeklySession(_Section):
    """Open from `open` to the next `close` (weekday + local time); may wrap the week."""

    open: str
    close: str

    @field_validator("open", "close")
    @classmethod
    def _check(cls, value: str) -> str:
        _weekly(value)
        return value


class DailyBreak(_Section):
    """Closed every day from `start` to `end` local time (start before end)."""

    start: str
    end: str

    @model_validator(mode="after")
    def _check(self) -> DailyBreak:
        if _minutes(self.start) >= _minutes(self.end, allow_24=True):
            raise ValueError(f"break must start before it ends: {self.start}-{self.end}")
        return self


class Holiday(_Section):
    """Closed on `date` (local) from `closed_from` until `closed_until`: all day by default,
    an early close with closed_from only, a late opening with closed_until only."""

    date: date
    closed_from: str = "00:00"
    closed_until: str = "24:00"

    @model_validator(mode="after")
    def _check(self) -> Holiday:
        if _minutes(self.closed_from) >= _minutes(self.closed_until, allow_24=True):
            raise ValueError(f"holiday {self.date}: closed_from must be before closed_until")
        return self


class CalendarSettings(_Section):
    timezone: str = "UTC"
    always_open: bool = False
    sessions: list[WeeklySession] = []
    daily_breaks: list[DailyBreak] = []
    holidays: list[Holiday] = []

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _has_hours(self) -> CalendarSettings:
        if not self.always_open and not self.sessions:
            raise ValueError("a calendar needs sessions or always_open: true")
        return self


_NY = "America/New_York"
_FX_WEEK = [WeeklySession(open="Sun 17:00", close="Fri 17:00")]


class MarketHoursSettings(_Section):
    """`market_hours:` config section: calendars, and which asset class uses which."""

    calendars: dict[str, CalendarSettings] = {
        "fx": CalendarSettings(timezone=_NY, sessions=_FX_WEEK),
        "metal": CalendarSettings(
            timezone=_NY, sessions=_FX_WEEK, daily_breaks=[DailyBreak(start="17:00", end="18:00")]
        ),
        "crypto": CalendarSettings(always_open=True),
    }
    # instrument asset class (config `instruments.*.asset_class`) -> calendar name
    asset_classes: dict[str, str] = {
        "fx_major": "fx",
        "fx_cross": "fx",
        "fx_jpy": "fx",
        "metal": "metal",
        "crypto": "crypto",
    }

    @model_validator(mode="after")
    def _calendars_exist(self) -> MarketHoursSettings:
        missing = sorted({c for c in self.asset_classes.values() if c not in self.calendars})
        if missing:
            raise ValueError(f"asset_classes name unknown calendars: {missing}")
        return self


def _local_ns(zone: ZoneInfo, day: date, minutes: int) -> int:
    """Local wall time `day` + minutes (may pass midnight) in `zone` -> UTC epoch ns.

    A wall time that does not exist or exists twice (DST change) takes the zone's first
    reading (fold=0); sessions at 17:00/18:00 never meet one.
    """
    wall = datetime(day.year, day.month, day.day) + timedelta(minutes=minutes)
    return ((wall.replace(tzinfo=zone) - _EPOCH) // _US) * 1000


def _union(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if start >= end:
            continue
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _subtract(opens: list[tuple[int, int]], closed: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted disjoint `opens` minus sorted disjoint `closed`."""
    out: list[tuple[int, int]] = []
    j = 0
    for start, end in opens:
        while j < len(closed) and closed[j][1] <= start:
            j += 1
        k = j
        cur = start
        while k < len(closed) and closed[k][0] < end:
            if closed[k][0] > cur:
                out.append((cur, closed[k][0]))
            cur = max(cur, closed[k][1])
            k += 1
        if cur < end:
            out.append((cur, end))
    return out


class SessionCalendar:
    """One calendar compiled from its settings."""

    def __init__(self, settings: CalendarSettings) -> None:
        self.always_open = settings.always_open
        self.zone = ZoneInfo(settings.timezone)
        self._sessions = []
        for session in settings.sessions:
            open_min, close_min = _weekly(session.open), _weekly(session.close)
            if close_min <= open_min:
                close_min += 7 * _DAY_MIN
            self._sessions.append((open_min, close_min))
        self._breaks = [
            (_minutes(b.start), _minutes(b.end, allow_24=True)) for b in settings.daily_breaks
        ]
        self._memo: dict[int, list[tuple[int, int]]] = {}
        self._holidays = {
            h.date: (_minutes(h.closed_from), _minutes(h.closed_until, allow_24=True))
            for h in settings.holidays
        }

    def open_intervals(self, a_ns: int, b_ns: int) -> list[tuple[int, int]]:
        """The open parts of [a_ns, b_ns) as sorted disjoint [start, end) ns intervals."""
        if b_ns <= a_ns:
            return []
        if self.always_open:
            return [(a_ns, b_ns)]
        out = []
        for index in range(a_ns // _BUCKET_NS, (b_ns - 1) // _BUCKET_NS + 1):
            out += [
                (max(s, a_ns), min(e, b_ns))
                for s, e in self._bucket(index)
                if s < b_ns and e > a_ns
            ]
        return _union(out)

    def is_open(self, t_ns: int) -> bool:
        if self.always_open:
            return True
        intervals = self._bucket(t_ns // _BUCKET_NS)
        i = bisect_right(intervals, (t_ns, _INT64_MAX)) - 1
        return i >= 0 and t_ns < intervals[i][1]

    def _bucket(self, index: int) -> list[tuple[int, int]]:
        """Open intervals of one fixed 7-day UTC span, computed once (a pure memo, bounded)."""
        cached = self._memo.get(index)
        if cached is None:
            cached = self._compute(index * _BUCKET_NS, (index + 1) * _BUCKET_NS)
            if len(self._memo) >= _MEMO_SIZE:
                del self._memo[next(iter(self._memo))]
            self._memo[index] = cached
        return cached

    def _compute(self, a_ns: int, b_ns: int) -> list[tuple[int, int]]:
        # Local dates that can touch [a, b): a session counts from a Monday at most a week
        # before it opens and lasts under a week, so two weeks back covers every one.
        first = datetime.fromtimestamp(a_ns // NS_PER_SECOND, self.zone).date() - timedelta(14)
        last = datetime.fromtimestamp(-(-b_ns // NS_PER_SECOND), self.zone).date() + timedelta(1)
        days = [first + timedelta(n) for n in range((last - first).days + 1)]
        opens = []
        for day in days:
            if day.weekday() == 0:  # weekly minutes count from Monday 00:00 local
                opens += [
                    (_local_ns(self.zone, day, o), _local_ns(self.zone, day, c))
                    for o, c in self._sessions
                ]
        closed = []
        for day in days:
            closed += [
                (_local_ns(self.zone, day, s), _local_ns(self.zone, day, e))
                for s, e in self._breaks
            ]
            if day in self._holidays:
                s, e = self._holidays[day]
                closed.append((_local_ns(self.zone, day, s), _local_ns(self.zone, day, e)))
        result = _subtract(_union(opens), _union(closed))
        return [(max(s, a_ns), min(e, b_ns)) for s, e in result if s < b_ns and e > a_ns]


class MarketHours:
    """All calendars, looked up by instrument asset class (or by calendar name)."""

    def __init__(self, settings: MarketHoursSettings) -> None:
        self._calendars = {name: SessionCalendar(c) for name, c in settings.calendars.items()}
        self._by_class = dict(settings.asset_classes)

    def calendar(self, asset_class: str) -> SessionCalendar:
        name = self._by_class.get(asset_class, asset_class)
        try:
            return self._calendars[name]
        except KeyError:
            raise KeyError(f"no market-hours calendar for asset class {asset_class!r}") from None

    def is_open(self, asset_class: str, t_ns: int) -> bool:
        return self.calendar(asset_class).is_open(t_ns)

    def open_ns_between(self, asset_class: str, a_ns: int, b_ns: int) -> int:
        """Exact open time inside [a_ns, b_ns), in ns (0 when b <= a)."""
        return sum(e - s for s, e in self.calendar(asset_class).open_intervals(a_ns, b_ns))

    def open_seconds_between(self, asset_class: str, a_ns: int, b_ns: int) -> float:
        return self.open_ns_between(asset_class, a_ns, b_ns) / NS_PER_SECOND

    def market_gap_ns(self, asset_class: str, prev_tick_ns: int, next_tick_ns: int) -> int:
        """The part of the interval between two ticks when the market was open.

        For broker quality: use this instead of `next - prev`, so that a weekend, a daily
        break or a holiday between two ticks is neither a gap nor missing ticks nor downtime.
        """
        return self.open_ns_between(asset_class, prev_tick_ns, next_tick_ns)

    def next_open_ns(self, asset_class: str, t_ns: int, horizon_days: int = 14) -> int | None:
        """t_ns if open, else when the market next opens (None if not within the horizon)."""
        horizon = t_ns + horizon_days * 86400 * NS_PER_SECOND
        intervals = self.calendar(asset_class).open_intervals(t_ns, horizon)
        return intervals[0][0] if intervals else None
