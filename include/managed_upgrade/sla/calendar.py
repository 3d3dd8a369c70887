"""Business-day arithmetic in a customer's calendar, because every SLA budget is counted in business days.

Two clocks share one interface (:class:`BusinessClock`), so the SLA clock, the plan and the reminders
work unchanged in a real run and in a rehearsal:

* :class:`BusinessCalendar` -- the customer's real calendar: IANA time zone, weekend days, public
  holidays from the ``holidays`` library (country and optional subdivision) plus extra dates.
* :class:`RehearsalClock` -- time compression: one business day is N seconds of real time, no weekends.

Semantics of :class:`BusinessCalendar` (the contract the tests check):

* A *business day* is a whole local calendar day, 00:00 to 24:00 in the customer's zone, that is
  neither a weekend day nor a holiday. Time on other days does not count at all.
* Within a business day, business time is proportional to elapsed real time: a fraction ``f`` of a
  business day is ``f`` times that day's real length. On ordinary days that is 24 h, so 0.5 business
  days is 12 h. On a DST change day (23 h or 25 h long, when it is a business day) the day still counts
  as exactly one business day, so its hours are scaled (on a 23 h day 0.5 business days is 11.5 h).
  Results therefore keep their local wall-clock time across DST changes: Friday 17:00 + 1 business
  day is Monday 17:00 whether or not the clocks changed over the weekend. Only a start or result
  lying on a change day that is itself a business day shows the scaling (with a Fri+Sat weekend,
  Thursday 17:00 + 1 lands on the 23 h Sunday at 17/24 of its length, 17:17:30 local).
* ``add_business_days(start, n)`` for ``n > 0`` returns the *earliest* instant at which ``n`` business
  days have elapsed since ``start``. A start on a non-business day counts from the next business
  day's 00:00. When the budget runs out exactly at the end of a business day the result is that
  day's 24:00, i.e. 00:00 of the following calendar day -- even if that day is a weekend day or a
  holiday (Friday 00:00 + 1 = Saturday 00:00, meaning "by the end of Friday"). That boundary is the
  only place a result can sit on a non-business day; results are never strictly inside one.
* ``n < 0`` goes back in time: the *latest* instant at or before ``start`` from which ``|n|`` business
  days lead to ``start``; such results always lie on business time (at worst 00:00 of a business day).
  ``n == 0`` (or less than half a microsecond of business time) returns ``start`` unchanged.
* ``business_days_between(a, b)`` is the business time from ``a`` to ``b``; it is negative when
  ``b < a`` (``between(a, b) == -between(b, a)``). It inverts ``add_business_days``:
  ``business_days_between(t, add_business_days(t, n)) == n``.
* Precision: business time is computed in whole "business microseconds" (a business day is
  86 400 000 000 of them), so results are exact on ordinary days; on DST change days scaling rounds
  to the microsecond (round trips hold within a few microseconds).
* Returned datetimes are in UTC, from both clocks. Python compares and subtracts datetimes that share
  a tzinfo by wall clock, ignoring DST (and ``==`` across zones is False in a repeated hour), so
  local-zone results would be a trap for SLA arithmetic. Convert with ``.astimezone(clock.timezone)``
  to show them; arguments may be in any zone.

Cost: ``add_business_days`` and ``business_days_between`` jump whole weeks arithmetically and count
holidays per year by bisection, so a span costs O(years spanned), not O(days).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "WEEKDAY_NAMES",
    "BusinessCalendar",
    "BusinessClock",
    "CalendarError",
    "RehearsalClock",
    "calendar_for",
    "zone_named",
]

#: Weekday names accepted in configs, in ``date.weekday()`` order (Monday is 0).
WEEKDAY_NAMES: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_UNITS_PER_DAY = 86_400_000_000  # business microseconds in one business day
_ONE_DAY = timedelta(days=1)
_ONE_MICROSECOND = timedelta(microseconds=1)


class CalendarError(ValueError):
    """A calendar setting or an argument is invalid; the message names the value and what to do."""


@runtime_checkable
class BusinessClock(Protocol):
    """What the SLA clock, the plan and the reminders need from a calendar, real or compressed."""

    @property
    def timezone(self) -> ZoneInfo:
        """The customer's zone: local dates are read in it; convert results to it for display."""
        ...

    def add_business_days(self, start: datetime, n: float) -> datetime:
        """Instant ``n`` business days after ``start`` (before it when ``n < 0``)."""
        ...

    def business_days_between(self, a: datetime, b: datetime) -> float:
        """Business days from ``a`` to ``b``; negative when ``b`` is before ``a``."""
        ...

    def is_business_day(self, day: date) -> bool:
        """Whether the local calendar day ``day`` counts as business time."""
        ...

    def next_business_start(self, moment: datetime) -> datetime:
        """``moment`` itself if it lies on business time, else the start of the next business day."""
        ...


