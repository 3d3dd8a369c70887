"""Concrete-date checks of business-day arithmetic: weekends, holidays, DST, rehearsal clock, errors."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import holidays
import pytest

from managed_upgrade.sla.calendar import (
    BusinessCalendar,
    BusinessClock,
    CalendarError,
    RehearsalClock,
    calendar_for,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def bavaria() -> BusinessCalendar:
    return BusinessCalendar("Europe/Berlin", holiday_country="DE", holiday_subdivision="BY")


@pytest.fixture(scope="module")
def new_york() -> BusinessCalendar:
    return BusinessCalendar("America/New_York", holiday_country="US")


def library_holiday(country: str, subdiv: str | None, year: int, name: str) -> date:
    """The one date the holidays library gives for a named holiday (never typed by hand here)."""
    found = holidays.country_holidays(country, subdiv=subdiv, years=year, language="en_US").get_named(name)
    assert len(found) == 1, (country, subdiv, year, name, found)
    return found[0]


def local(tz: ZoneInfo, *fields: int) -> datetime:
    return datetime(*fields, tzinfo=tz)


# -- weekends ---------------------------------------------------------------------------------------


def test_friday_1700_plus_one_business_day_is_monday_1700(bavaria: BusinessCalendar) -> None:
    friday = local(BERLIN, 2026, 2, 13, 17)
    assert bavaria.add_business_days(friday, 1) == local(BERLIN, 2026, 2, 16, 17)
    assert bavaria.business_days_between(friday, local(BERLIN, 2026, 2, 16, 17)) == 1.0


def test_half_day_is_twelve_hours_and_fractions_cross_the_weekend() -> None:
    calendar = BusinessCalendar("UTC")
    friday = local(UTC, 2026, 2, 13, 17)
    assert calendar.add_business_days(friday, 0.5) == local(UTC, 2026, 2, 16, 5)
    assert calendar.add_business_days(local(UTC, 2026, 2, 11, 6), 0.5) == local(UTC, 2026, 2, 11, 18)
    assert calendar.business_days_between(friday, local(UTC, 2026, 2, 16, 5)) == 0.5


def test_start_on_weekend_counts_from_monday_midnight() -> None:
    calendar = BusinessCalendar("UTC")
    saturday_noon = local(UTC, 2026, 2, 14, 12)
    assert calendar.add_business_days(saturday_noon, 0.5) == local(UTC, 2026, 2, 16, 12)
    assert calendar.add_business_days(saturday_noon, 1) == local(UTC, 2026, 2, 17)
    assert calendar.add_business_days(saturday_noon, 0) == saturday_noon
    assert calendar.business_days_between(saturday_noon, local(UTC, 2026, 2, 15, 23)) == 0.0


def test_budget_ending_at_end_of_friday_is_saturday_midnight_boundary() -> None:
    calendar = BusinessCalendar("UTC")
    friday_midnight = local(UTC, 2026, 2, 13)
    saturday_midnight = local(UTC, 2026, 2, 14)
    assert calendar.add_business_days(friday_midnight, 1) == saturday_midnight
    assert calendar.add_business_days(local(UTC, 2026, 2, 12, 9), 1.625) == saturday_midnight
    # The boundary is the end of Friday, not business time: work resumes on Monday.
    assert calendar.next_business_start(saturday_midnight) == local(UTC, 2026, 2, 16)
    assert calendar.add_business_days(saturday_midnight, 0.25) == local(UTC, 2026, 2, 16, 6)


def test_negative_days_go_back_onto_business_time() -> None:
    calendar = BusinessCalendar("UTC")
    assert calendar.add_business_days(local(UTC, 2026, 2, 16, 10), -1) == local(UTC, 2026, 2, 13, 10)
    assert calendar.add_business_days(local(UTC, 2026, 2, 16), -1) == local(UTC, 2026, 2, 13)
    assert calendar.add_business_days(local(UTC, 2026, 2, 14, 12), -0.25) == local(UTC, 2026, 2, 13, 18)
    monday, friday = local(UTC, 2026, 2, 16, 10), local(UTC, 2026, 2, 13, 10)
    assert calendar.business_days_between(monday, friday) == -1.0


def test_configurable_friday_saturday_weekend() -> None:
    calendar = BusinessCalendar("Asia/Dubai", weekend=["fri", "sat"])
    dubai = ZoneInfo("Asia/Dubai")
    thursday = local(dubai, 2026, 2, 12, 17)
    assert calendar.weekend == ("fri", "sat")
    assert calendar.add_business_days(thursday, 1) == local(dubai, 2026, 2, 15, 17)
    assert calendar.is_business_day(date(2026, 2, 15))  # Sunday
    assert not calendar.is_business_day(date(2026, 2, 13))  # Friday


def test_results_are_utc_and_local_dates_follow_the_customer_zone(new_york: BusinessCalendar) -> None:
    result = new_york.add_business_days(datetime(2026, 2, 20, 22, tzinfo=UTC), 1)  # Friday 17:00 in NY
    assert result.tzinfo is UTC
    assert result.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 2, 23, 17)
    assert new_york.next_business_start(local(NEW_YORK, 2026, 2, 21, 9)).tzinfo is UTC


# -- holidays ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("year", [2026, 2027])
def test_bavarian_holidays_are_exactly_the_library_holidays(bavaria: BusinessCalendar, year: int) -> None:
    expected = holidays.country_holidays("DE", subdiv="BY", years=year)
    assert len(expected) >= 10
    day, last = date(year, 1, 1), date(year, 12, 31)
    while day <= last:
        assert bavaria.is_business_day(day) == (day.weekday() < 5 and day not in expected), day
        day += timedelta(days=1)
    weekdays = sum(
        1
        for i in range((last - date(year, 1, 1)).days + 1)
        if (date(year, 1, 1) + timedelta(i)).weekday() < 5
    )
    weekday_holidays = sum(1 for d in expected if d.weekday() < 5)
    assert bavaria.count_business_days(date(year, 1, 1), date(year + 1, 1, 1)) == weekdays - weekday_holidays


def test_corpus_christi_is_skipped_in_bavaria_but_not_nationally(bavaria: BusinessCalendar) -> None:
    corpus_christi = library_holiday("DE", "BY", 2026, "Corpus Christi")
    assert corpus_christi.weekday() == 3  # Thursday
    eve = datetime.combine(corpus_christi - timedelta(days=1), datetime.min.time().replace(hour=10), BERLIN)
    assert bavaria.add_business_days(eve, 1) == eve + timedelta(days=2)
    assert bavaria.holiday_name(corpus_christi) is not None
    germany = BusinessCalendar("Europe/Berlin", holiday_country="DE")
    assert germany.add_business_days(eve, 1) == eve + timedelta(days=1)


def test_epiphany_2027_in_bavaria_and_holiday_names(bavaria: BusinessCalendar) -> None:
    epiphany = library_holiday("DE", "BY", 2027, "Epiphany")
    assert not bavaria.is_business_day(epiphany)
    assert (
        bavaria.holiday_name(epiphany) == holidays.country_holidays("DE", subdiv="BY", years=2027)[epiphany]
    )
    assert bavaria.holiday_name(epiphany + timedelta(days=1)) is None


def test_us_thanksgiving(new_york: BusinessCalendar) -> None:
    thanksgiving = library_holiday("US", None, 2026, "Thanksgiving Day")
    wednesday = datetime.combine(
        thanksgiving - timedelta(days=1), datetime.min.time().replace(hour=17), NEW_YORK
    )
    assert new_york.add_business_days(wednesday, 1) == wednesday + timedelta(days=2)
    assert new_york.business_days_between(wednesday, wednesday + timedelta(days=2)) == 1.0
    assert new_york.next_business_start(wednesday + timedelta(days=1)) == datetime.combine(
        thanksgiving + timedelta(days=1), datetime.min.time(), NEW_YORK
    )


def test_christmas_and_new_year_span_in_bavaria(bavaria: BusinessCalendar) -> None:
    for closed in (date(2026, 12, 25), date(2027, 1, 1), date(2027, 1, 6)):
        assert bavaria.holiday_name(closed) is not None, closed
    start = local(BERLIN, 2026, 12, 23, 17)  # Wednesday
    expected = [
        local(BERLIN, 2026, 12, 24, 17),  # Thursday: Christmas Eve is a working day in the library
        local(BERLIN, 2026, 12, 28, 17),  # Friday 25th holiday, weekend
        local(BERLIN, 2026, 12, 29, 17),
        local(BERLIN, 2026, 12, 30, 17),
        local(BERLIN, 2026, 12, 31, 17),
        local(BERLIN, 2027, 1, 4, 17),  # Friday 1st holiday, weekend
        local(BERLIN, 2027, 1, 5, 17),
        local(BERLIN, 2027, 1, 7, 17),  # Wednesday 6th Epiphany
    ]
    for days, moment in enumerate(expected, start=1):
        assert bavaria.add_business_days(start, days) == moment, days
        assert bavaria.business_days_between(start, moment) == days
        assert bavaria.add_business_days(moment, -days) == start


def test_extra_dates_from_config_are_holidays() -> None:
    calendar = BusinessCalendar("Europe/Berlin", holidays=[date(2026, 2, 16), "2026-02-17"])
    friday = local(BERLIN, 2026, 2, 13, 17)
    assert calendar.add_business_days(friday, 1) == local(BERLIN, 2026, 2, 18, 17)
    assert calendar.holiday_name(date(2026, 2, 17)) == "extra holiday"
    assert calendar.extra_holidays == frozenset({date(2026, 2, 16), date(2026, 2, 17)})


# -- daylight saving time ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "friday", "monday", "real_hours"),
    [
        ("Europe/Berlin", (2026, 3, 27, 17), (2026, 3, 30, 17), 71),  # spring forward Sun 29 Mar
        ("Europe/Berlin", (2026, 10, 23, 17), (2026, 10, 26, 17), 73),  # fall back Sun 25 Oct
        ("America/New_York", (2026, 3, 6, 17), (2026, 3, 9, 17), 71),  # spring forward Sun 8 Mar
        ("America/New_York", (2026, 10, 30, 17), (2026, 11, 2, 17), 73),  # fall back Sun 1 Nov
    ],
)
def test_dst_weekend_keeps_wall_clock(
    zone: str, friday: tuple[int, ...], monday: tuple[int, ...], real_hours: int
) -> None:
    tz = ZoneInfo(zone)
    calendar = BusinessCalendar(zone)
    start, end = local(tz, *friday), local(tz, *monday)
    assert calendar.add_business_days(start, 1) == end
    assert (end.astimezone(UTC) - start.astimezone(UTC)) == timedelta(hours=real_hours)
    assert calendar.business_days_between(start, end) == 1.0
    assert calendar.add_business_days(end, -1) == start


def test_business_dst_day_is_scaled_to_one_business_day() -> None:
    # With a Fri+Sat weekend the DST Sunday is a business day: 23 h (spring) or 25 h (autumn) long.
    calendar = BusinessCalendar("Europe/Berlin", weekend=["fri", "sat"])
    spring_sunday, autumn_sunday = local(BERLIN, 2026, 3, 29), local(BERLIN, 2026, 10, 25)

    half_spring = calendar.add_business_days(spring_sunday, 0.5)
    assert half_spring.astimezone(UTC) - spring_sunday.astimezone(UTC) == timedelta(hours=11.5)
    assert half_spring.astimezone(BERLIN).replace(tzinfo=None) == datetime(2026, 3, 29, 12, 30)
    assert calendar.add_business_days(spring_sunday, 1) == local(BERLIN, 2026, 3, 30)

    half_autumn = calendar.add_business_days(autumn_sunday, 0.5)
    assert half_autumn.astimezone(UTC) - autumn_sunday.astimezone(UTC) == timedelta(hours=12.5)
    assert half_autumn.astimezone(BERLIN).replace(tzinfo=None) == datetime(2026, 10, 25, 11, 30)

    thursday = local(BERLIN, 2026, 3, 26, 17)
    on_dst_day = calendar.add_business_days(thursday, 1).astimezone(BERLIN)
    assert on_dst_day.replace(tzinfo=None) == datetime(2026, 3, 29, 17, 17, 30)
    assert calendar.add_business_days(thursday, 2) == local(BERLIN, 2026, 3, 30, 17)
    assert calendar.business_days_between(thursday, local(BERLIN, 2026, 3, 30, 17)) == 2.0


# -- long spans -------------------------------------------------------------------------------------


def test_long_spans_are_fast_and_agree_with_a_day_by_day_count(
    bavaria: BusinessCalendar, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fast is counted in work done, not in seconds (a busy machine must not fail it): ~100 years
    are crossed with a handful of day checks, each year's holidays built once."""
    calendar = BusinessCalendar("Europe/Berlin", holiday_country="DE", holiday_subdivision="BY")
    calls = {"is_business_day": 0, "count_business_days": 0, "_library_holidays": 0}
    for name in calls:
        method = getattr(calendar, name)

        def counted(*args, _method=method, _name=name):
            calls[_name] += 1
            return _method(*args)

        monkeypatch.setattr(calendar, name, counted)
    start = local(BERLIN, 2026, 1, 5, 9)
    far = calendar.add_business_days(start, 25_000)
    assert calendar.business_days_between(start, far) == 25_000
    assert far.year == 2124
    # A day-by-day walk would check ~35 000 days; whole weeks are jumped, years bisected.
    assert calls["is_business_day"] <= 20, calls
    assert calls["count_business_days"] <= 10, calls
    assert calls["_library_holidays"] == far.year - start.year + 1, calls  # each year's holidays once

    first, end = date(2026, 1, 1), date(2031, 1, 1)
    by_day = sum(1 for i in range((end - first).days) if bavaria.is_business_day(first + timedelta(i)))
    assert bavaria.count_business_days(first, end) == by_day
    assert bavaria.count_business_days(end, first) == 0


