"""Property tests: business-day arithmetic holds its laws for any instant, span and calendar we use."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from managed_upgrade.sla.calendar import WEEKDAY_NAMES, BusinessCalendar, RehearsalClock

# Business time is kept in whole microseconds of business time; on a 23 h / 25 h DST day converting to
# real microseconds rounds, so instants may differ by a few microseconds and day counts by ~1e-11.
INSTANT_TOLERANCE = timedelta(microseconds=3)
DAYS_TOLERANCE = 5e-11

SETTINGS = {
    "bavaria": {
        "timezone": "Europe/Berlin",
        "holiday_country": "DE",
        "holiday_subdivision": "BY",
        "holidays": [date(2026, 12, 24), date(2026, 12, 31)],
    },
    "new_york": {"timezone": "America/New_York", "holiday_country": "US"},
    # DST Sundays are business days here, so scaled 23 h / 25 h days are exercised.
    "berlin_fri_sat": {"timezone": "Europe/Berlin", "weekend": ["fri", "sat"], "holiday_country": "DE"},
    "seven_day_utc": {"timezone": "UTC", "weekend": []},
}
CALENDARS = {name: BusinessCalendar.from_settings(values) for name, values in SETTINGS.items()}

FIRST_YEAR, LAST_YEAR = 2024, 2030


def _dst_change_days(zone: ZoneInfo) -> list[datetime]:
    """Local midnights of days that are not 24 h long, found by arithmetic (nothing typed by hand)."""
    found = []
    day = date(FIRST_YEAR, 1, 1)
    while day.year <= LAST_YEAR:
        start = datetime.combine(day, time(), zone)
        end = datetime.combine(day + timedelta(days=1), time(), zone)
        if end.astimezone(UTC) - start.astimezone(UTC) != timedelta(days=1):
            found.append(start)
        day += timedelta(days=1)
    return found


DST_CHANGES = {name: _dst_change_days(calendar.timezone) for name, calendar in CALENDARS.items()}


def _reference_is_business_day(name: str, day: date) -> bool:
    """Independent rule straight from the settings and the holidays library."""
    values = SETTINGS[name]
    weekend = {WEEKDAY_NAMES.index(d) for d in values.get("weekend", ["sat", "sun"])}
    closed = set(values.get("holidays", []))
    if "holiday_country" in values:
        country, subdivision = values["holiday_country"], values.get("holiday_subdivision")
        closed |= set(holidays.country_holidays(country, subdiv=subdivision, years=day.year))
    return day.weekday() not in weekend and day not in closed


def _reference_between(name: str, a: datetime, b: datetime) -> float:
    """Slow day-by-day definition: each business day's overlap with [a, b] over that day's real length."""
    zone = CALENDARS[name].timezone
    total = 0.0
    day = a.astimezone(zone).date()
    while day <= b.astimezone(zone).date():
        if _reference_is_business_day(name, day):
            start = datetime.combine(day, time(), zone).astimezone(UTC)
            end = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
            overlap = min(b, end) - max(a, start)
            if overlap > timedelta(0):
                total += overlap / (end - start)
        day += timedelta(days=1)
    return total


calendar_names = st.sampled_from(sorted(CALENDARS))


@st.composite
def instants(draw: st.DrawFn, name: str) -> datetime:
    """Uniform instants, plus ones around DST changes and exactly on local midnights."""
    zone = CALENDARS[name].timezone
    uniform = st.datetimes(
        min_value=datetime(FIRST_YEAR, 1, 1), max_value=datetime(LAST_YEAR, 6, 30), timezones=st.just(UTC)
    )
    choices = [uniform]
    if DST_CHANGES[name]:
        choices.append(
            st.builds(
                lambda midnight, seconds: midnight.astimezone(UTC) + timedelta(seconds=seconds),
                st.sampled_from(DST_CHANGES[name]),
                st.integers(-3 * 86_400, 3 * 86_400),
            )
        )
    choices.append(
        st.dates(min_value=date(FIRST_YEAR, 1, 1), max_value=date(LAST_YEAR, 6, 30)).map(
            lambda d: datetime.combine(d, time(), zone)
        )
    )
    return draw(st.one_of(choices))


day_counts = st.one_of(
    st.integers(0, 120).map(float),
    st.integers(0, 120 * 96).map(lambda quarter_hours: quarter_hours / 96),
    st.floats(0, 120, allow_nan=False, allow_infinity=False),
)


def _close(x: datetime, y: datetime) -> bool:
    return abs(x - y) <= INSTANT_TOLERANCE


@settings(deadline=None)
@given(st.data(), calendar_names, day_counts, st.booleans())
def test_add_then_measure_round_trips(data: st.DataObject, name: str, n: float, backwards: bool) -> None:
    calendar = CALENDARS[name]
    start = data.draw(instants(name))
    days = -n if backwards else n
    moved = calendar.add_business_days(start, days)
    assert calendar.business_days_between(start, moved) == pytest.approx(days, abs=DAYS_TOLERANCE)
    assert (moved >= start) if days >= 0 else (moved <= start)


@settings(deadline=None)
@given(st.data(), calendar_names, day_counts, day_counts)
def test_more_days_never_end_earlier(data: st.DataObject, name: str, n1: float, n2: float) -> None:
    calendar = CALENDARS[name]
    start = data.draw(instants(name))
    low, high = sorted((n1, n2))
    assert calendar.add_business_days(start, low) <= calendar.add_business_days(start, high)
    assert calendar.add_business_days(start, -high) <= calendar.add_business_days(start, -low)
    if high - low >= 1e-6:  # more than 86 ms of business time apart: strictly later
        assert calendar.add_business_days(start, low) < calendar.add_business_days(start, high)


@settings(deadline=None)
@given(st.data(), calendar_names, day_counts, day_counts, st.booleans())
def test_adding_in_two_steps_equals_adding_the_sum(
    data: st.DataObject, name: str, a: float, b: float, backwards: bool
) -> None:
    calendar = CALENDARS[name]
    start = data.draw(instants(name))
    sign = -1 if backwards else 1
    two_steps = calendar.add_business_days(calendar.add_business_days(start, sign * a), sign * b)
    assert _close(two_steps, calendar.add_business_days(start, sign * (a + b)))


@settings(deadline=None)
@given(st.data(), calendar_names, day_counts)
def test_going_back_undoes_going_forward_from_business_time(data: st.DataObject, name: str, n: float) -> None:
    calendar = CALENDARS[name]
    start = calendar.next_business_start(data.draw(instants(name)))
    assert _close(calendar.add_business_days(calendar.add_business_days(start, n), -n), start)


@settings(deadline=None)
@given(st.data(), calendar_names, day_counts, st.booleans())
def test_results_never_fall_inside_a_non_business_day(
    data: st.DataObject, name: str, n: float, backwards: bool
) -> None:
    calendar = CALENDARS[name]
    start = data.draw(instants(name))
    if n * 86_400e6 < 0.5:  # below half a microsecond of business time: counts as 0, start is returned
        assert calendar.add_business_days(start, n) == start
        return
    moved = calendar.add_business_days(start, -n if backwards else n)
    assert moved.tzinfo is UTC
    local = moved.astimezone(calendar.timezone)
    day = local.date()
    if calendar.is_business_day(day):
        return
    # The one documented boundary: a forward budget ending exactly at the end of a business day.
    assert not backwards
    assert local.time() == time(0)
    assert calendar.is_business_day(day - timedelta(days=1))


@settings(deadline=None, max_examples=60)
@given(st.data(), calendar_names, st.integers(0, 45 * 86_400))
def test_between_matches_day_by_day_definition(data: st.DataObject, name: str, span_seconds: int) -> None:
    calendar = CALENDARS[name]
    a = data.draw(instants(name)).astimezone(UTC)
    b = a + timedelta(seconds=span_seconds)
    expected = _reference_between(name, a, b)
    assert calendar.business_days_between(a, b) == pytest.approx(expected, abs=1e-9)
    assert calendar.business_days_between(b, a) == pytest.approx(-expected, abs=1e-9)


@settings(deadline=None)
@given(st.data(), calendar_names)
def test_between_is_additive(data: st.DataObject, name: str) -> None:
    calendar = CALENDARS[name]
    a, b, c = (data.draw(instants(name)) for _ in range(3))
    assert calendar.business_days_between(a, b) + calendar.business_days_between(b, c) == pytest.approx(
        calendar.business_days_between(a, c), abs=1e-9
    )


@settings(deadline=None)
@given(st.data(), calendar_names)
def test_next_business_start_is_the_first_business_instant(data: st.DataObject, name: str) -> None:
    calendar = CALENDARS[name]
    moment = data.draw(instants(name))
    start = calendar.next_business_start(moment)
    local = start.astimezone(calendar.timezone)
    assert start >= moment
    assert calendar.is_business_day(local.date())
    assert calendar.business_days_between(moment, start) == 0.0
    on_business_day = calendar.is_business_day(moment.astimezone(calendar.timezone).date())
    assert (start == moment.astimezone(UTC)) == on_business_day
    if not on_business_day:
        assert local.time() == time(0)


@settings(deadline=None)
@given(calendar_names, st.dates(min_value=date(2000, 1, 1), max_value=date(2060, 12, 31)))
def test_business_days_follow_weekend_and_library_holidays(name: str, day: date) -> None:
    assert CALENDARS[name].is_business_day(day) == _reference_is_business_day(name, day)


@settings(deadline=None)
@given(
    st.floats(0.001, 86_400, allow_nan=False),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)),
    day_counts,
    day_counts,
)
def test_rehearsal_clock_is_linear(seconds: float, start: datetime, a: float, b: float) -> None:
    clock = RehearsalClock(seconds, timezone="Europe/Berlin")
    moved = clock.add_business_days(start, a)
    resolution_days = 1e-6 / seconds  # timedelta keeps microseconds
    assert clock.business_days_between(start, moved) == pytest.approx(a, abs=resolution_days + 1e-12)
    assert moved <= clock.add_business_days(start, a + b)
    two_steps = clock.add_business_days(moved, b)
    assert abs(two_steps - clock.add_business_days(start, a + b)) <= timedelta(microseconds=2)