def _require_aware(value: datetime, argument: str) -> datetime:
    if not isinstance(value, datetime):
        raise CalendarError(f"{argument}={value!r} is not a datetime; pass a timezone-aware datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise CalendarError(
            f"{argument}={value.isoformat()} is a naive datetime (no time zone); pass a timezone-aware "
            "datetime, e.g. datetime(..., tzinfo=ZoneInfo('Europe/Berlin')) or one in UTC"
        )
    return value


def _require_plain_date(value: date, argument: str) -> date:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise CalendarError(
            f"{argument}={value!r} is not a date; pass a datetime.date (for an instant use "
            "moment.astimezone(clock.timezone).date())"
        )
    return value


def _require_finite(n: float, argument: str) -> float:
    if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n):
        raise CalendarError(f"{argument}={n!r} is not a finite number of business days")
    return n


def _zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise CalendarError(f"time zone {name!r} is not an IANA time zone name such as 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CalendarError(
            f"unknown time zone {name!r}; use an IANA time zone name such as 'Europe/Berlin' or "
            "'America/New_York'"
        ) from exc


def zone_named(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or a :class:`CalendarError` saying what to write instead."""
    return _zone(name)


def _weekend_days(weekend: Iterable[str]) -> frozenset[int]:
    if isinstance(weekend, str):
        raise CalendarError(f"weekend={weekend!r} must be a list of day names such as ['sat', 'sun']")
    days: set[int] = set()
    for name in weekend:
        key = name.strip().lower() if isinstance(name, str) else name
        if key not in WEEKDAY_NAMES:
            raise CalendarError(f"unknown weekend day {name!r}; use one of {', '.join(WEEKDAY_NAMES)}")
        days.add(WEEKDAY_NAMES.index(key))
    if len(days) == len(WEEKDAY_NAMES):
        raise CalendarError(
            "weekend lists all seven days; at least one day of the week must be a working day"
        )
    return frozenset(days)


def _holiday_source(country: str | None, subdivision: str | None) -> tuple[str | None, str | None]:
    """Canonical (country, subdivision) spelling, checked against what the holidays library supports."""
    if country is None:
        if subdivision is not None:
            raise CalendarError(
                f"holiday subdivision {subdivision!r} is given without a holiday country; set the country too"
            )
        return None, None
    import holidays as holidays_lib  # late: costs ~0.3 s, paid only by calendars with a holiday country

    code = country.strip().upper() if isinstance(country, str) else ""
    try:
        entity = type(holidays_lib.country_holidays(code, years=[]))
    except NotImplementedError as exc:
        raise CalendarError(
            f"unknown holiday country {country!r}; use an ISO 3166-1 alpha-2 code the holidays library "
            "supports, e.g. 'DE', 'US', 'GB'"
        ) from exc
    if subdivision is None:
        return code, None
    # Codes and the library's aliases ('Bayern' for 'BY'), matched without regard to case.
    known = {name.casefold(): name for name in entity.subdivisions}
    known |= {alias.casefold(): name for alias, name in getattr(entity, "subdivisions_aliases", {}).items()}
    folded = subdivision.strip().casefold() if isinstance(subdivision, str) else ""
    if folded not in known:
        choices = ", ".join(entity.subdivisions) or "none"
        raise CalendarError(
            f"unknown holiday subdivision {subdivision!r} for country {code}; supported: {choices}"
        )
    return code, known[folded]


def _extra_dates(values: Iterable[date | str]) -> frozenset[date]:
    dates: set[date] = set()
    for value in values:
        if isinstance(value, str):
            try:
                dates.add(date.fromisoformat(value.strip()))
            except ValueError as exc:
                raise CalendarError(f"holiday {value!r} is not an ISO date (YYYY-MM-DD)") from exc
        else:
            dates.add(_require_plain_date(value, "holiday"))
    return frozenset(dates)


class BusinessCalendar:
    """A customer's working calendar: time zone, weekend days, public holidays and extra closed dates."""

    def __init__(
        self,
        timezone: str = "UTC",
        weekend: Iterable[str] = ("sat", "sun"),
        holiday_country: str | None = None,
        holiday_subdivision: str | None = None,
        holidays: Iterable[date | str] = (),
    ) -> None:
        self._zone = _zone(timezone)
        self._weekend = _weekend_days(weekend)
        self._country, self._subdivision = _holiday_source(holiday_country, holiday_subdivision)
        self._extra = _extra_dates(holidays)
        self._workdays_per_week = len(WEEKDAY_NAMES) - len(self._weekend)
        # Per-year caches: working-weekday holidays, sorted (for counting) and as a set (for lookup).
        self._holidays_sorted: dict[int, tuple[date, ...]] = {}
        self._holidays_set: dict[int, frozenset[date]] = {}
        self._library_cache: dict[int, dict[date, str]] = {}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | Any) -> BusinessCalendar:
        """Build from a mapping (or an object with attributes) using the customer config's calendar keys.

        Keys: ``timezone``, ``weekend``, ``holiday_country``, ``holiday_subdivision``, ``holidays``;
        missing keys take the constructor defaults.
        """
        return cls(**_settings_values(settings))

    @property
    def timezone(self) -> ZoneInfo:
        return self._zone

    @property
    def weekend(self) -> tuple[str, ...]:
        """Weekend day names in week order."""
        return tuple(WEEKDAY_NAMES[day] for day in sorted(self._weekend))

    @property
    def holiday_country(self) -> str | None:
        return self._country

    @property
    def holiday_subdivision(self) -> str | None:
        return self._subdivision

    @property
    def extra_holidays(self) -> frozenset[date]:
        return self._extra

    def __repr__(self) -> str:
        return (
            f"BusinessCalendar(timezone={self._zone.key!r}, weekend={list(self.weekend)!r}, "
            f"holiday_country={self._country!r}, holiday_subdivision={self._subdivision!r}, "
            f"holidays=<{len(self._extra)} extra dates>)"
        )

    # -- days -------------------------------------------------------------------------------------

    def is_business_day(self, day: date) -> bool:
        _require_plain_date(day, "day")
        return day.weekday() not in self._weekend and day not in self._year_holidays(day.year)[1]

    def holiday_name(self, day: date) -> str | None:
        """Why ``day`` is a holiday (library name, or 'extra holiday' from config); None if it is not."""
        _require_plain_date(day, "day")
        if day in self._extra:
            return "extra holiday"
        if self._country is None:
            return None
        return self._library_holidays(day.year).get(day)

    def count_business_days(self, first: date, end: date) -> int:
        """Number of business days ``d`` with ``first <= d < end`` (0 if ``end <= first``)."""
        _require_plain_date(first, "first")
        _require_plain_date(end, "end")
        if end <= first:
            return 0
        weeks, rest = divmod((end - first).days, 7)
        weekday = first.weekday()
        count = weeks * self._workdays_per_week
        count += sum(1 for i in range(rest) if (weekday + i) % 7 not in self._weekend)
        last = end - _ONE_DAY
        for year in range(first.year, last.year + 1):
            ordered = self._year_holidays(year)[0]
            count -= bisect.bisect_left(ordered, end) - bisect.bisect_left(ordered, first)
        return count

    # -- instants ---------------------------------------------------------------------------------

    def next_business_start(self, moment: datetime) -> datetime:
        instant = _require_aware(moment, "moment").astimezone(UTC)
        day = instant.astimezone(self._zone).date()
        if self.is_business_day(day):
            return instant
        return self._day_start(self._advance(day + _ONE_DAY, 0))

    def add_business_days(self, start: datetime, n: float) -> datetime:
        _require_aware(start, "start")
        units = round(_require_finite(n, "n") * _UNITS_PER_DAY)
        if units == 0:
            return start.astimezone(UTC)
        instant = start.astimezone(UTC)
        day = instant.astimezone(self._zone).date()
        moved = self._forward(instant, day, units) if units > 0 else self._backward(instant, day, -units)
        return moved

    def business_days_between(self, a: datetime, b: datetime) -> float:
        return self._units_between(_require_aware(a, "a"), _require_aware(b, "b")) / _UNITS_PER_DAY

    # -- internals --------------------------------------------------------------------------------

    def _units_between(self, a: datetime, b: datetime) -> int:
        a_utc, b_utc = a.astimezone(UTC), b.astimezone(UTC)
        if b_utc < a_utc:
            return -self._units_between(b_utc, a_utc)
        a_day, b_day = a_utc.astimezone(self._zone).date(), b_utc.astimezone(self._zone).date()
        a_pos = self._position(a_utc, a_day) if self.is_business_day(a_day) else 0
        b_pos = self._position(b_utc, b_day) if self.is_business_day(b_day) else 0
        if a_day == b_day:
            return b_pos - a_pos
        head = _UNITS_PER_DAY - a_pos if self.is_business_day(a_day) else 0
        middle = self.count_business_days(a_day + _ONE_DAY, b_day) * _UNITS_PER_DAY
        return head + middle + b_pos

    def _forward(self, instant: datetime, day: date, units: int) -> datetime:
        if self.is_business_day(day):
            used = self._position(instant, day)
            if units <= _UNITS_PER_DAY - used:
                return self._instant_at(day, used + units)
            units -= _UNITS_PER_DAY - used
        whole_days, rest = divmod(units - 1, _UNITS_PER_DAY)
        landing = self._advance(day + _ONE_DAY, whole_days)
        return self._instant_at(landing, rest + 1)

    def _backward(self, instant: datetime, day: date, units: int) -> datetime:
        if self.is_business_day(day):
            used = self._position(instant, day)
            if units <= used:
                return self._instant_at(day, used - units)
            units -= used
        whole_days, rest = divmod(units - 1, _UNITS_PER_DAY)
        landing = self._retreat(day - _ONE_DAY, whole_days)
        return self._instant_at(landing, _UNITS_PER_DAY - rest - 1)

    def _advance(self, first: date, skip: int) -> date:
        """The business day reached from ``first`` (inclusive) after passing ``skip`` business days."""
        day = first
        while skip >= self._workdays_per_week:
            target = day + timedelta(weeks=skip // self._workdays_per_week)
            skip -= self.count_business_days(day, target)
            day = target
        while True:
            if self.is_business_day(day):
                if skip == 0:
                    return day
                skip -= 1
            day += _ONE_DAY

    def _retreat(self, last: date, skip: int) -> date:
        """The business day reached going back from ``last`` (inclusive) after passing ``skip`` of them."""
        day = last
        while skip >= self._workdays_per_week:
            target = day - timedelta(weeks=skip // self._workdays_per_week)
            skip -= self.count_business_days(target + _ONE_DAY, day + _ONE_DAY)
            day = target
        while True:
            if self.is_business_day(day):
                if skip == 0:
                    return day
                skip -= 1
            day -= _ONE_DAY

    def _day_start(self, day: date) -> datetime:
        # A local midnight skipped by a DST change resolves (fold=0) to the transition instant itself.
        return datetime.combine(day, time(), tzinfo=self._zone).astimezone(UTC)

    def _day_length_us(self, day: date) -> int:
        return (self._day_start(day + _ONE_DAY) - self._day_start(day)) // _ONE_MICROSECOND

    def _position(self, instant: datetime, day: date) -> int:
        """Business microseconds of ``day`` elapsed at ``instant`` (which lies on ``day``)."""
        elapsed = (instant - self._day_start(day)) // _ONE_MICROSECOND
        length = self._day_length_us(day)
        if length == _UNITS_PER_DAY:
            return elapsed
        if length <= 0:  # a calendar day a zone skipped entirely (Pacific/Apia, 2011-12-30)
            return 0
        return (elapsed * _UNITS_PER_DAY + length // 2) // length

    def _instant_at(self, day: date, units: int) -> datetime:
        length = self._day_length_us(day)
        if length != _UNITS_PER_DAY:
            units = (units * length + _UNITS_PER_DAY // 2) // _UNITS_PER_DAY
        return self._day_start(day) + timedelta(microseconds=units)

    def _library_holidays(self, year: int) -> Mapping[date, str]:
        if self._country is None:
            return {}
        if year not in self._library_cache:
            import holidays as holidays_lib

            found = holidays_lib.country_holidays(self._country, subdiv=self._subdivision, years=year)
            self._library_cache[year] = dict(found)
        return self._library_cache[year]

    def _year_holidays(self, year: int) -> tuple[tuple[date, ...], frozenset[date]]:
        """Holidays of ``year`` that fall on working weekdays (weekend holidays change nothing)."""
        if year not in self._holidays_set:
            closed = {d for d in self._extra if d.year == year} | set(self._library_holidays(year))
            working = frozenset(d for d in closed if d.weekday() not in self._weekend)
            self._holidays_sorted[year] = tuple(sorted(working))
            self._holidays_set[year] = working
        return self._holidays_sorted[year], self._holidays_set[year]


class RehearsalClock:
    """Compressed time for rehearsals: every day is a business day and lasts ``seconds_per_business_day``.

    ``add_business_days(start, n)`` is ``start + n * seconds_per_business_day`` seconds of real time, so a
    6-10 week process, SLA misses included, plays out in minutes.
    """

    def __init__(self, seconds_per_business_day: float, timezone: str = "UTC") -> None:
        if (
            isinstance(seconds_per_business_day, bool)
            or not isinstance(seconds_per_business_day, (int, float))
            or not math.isfinite(seconds_per_business_day)
            or seconds_per_business_day <= 0
        ):
            raise CalendarError(
                f"seconds_per_business_day={seconds_per_business_day!r} must be a positive number of seconds"
            )
        self._seconds = float(seconds_per_business_day)
        self._zone = _zone(timezone)

    @property
    def timezone(self) -> ZoneInfo:
        return self._zone

    @property
    def seconds_per_business_day(self) -> float:
        return self._seconds

    def __repr__(self) -> str:
        return f"RehearsalClock(seconds_per_business_day={self._seconds!r}, timezone={self._zone.key!r})"

    def is_business_day(self, day: date) -> bool:
        _require_plain_date(day, "day")
        return True

    def next_business_start(self, moment: datetime) -> datetime:
        return _require_aware(moment, "moment").astimezone(UTC)

    def add_business_days(self, start: datetime, n: float) -> datetime:
        offset = timedelta(seconds=_require_finite(n, "n") * self._seconds)
        return _require_aware(start, "start").astimezone(UTC) + offset

    def business_days_between(self, a: datetime, b: datetime) -> float:
        _require_aware(a, "a")
        _require_aware(b, "b")
        return (b.astimezone(UTC) - a.astimezone(UTC)).total_seconds() / self._seconds


_SETTING_KEYS = ("timezone", "weekend", "holiday_country", "holiday_subdivision", "holidays")


def _settings_values(settings: Mapping[str, Any] | Any) -> dict[str, Any]:
    if isinstance(settings, Mapping):
        unknown = sorted(set(settings) - set(_SETTING_KEYS))
        if unknown:
            raise CalendarError(f"unknown calendar setting(s) {unknown}; allowed: {', '.join(_SETTING_KEYS)}")
        values = dict(settings)
    else:
        values = {key: getattr(settings, key) for key in _SETTING_KEYS if hasattr(settings, key)}
    return {key: value for key, value in values.items() if value is not None}


def calendar_for(settings: Mapping[str, Any] | Any, seconds_per_business_day: float | None) -> BusinessClock:
    """The clock a run uses: the customer's calendar, or a rehearsal clock when compression is asked for.

    ``settings`` is the customer config's ``calendar`` section (mapping or model). The rehearsal clock
    keeps the customer's time zone for display only; it has no weekends or holidays.
    """
    if seconds_per_business_day is None:
        return BusinessCalendar.from_settings(settings)
    timezone = _settings_values(settings).get("timezone", "UTC")
    return RehearsalClock(seconds_per_business_day, timezone=timezone)