# -- the fixed "today"s other tests run on (tests/conftest.py) -----------------------------------------


def test_each_fixed_today_is_the_day_its_case_says(fixed_today) -> None:
    calendar, day = fixed_today.calendar, fixed_today.date
    tomorrow = day + timedelta(days=1)
    midnights = [
        datetime.combine(d, datetime.min.time(), fixed_today.zone).astimezone(UTC) for d in (day, tomorrow)
    ]
    day_length = (midnights[1] - midnights[0]) / timedelta(hours=1)
    is_the_case = {
        "weekday": day.weekday() < 5 and calendar.is_business_day(day),
        "saturday": day.weekday() == 5,
        "sunday": day.weekday() == 6,
        "eve-of-holiday": calendar.is_business_day(day) and calendar.holiday_name(tomorrow) is not None,
        "dst-spring-forward": day_length == 23,
        "dst-fall-back": day_length == 25,
    }
    assert is_the_case[fixed_today.id], (fixed_today, day_length)
    assert calendar.add_business_days(fixed_today.now, 1) == fixed_today.one_business_day_later
    assert calendar.business_days_between(fixed_today.now, fixed_today.one_business_day_later) == 1.0
    assert fixed_today.clock() == fixed_today.now == fixed_today.at(10)


# -- rehearsal clock and factory --------------------------------------------------------------------


