"""Upgrade windows and change freezes: when an upgrade may start, when it may next, and why it waits."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from managed_upgrade.config import load_customer_config
from managed_upgrade.sla.windows import (
    START_GRACE,
    CompressedSchedule,
    Freeze,
    NoUpgradeWindowError,
    UpgradeSchedule,
    Window,
    WindowError,
    run_schedules,
    schedule_for,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
CUSTOMERS = Path(__file__).resolve().parents[3] / "include" / "customers"
SATURDAY_NIGHT = Window.parse(["sat"], "22:00", "04:00")
YEAR_END = Freeze(date(2026, 12, 15), date(2027, 1, 5), "Year-end closing")


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


# --- examples -----------------------------------------------------------------------------------------


def test_no_windows_and_no_freezes_is_always_open():
    schedule = UpgradeSchedule(timezone="Europe/Berlin")
    assert schedule.always_open
    opening = schedule.opening(berlin(2027, 1, 6, 3))
    assert opening.is_open and opening.closes_at is None and opening.reason == ""


def test_outside_the_window_waits_for_the_next_one_and_says_so():
    schedule = UpgradeSchedule([SATURDAY_NIGHT], timezone="Europe/Berlin")
    opening = schedule.opening(berlin(2027, 1, 6, 12))  # Wednesday noon
    assert opening.waiting_for == "window"
    assert opening.at == berlin(2027, 1, 9, 22)
    assert opening.closes_at == berlin(2027, 1, 10, 4)  # overnight: closes Sunday morning
    assert opening.reason == "outside the upgrade windows"
    assert opening.describe() == (
        "the upgrade waits until Sat 2027-01-09 22:00 CET: outside the upgrade windows"
    )


def test_an_overnight_window_is_open_after_midnight_and_closed_at_its_end():
    schedule = UpgradeSchedule([SATURDAY_NIGHT], timezone="Europe/Berlin")
    assert schedule.opening(berlin(2027, 1, 10, 3, 59)).is_open  # Sunday 03:59, from Saturday's window
    assert schedule.opening(berlin(2027, 1, 10, 4)).at == berlin(2027, 1, 16, 22)
    assert schedule.opening(berlin(2027, 1, 9, 21, 59)).at == berlin(2027, 1, 9, 22)


def test_touching_windows_are_one_stretch():
    schedule = UpgradeSchedule(
        [Window.parse(["mon"], "22:00", "24:00"), Window.parse(["tue"], "00:00", "06:00")], timezone="UTC"
    )
    opening = schedule.opening(datetime(2027, 1, 4, 23, tzinfo=UTC))
    assert opening.is_open and opening.closes_at == datetime(2027, 1, 5, 6, tzinfo=UTC)


def test_in_a_freeze_it_waits_for_the_first_window_after_it_and_names_the_freeze():
    schedule = UpgradeSchedule([SATURDAY_NIGHT], [YEAR_END], timezone="Europe/Berlin")
    opening = schedule.opening(berlin(2026, 12, 19, 23))  # inside Saturday's window, but frozen
    assert opening.waiting_for == "freeze"
    assert opening.at == berlin(2027, 1, 9, 22)
    assert opening.reason == (
        "change freeze 'Year-end closing' (2026-12-15 to 2027-01-05, all environments) until 2027-01-05"
    )


def test_a_freeze_covering_the_next_window_is_named_as_what_holds_it_back():
    schedule = UpgradeSchedule([SATURDAY_NIGHT], [YEAR_END], timezone="Europe/Berlin")
    opening = schedule.opening(berlin(2026, 12, 14, 12))  # Monday before the freeze
    assert opening.waiting_for == "window"
    assert opening.at == berlin(2027, 1, 9, 22)
    assert "fall in change freeze 'Year-end closing'" in opening.reason


def test_a_freeze_starting_inside_a_window_closes_it_early():
    freeze = Freeze(date(2027, 1, 10), date(2027, 1, 10), "Sunday release of the ERP")
    schedule = UpgradeSchedule([SATURDAY_NIGHT], [freeze], timezone="Europe/Berlin")
    opening = schedule.opening(berlin(2027, 1, 9, 23))
    assert opening.is_open and opening.closes_at == berlin(2027, 1, 10, 0)


def test_no_windows_but_a_freeze_waits_for_the_day_after_it():
    schedule = UpgradeSchedule([], [YEAR_END], timezone="Europe/Berlin")
    opening = schedule.opening(berlin(2026, 12, 20, 15))
    assert opening.at == berlin(2027, 1, 6, 0) and opening.waiting_for == "freeze"
    assert schedule.opening(berlin(2027, 1, 6, 0)).closes_at is None


def test_no_opening_within_the_horizon_is_a_clear_error():
    freezes = [
        Freeze(date(2027, 1, 1), date(2027, 12, 31), "Migration year"),
        Freeze(date(2028, 1, 1), date(2028, 6, 30), "Migration year, extended"),
    ]
    schedule = UpgradeSchedule([SATURDAY_NIGHT], freezes, timezone="Europe/Berlin")
    with pytest.raises(
        NoUpgradeWindowError, match=r"no upgrade window opens within 366 days.*Migration year"
    ):
        schedule.opening(berlin(2027, 1, 2, 12))


def test_weeks_without_a_window_are_searched_quickly():
    schedule = UpgradeSchedule([Window.parse(["sun"], "02:00", "03:00")], [YEAR_END], timezone="UTC")
    assert schedule.opening(datetime(2026, 12, 14, tzinfo=UTC)).at == datetime(2027, 1, 10, 2, tzinfo=UTC)


# --- DST ---------------------------------------------------------------------------------------------


def test_spring_forward_a_window_starting_in_the_skipped_hour_opens_when_the_clocks_jump():
    # Europe/Berlin, Sunday 28 March 2027: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    schedule = UpgradeSchedule([Window.parse(["sun"], "02:30", "05:00")], timezone="Europe/Berlin")
    opening = schedule.opening(berlin(2027, 3, 27, 12))
    assert opening.at == datetime(2027, 3, 28, 1, tzinfo=UTC)
    assert opening.at.astimezone(BERLIN).time() == time(3, 0)
    assert opening.closes_at == berlin(2027, 3, 28, 5)


def test_spring_forward_night_window_is_an_hour_shorter_and_fall_back_an_hour_longer():
    schedule = UpgradeSchedule([Window.parse(["sun"], "01:00", "05:00")], timezone="Europe/Berlin")
    spring = schedule.opening(berlin(2027, 3, 28, 0))
    autumn = schedule.opening(berlin(2027, 10, 31, 0))
    assert spring.closes_at - spring.at == timedelta(hours=3)
    assert autumn.closes_at - autumn.at == timedelta(hours=5)
    assert spring.at.astimezone(BERLIN).time() == autumn.at.astimezone(BERLIN).time() == time(1)


def test_fall_back_a_window_at_a_repeated_time_opens_at_its_first_occurrence():
    # America/New_York, Sunday 7 November 2027: 02:00 EDT falls back to 01:00 EST.
    schedule = UpgradeSchedule([Window.parse(["sun"], "01:30", "03:00")], timezone="America/New_York")
    opening = schedule.opening(datetime(2027, 11, 6, 12, tzinfo=NEW_YORK))
    assert opening.at == datetime(2027, 11, 7, 5, 30, tzinfo=UTC)  # 01:30 EDT
    assert opening.closes_at == datetime(2027, 11, 7, 8, tzinfo=UTC)  # 03:00 EST


def test_a_freeze_covers_whole_local_days_across_a_dst_change():
    freeze = Freeze(date(2027, 3, 28), date(2027, 3, 28), "Clock change day")
    schedule = UpgradeSchedule([], [freeze], timezone="Europe/Berlin")
    assert schedule.opening(berlin(2027, 3, 28, 0)).at == berlin(2027, 3, 29, 0)
    assert schedule.opening(berlin(2027, 3, 27, 23, 59)).is_open


# --- starting after a wait ------------------------------------------------------------------------------


def test_a_task_resuming_late_still_starts_within_the_grace_unless_a_freeze_was_added():
    short = UpgradeSchedule([Window.parse(["sat"], "22:00", "22:01")], timezone="UTC")
    opens = datetime(2027, 1, 9, 22, tzinfo=UTC)
    late = opens + timedelta(seconds=90)  # the one-minute window closed 30 s ago
    assert not short.opening(late).is_open
    assert short.may_start(late, awaited=opens, grace=timedelta(minutes=2))
    assert not short.may_start(opens + START_GRACE + timedelta(seconds=1), awaited=opens)
    assert not short.may_start(late, awaited=None, grace=timedelta(minutes=2))
    frozen = short.with_freezes([Freeze(date(2027, 1, 9), date(2027, 1, 9), "Declared meanwhile")])
    assert not frozen.may_start(late, awaited=opens, grace=timedelta(minutes=2))


# --- rehearsal -------------------------------------------------------------------------------------------


def test_rehearsal_compresses_the_week_like_every_budget():
    schedule = UpgradeSchedule([SATURDAY_NIGHT], timezone="UTC")
    anchor = datetime(2027, 1, 6, 12, tzinfo=UTC)  # Wednesday noon
    compressed = CompressedSchedule(schedule, anchor, seconds_per_business_day=2.0)
    opening = compressed.opening(anchor)
    # 3 days and 10 hours of schedule time = 3 10/24 rehearsal days of 2 s each
    # (rounded up to the microsecond, so the schedule never reads it before the opening)
    expected = timedelta(seconds=2 * (3 + 10 / 24))
    assert timedelta(0) <= opening.at - anchor - expected <= timedelta(microseconds=1)
    assert opening.describe().startswith("the upgrade waits until Sat 2027-01-09 22:00")
    assert compressed.may_start(opening.at, awaited=opening.at)
    assert compressed.may_start(opening.at + timedelta(seconds=5), awaited=opening.at)  # latency


def test_run_schedules_honour_windows_in_real_runs_and_in_rehearsals_only_when_asked():
    globex = load_customer_config(CUSTOMERS / "globex.yaml")
    anchor = datetime(2027, 1, 6, 12, tzinfo=UTC)
    real = run_schedules(globex, anchor=anchor, seconds_per_business_day=None, rehearse_windows=False)
    assert set(real) == {"dev", "uat", "prod"}  # the year-end freeze holds every environment
    assert real["prod"].opening(anchor).waiting_for == "window"
    assert real["dev"].opening(anchor).is_open
    ignored = run_schedules(globex, anchor=anchor, seconds_per_business_day=2.0, rehearse_windows=False)
    assert ignored == {}
    rehearsed = run_schedules(globex, anchor=anchor, seconds_per_business_day=2.0, rehearse_windows=True)
    assert isinstance(rehearsed["prod"], CompressedSchedule)


def test_freezes_declared_in_the_file_during_a_run_hold_the_snapshot_back():
    globex = load_customer_config(CUSTOMERS / "globex.yaml")
    freeze = type(globex.change_freezes[0])(start=date(2027, 1, 8), end=date(2027, 1, 10), reason="Audit")
    edited = globex.model_copy(update={"change_freezes": (*globex.change_freezes, freeze)})
    anchor = berlin(2027, 1, 6, 12)
    kept = run_schedules(globex, anchor=anchor, seconds_per_business_day=None, rehearse_windows=False)
    both = run_schedules(
        globex, anchor=anchor, seconds_per_business_day=None, rehearse_windows=False, freezes_from=edited
    )
    assert kept["prod"].opening(anchor).at == berlin(2027, 1, 8, 22)
    assert both["prod"].opening(anchor).at == berlin(2027, 1, 15, 22)


def test_schedule_for_names_the_scope_of_each_freeze():
    globex = load_customer_config(CUSTOMERS / "globex.yaml")
    scopes = {(f.reason, f.scope) for f in schedule_for(globex, "prod").freezes}
    assert ("Year-end change freeze", "all environments") in scopes
    assert ("Quarter-end closing in production", "prod") in scopes


@pytest.mark.parametrize(
    ("days", "start", "end", "message"),
    [
        (["sat"], "22:00", "22:00", "use 00:00-24:00"),
        (["sat"], "24:00", "02:00", "cannot start at 24:00"),
        (["someday"], "22:00", "02:00", "unknown weekday"),
    ],
)
def test_malformed_windows_are_refused(days, start, end, message):
    with pytest.raises(WindowError, match=message):
        Window.parse(days, start, end)


def test_naive_instants_are_refused():
    with pytest.raises(WindowError, match="timezone-aware"):
        UpgradeSchedule([SATURDAY_NIGHT]).opening(datetime(2027, 1, 6, 12))


# --- properties -----------------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
minutes = st.integers(0, 24 * 60 - 1)


@st.composite
def windows(draw: st.DrawFn) -> Window:
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    start = draw(minutes)
    end = draw(st.one_of(st.none(), minutes.filter(lambda m: m != start)))
    return Window(days, time(start // 60, start % 60), None if end is None else time(end // 60, end % 60))


@st.composite
def freezes(draw: st.DrawFn) -> Freeze:
    first = draw(st.dates(date(2026, 6, 1), date(2028, 6, 1)))
    return Freeze(first, first + timedelta(days=draw(st.integers(0, 40))), "frozen")


@st.composite
def schedules(draw: st.DrawFn) -> UpgradeSchedule:
    return UpgradeSchedule(
        draw(st.lists(windows(), max_size=4)),
        draw(st.lists(freezes(), max_size=3)),
        draw(st.sampled_from(ZONES)),
    )


instants = st.datetimes(datetime(2026, 9, 1), datetime(2027, 12, 31), timezones=st.just(UTC))


def _in_a_window(schedule: UpgradeSchedule, moment: datetime) -> bool:
    """Oracle by wall clock: the local time lies in a window opened today or (overnight) yesterday."""
    local = moment.astimezone(schedule.zone)
    clock = local.time().replace(tzinfo=None)
    for window in schedule.windows:
        end = window.end or time.max
        if window.overnight:
            if (local.weekday() in window.days and clock >= window.start) or (
                (local.weekday() - 1) % 7 in window.days and clock < end
            ):
                return True
        elif local.weekday() in window.days and window.start <= clock < end:
            return True
    return not schedule.windows


def _frozen(schedule: UpgradeSchedule, moment: datetime) -> bool:
    day = moment.astimezone(schedule.zone).date()
    return any(f.first_day <= day <= f.last_day for f in schedule.freezes)


@settings(deadline=None, max_examples=150)
@given(schedules(), instants)
def test_the_opening_is_allowed_and_nothing_earlier_is(schedule, moment):
    try:
        opening = schedule.opening(moment)
    except NoUpgradeWindowError:
        return
    assert opening.at >= moment
    assert opening.is_open == (opening.at == moment)
    assert not _frozen(schedule, opening.at)
    assert _in_a_window(schedule, opening.at) or _in_a_window(schedule, opening.at - timedelta(hours=3))
    if opening.closes_at is not None:
        assert opening.closes_at > opening.at
    # the same answer from any instant between asking and opening (no earlier opening was skipped)
    for fraction in (0.25, 0.5, 0.99):
        between = moment + (opening.at - moment) * fraction
        assert schedule.opening(between).at == opening.at


@settings(deadline=None, max_examples=150)
@given(schedules().filter(lambda s: s.zone.key in ("UTC", "Asia/Kolkata")), instants)
def test_without_dst_the_schedule_agrees_with_the_wall_clock(schedule, moment):
    """In zones without DST the opening lies exactly on the wall-clock oracle."""
    allowed = _in_a_window(schedule, moment) and not _frozen(schedule, moment)
    assert schedule.opening(moment).is_open == allowed


@settings(deadline=None, max_examples=60)
@given(schedules(), instants, st.sampled_from([0.5, 2.0, 60.0]))
def test_a_compressed_opening_maps_back_onto_an_opening(schedule, moment, seconds):
    compressed = CompressedSchedule(schedule, moment, seconds)
    try:
        opening = compressed.opening(moment)
    except NoUpgradeWindowError:
        return
    assert opening.at >= moment
    assert compressed.may_start(opening.at, awaited=opening.at)