def test_rehearsal_clock_maps_a_business_day_to_seconds() -> None:
    clock = RehearsalClock(60, timezone="Europe/Berlin")
    saturday = local(BERLIN, 2026, 2, 14, 12)
    assert clock.add_business_days(saturday, 2.5) == saturday + timedelta(seconds=150)
    assert clock.add_business_days(saturday, -1) == saturday - timedelta(seconds=60)
    assert clock.business_days_between(saturday, saturday + timedelta(seconds=90)) == 1.5
    assert clock.is_business_day(date(2026, 2, 14))
    assert clock.next_business_start(saturday) == saturday
    assert clock.add_business_days(saturday, 1).tzinfo is UTC


def test_calendar_for_picks_the_clock_from_settings() -> None:
    settings = {
        "timezone": "America/New_York",
        "weekend": ["sat", "sun"],
        "holiday_country": "US",
        "holiday_subdivision": None,
        "holidays": [date(2026, 7, 6)],
    }
    real = calendar_for(settings, None)
    assert isinstance(real, BusinessCalendar)
    assert real.holiday_country == "US"
    assert not real.is_business_day(date(2026, 7, 6))
    rehearsal = calendar_for(settings, 30.0)
    assert isinstance(rehearsal, RehearsalClock)
    assert rehearsal.timezone == NEW_YORK
    assert rehearsal.seconds_per_business_day == 30.0
    for clock in (real, rehearsal):
        assert isinstance(clock, BusinessClock)


def test_from_settings_accepts_a_config_object_and_defaults() -> None:
    model_like = SimpleNamespace(
        timezone="Europe/Berlin",
        weekend=["fri", "sat"],
        holiday_country="de",
        holiday_subdivision="by",
        holidays=[],
    )
    calendar = BusinessCalendar.from_settings(model_like)
    assert (calendar.holiday_country, calendar.holiday_subdivision) == ("DE", "BY")
    assert calendar.weekend == ("fri", "sat")
    default = BusinessCalendar.from_settings({})
    assert (default.timezone, default.weekend, default.holiday_country) == (
        ZoneInfo("UTC"),
        ("sat", "sun"),
        None,
    )


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timezone": "Europe/Berlinn"}, "unknown time zone 'Europe/Berlinn'"),
        ({"timezone": "../etc/passwd"}, "unknown time zone '../etc/passwd'"),
        ({"timezone": ""}, "time zone ''"),
        ({"holiday_country": "XX"}, "unknown holiday country 'XX'"),
        (
            {"holiday_country": "DE", "holiday_subdivision": "ZZ"},
            "unknown holiday subdivision 'ZZ' for country DE",
        ),
        ({"holiday_subdivision": "BY"}, "subdivision 'BY' is given without a holiday country"),
        ({"weekend": ["sat", "sunday"]}, "unknown weekend day 'sunday'"),
        ({"weekend": "sat"}, "weekend='sat' must be a list"),
        ({"weekend": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}, "all seven days"),
        ({"holidays": ["2026-13-01"]}, "holiday '2026-13-01' is not an ISO date"),
        ({"holidays": [datetime(2026, 1, 1, tzinfo=UTC)]}, "is not a date"),
    ],
)
def test_bad_settings_name_the_value(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(CalendarError, match=re.escape(message)):
        BusinessCalendar(**kwargs)  # type: ignore[arg-type]


def test_calendar_error_is_a_value_error_for_pydantic_validators() -> None:
    assert issubclass(CalendarError, ValueError)


def test_unknown_setting_key_is_rejected() -> None:
    with pytest.raises(CalendarError, match=r"unknown calendar setting\(s\) \['time_zone'\]"):
        BusinessCalendar.from_settings({"time_zone": "UTC"})


@pytest.mark.parametrize(
    "clock", [BusinessCalendar("UTC"), RehearsalClock(10)], ids=["calendar", "rehearsal"]
)
def test_naive_datetimes_are_rejected(clock: BusinessClock) -> None:
    naive = datetime(2026, 2, 13, 17)
    aware = naive.replace(tzinfo=UTC)
    with pytest.raises(CalendarError, match=r"start=2026-02-13T17:00:00 is a naive datetime"):
        clock.add_business_days(naive, 1)
    with pytest.raises(CalendarError, match=r"b=2026-02-13T17:00:00 is a naive datetime"):
        clock.business_days_between(aware, naive)
    with pytest.raises(CalendarError, match=r"moment=2026-02-13T17:00:00 is a naive datetime"):
        clock.next_business_start(naive)
    with pytest.raises(CalendarError, match=r"day=datetime\.datetime\(2026, 2, 13, 17, 0\) is not a date"):
        clock.is_business_day(naive)
    with pytest.raises(CalendarError, match=r"n=nan is not a finite number"):
        clock.add_business_days(aware, float("nan"))


@pytest.mark.parametrize("seconds", [0, -5, float("inf"), True])
def test_rehearsal_needs_positive_seconds(seconds: float) -> None:
    with pytest.raises(CalendarError, match=rf"seconds_per_business_day={seconds!r} must be a positive"):
        RehearsalClock(seconds)


def test_rehearsal_rejects_unknown_zone() -> None:
    with pytest.raises(CalendarError, match="unknown time zone 'Mars/Olympus'"):
        calendar_for({"timezone": "Mars/Olympus"}, 5)


def test_repeated_hour_is_told_apart_by_fold() -> None:
    # 02:30 occurs twice on 25 Oct 2026 in Berlin; Python's same-zone arithmetic would call them equal.
    calendar = BusinessCalendar("Europe/Berlin", weekend=["fri", "sat"])
    first, second = local(BERLIN, 2026, 10, 25, 2, 30), local(BERLIN, 2026, 10, 25, 2, 30).replace(fold=1)
    assert calendar.business_days_between(first, second) == pytest.approx(1 / 25, abs=1e-12)
    assert calendar.business_days_between(second, first) == pytest.approx(-1 / 25, abs=1e-12)
    assert calendar.add_business_days(first, 1 / 25) == second.astimezone(UTC)


def test_subdivision_aliases_from_the_library_are_accepted() -> None:
    assert (
        BusinessCalendar(
            "Europe/Berlin", holiday_country="DE", holiday_subdivision="Bayern"
        ).holiday_subdivision
        == "BY"
    )
