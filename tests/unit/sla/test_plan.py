"""The run's plan: concrete schedules for the example customers, budget rules, re-forecast and variance."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from managed_upgrade.config import ChangeFreeze, load_customer_config
from managed_upgrade.process.model import load_process_model
from managed_upgrade.sla.calendar import BusinessCalendar, RehearsalClock
from managed_upgrade.sla.plan import (
    DEFAULT_CUSTOMER_WAIT_DAYS,
    PlanError,
    make_customer_plan,
    make_plan,
    member_budget_days,
    reforecast,
)
from managed_upgrade.sla.windows import UpgradeSchedule

CUSTOMERS = Path(__file__).resolve().parents[3] / "include" / "customers"
MONDAY_9 = datetime(2027, 1, 4, 9, tzinfo=UTC)  # Monday
UTC_CALENDAR = BusinessCalendar()  # acme's calendar: UTC, Sat/Sun weekend, no holidays
BERLIN = ZoneInfo("Europe/Berlin")
LEDGER_COLUMNS = {
    "dag_id",
    "run_id",
    "activity_key",
    "budget_unit",
    "owner",
    "planned_start",
    "planned_finish",
    "budget_days",
}


@pytest.fixture(scope="module")
def model():
    return load_process_model()


@pytest.fixture(scope="module")
def acme_plan():
    return make_customer_plan(load_customer_config(CUSTOMERS / "acme.yaml"), MONDAY_9)


def _shifted(clock, instant, days):
    return clock.add_business_days(instant, days)


# --- the baseline plan ---------------------------------------------------------------------------------


def test_acme_respond_to_request_is_due_the_next_business_morning(acme_plan):
    respond = acme_plan.activity("initiation.respond_to_request")
    assert respond.planned_start == MONDAY_9
    assert respond.planned_finish == datetime(2027, 1, 5, 9, tzinfo=UTC)
    assert respond.owner == "consultant"
    assert respond.budget_unit == "respond_to_request"
    assert respond.budget_days == 1


def test_acme_activities_without_budget_take_no_time(acme_plan):
    for key in (
        "initiation.create_request_case",
        "closure.verify_target_versions",
        "closure.send_completion",
    ):
        activity = acme_plan.activity(key)
        assert activity.budget_days is None
        assert activity.budget_unit is None
        assert activity.planned_start == activity.planned_finish
    assert acme_plan.activity("initiation.create_request_case").planned_finish == MONDAY_9


def test_acme_whole_run_is_the_sum_along_the_critical_path(acme_plan):
    path_days = sum(acme_plan.activity(key).budget_days or 0 for key in acme_plan.critical_path)
    # 1 + 1 + 4 + 4 + 3 + (12 + 5) + (8 + 5) + (8 + 5): seed budgets plus three 5-day customer sign-offs.
    assert path_days == 56
    assert acme_plan.planned_business_days == 56
    assert acme_plan.planned_finish == datetime(2027, 3, 23, 9, tzinfo=UTC)  # 56 business days = 11.2 weeks
    assert acme_plan.critical_path[0] == "initiation.create_request_case"
    assert acme_plan.critical_path[-1] == "closure.send_completion"
    assert acme_plan.forecast_finish == acme_plan.planned_finish
    assert acme_plan.variance_days == 0


def test_acme_friday_crossing_skips_the_weekend(acme_plan):
    # inventory (2 days of the 4-day analyse group) starts Wednesday 09:00 and ends Friday 09:00;
    # the questionnaire analysis (2 more) runs over the weekend to Tuesday 09:00.
    inventory = acme_plan.activity("initiation.inventory_dev_system")
    analyse = acme_plan.activity("initiation.analyse_questionnaire_and_system")
    assert inventory.planned_finish == datetime(2027, 1, 8, 9, tzinfo=UTC)
    assert analyse.planned_finish == datetime(2027, 1, 12, 9, tzinfo=UTC)


def test_group_days_are_split_in_whole_days_over_the_consultant_members(model):
    days = member_budget_days(model, customer_wait_days=5)
    development = [days[key] for key in model.budget_unit("development").activity_keys]
    assert development == [2, 2, 2, 2, 2, 2, 5]  # six consultant members share 12; sign-off waits 5
    uat = [days[key] for key in model.budget_unit("uat").activity_keys]
    assert uat == [2, 1, 1, 1, 1, 1, 1, 5]  # 8 over 7: the first member takes the remainder
    assert [days[key] for key in model.budget_unit("upgrade_preparation").activity_keys] == [2, 1]


def test_group_window_is_its_days_plus_the_customer_wait(acme_plan):
    for unit in acme_plan.budget_units:
        span = UTC_CALENDAR.business_days_between(unit.planned_start, unit.planned_finish)
        assert span == unit.days + unit.customer_wait_days, unit.id
    development = acme_plan.budget_unit("development")
    assert development.customer_wait_days == DEFAULT_CUSTOMER_WAIT_DAYS
    assert development.planned_start == datetime(2027, 1, 21, 9, tzinfo=UTC)
    # The consultant's 12 days end at hand-over; the customer's sign-off follows on its own budget.
    hand_over = acme_plan.activity("dev.hand_over_environment")
    assert hand_over.planned_finish == UTC_CALENDAR.add_business_days(development.planned_start, 12)
    assert development.planned_finish == acme_plan.activity("dev.customer_sign_off").planned_finish


def test_customer_wait_uses_the_configured_reminder_budget(model):
    short = make_plan(model, UTC_CALENDAR, MONDAY_9, customer_wait_days=3)
    sign_off = short.activity("dev.customer_sign_off")
    assert sign_off.waits_on_customer
    assert sign_off.budget_unit == "development"
    assert sign_off.budget_days == 3
    assert short.planned_business_days == 56 - 3 * 2


def test_globex_bavarian_calendar_skips_epiphany_and_its_overrides_apply():
    globex = load_customer_config(CUSTOMERS / "globex.yaml")
    start = datetime(2027, 1, 4, 9, tzinfo=BERLIN)  # Monday before Epiphany (Wednesday 6 January)
    plan = make_customer_plan(globex, start)
    assert plan.start == start.astimezone(UTC)
    respond = plan.activity("initiation.respond_to_request")
    assert respond.planned_finish == datetime(2027, 1, 5, 9, tzinfo=BERLIN)
    acknowledge = plan.activity("initiation.acknowledge_request_formally")
    assert acknowledge.planned_finish == datetime(2027, 1, 7, 9, tzinfo=BERLIN)  # 6 Jan is closed
    assert plan.budget_unit("development").days == 15
    assert plan.activity("dev.customer_sign_off").budget_days == 3  # globex reminder_days
    calendar = BusinessCalendar.from_settings(globex.calendar)
    # Prod's backup waits for globex's weekend maintenance window; the upgrade follows it there.
    window_wait = plan.activity("prod.backup_environment").scheduled_wait_days
    assert window_wait > 0 and plan.activity("prod.upgrade_environment").scheduled_wait_days == 0
    assert calendar.business_days_between(plan.start, plan.planned_finish) == pytest.approx(
        1 + 1 + 4 + 4 + 3 + 15 + 3 + 8 + 3 + 8 + 3 + window_wait, abs=1e-9
    )
    # Rosenmontag (8 Feb 2027) is an extra closed day of globex; no activity ends on it.
    assert all(a.planned_finish.astimezone(BERLIN).date() != date(2027, 2, 8) for a in plan.activities)


def test_a_plan_started_on_any_day_runs_on_the_customers_business_days(fixed_today):
    """Triggered "today" (each fixed case): the run starts then, budgets count only business time."""
    acme = load_customer_config(CUSTOMERS / "acme.yaml")
    config = acme.model_copy(
        update={"calendar": type(acme.calendar).model_validate(fixed_today.calendar_settings)}
    )
    calendar = fixed_today.calendar
    plan = make_customer_plan(config, fixed_today.now)
    assert plan.start == fixed_today.now
    assert plan.activity("initiation.create_request_case").planned_finish == fixed_today.now
    respond = plan.activity("initiation.respond_to_request")
    assert (respond.planned_start, respond.planned_finish) == (
        fixed_today.now,
        fixed_today.one_business_day_later,
    )
    assert plan.planned_business_days == 56
    assert calendar.business_days_between(fixed_today.now, plan.planned_finish) == 56
    for activity in plan.activities:
        if not activity.budget_days:
            continue
        finish = activity.planned_finish.astimezone(calendar.timezone)
        on_business_time = calendar.is_business_day(finish.date())
        at_a_business_days_end = finish.time() == time() and calendar.is_business_day(
            finish.date() - timedelta(days=1)
        )
        assert on_business_time or at_a_business_days_end, (activity.key, finish)
        span = calendar.business_days_between(activity.planned_start, activity.planned_finish)
        assert span == pytest.approx(activity.budget_days, abs=1e-9), activity.key


def test_override_of_development_moves_everything_after_dev_and_nothing_before(model):
    base = make_plan(model, UTC_CALENDAR, MONDAY_9)
    longer = make_plan(model.with_overrides({"development": 15}), UTC_CALENDAR, MONDAY_9)
    dev_keys = set(model.budget_unit("development").activity_keys)
    dev_start = base.budget_unit("development").planned_start
    for before, after in zip(base.activities, longer.activities, strict=True):
        if before.planned_finish <= dev_start:
            assert after.planned_finish == before.planned_finish, before.key
        elif before.key not in dev_keys:
            assert after.planned_start == _shifted(UTC_CALENDAR, before.planned_start, 3), before.key
            assert after.planned_finish == _shifted(UTC_CALENDAR, before.planned_finish, 3), before.key
    assert longer.planned_business_days == base.planned_business_days + 3


def test_rehearsal_clock_compresses_each_business_day_to_seconds(model):
    clock = RehearsalClock(10)
    plan = make_plan(model, clock, MONDAY_9)
    assert plan.planned_finish == MONDAY_9 + timedelta(seconds=56 * 10)
    assert plan.activity("initiation.respond_to_request").planned_finish == MONDAY_9 + timedelta(seconds=10)


def test_rows_match_the_ledger_table(acme_plan):
    rows = acme_plan.to_rows("managed_upgrade__acme", "manual__1")
    assert len(rows) == len(acme_plan.activities) == 34
    assert all(set(row) == LEDGER_COLUMNS for row in rows)
    respond = next(row for row in rows if row["activity_key"] == "initiation.respond_to_request")
    assert respond == {
        "dag_id": "managed_upgrade__acme",
        "run_id": "manual__1",
        "activity_key": "initiation.respond_to_request",
        "budget_unit": "respond_to_request",
        "owner": "consultant",
        "planned_start": MONDAY_9,
        "planned_finish": datetime(2027, 1, 5, 9, tzinfo=UTC),
        "budget_days": 1.0,
    }
    assert (
        next(row for row in rows if row["activity_key"] == "closure.send_completion")["budget_days"] is None
    )


# --- re-forecast and variance ------------------------------------------------------------------------


def test_late_respond_shifts_everything_downstream_by_the_lateness(acme_plan):
    late_finish = datetime(2027, 1, 6, 9, tzinfo=UTC)  # planned Tuesday 09:00; done Wednesday 09:00
    forecast = reforecast(
        acme_plan,
        {
            "initiation.create_request_case": (MONDAY_9, MONDAY_9),
            "initiation.respond_to_request": (MONDAY_9, late_finish),
        },
        now=late_finish,
    )
    respond = forecast.activity("initiation.respond_to_request")
    assert respond.progress == "finished"
    assert respond.forecast_finish == late_finish
    assert respond.variance_days == 1
    downstream = [a for a in forecast.activities if a.planned_start >= datetime(2027, 1, 5, 9, tzinfo=UTC)]
    assert len(downstream) == 32
    for activity in downstream:
        if activity.key == "initiation.respond_to_request":
            continue
        assert activity.progress == "not_started"
        assert activity.forecast_start == _shifted(UTC_CALENDAR, activity.planned_start, 1), activity.key
        assert activity.forecast_finish == _shifted(UTC_CALENDAR, activity.planned_finish, 1), activity.key
        assert activity.variance_days == 1, activity.key
    assert forecast.variance_days == 1
    assert forecast.budget_unit("prod").variance_days == 1
    # The baseline stays what was promised.
    assert forecast.planned_finish == acme_plan.planned_finish
    assert forecast.to_rows("d", "r") == acme_plan.to_rows("d", "r")


def test_early_finish_pulls_the_forecast_in_with_negative_variance(acme_plan):
    early = datetime(2027, 1, 4, 21, tzinfo=UTC)  # half a business day early
    forecast = reforecast(
        acme_plan,
        {
            "initiation.create_request_case": (MONDAY_9, MONDAY_9),
            "initiation.respond_to_request": (MONDAY_9, early),
        },
        now=early,
    )
    assert forecast.activity("initiation.respond_to_request").variance_days == -0.5
    assert forecast.variance_days == -0.5
    assert forecast.forecast_finish == _shifted(UTC_CALENDAR, acme_plan.planned_finish, -0.5)


def test_running_activity_past_its_budget_finishes_no_earlier_than_now(acme_plan):
    tuesday_9 = datetime(2027, 1, 5, 9, tzinfo=UTC)
    thursday_9 = datetime(2027, 1, 7, 9, tzinfo=UTC)  # acknowledge was due Wednesday 09:00
    forecast = reforecast(
        acme_plan,
        {
            "initiation.create_request_case": (MONDAY_9, MONDAY_9),
            "initiation.respond_to_request": (MONDAY_9, tuesday_9),
            "initiation.acknowledge_request_formally": (tuesday_9, None),
        },
        now=thursday_9,
    )
    acknowledge = forecast.activity("initiation.acknowledge_request_formally")
    assert acknowledge.progress == "running"
    assert acknowledge.forecast_finish == thursday_9
    assert acknowledge.variance_days == 1
    assert forecast.activity("initiation.respond_to_request").variance_days == 0
    assert forecast.variance_days == 1


def test_running_activity_within_budget_keeps_its_duration_from_its_actual_start(acme_plan):
    started_late = datetime(2027, 1, 5, 15, tzinfo=UTC)  # respond done at 09:00, acknowledge began 15:00
    forecast = reforecast(
        acme_plan,
        {
            "initiation.create_request_case": (MONDAY_9, MONDAY_9),
            "initiation.respond_to_request": (MONDAY_9, datetime(2027, 1, 5, 9, tzinfo=UTC)),
            "initiation.acknowledge_request_formally": (started_late, None),
        },
        now=datetime(2027, 1, 5, 16, tzinfo=UTC),
    )
    assert forecast.activity("initiation.acknowledge_request_formally").forecast_finish == datetime(
        2027, 1, 6, 15, tzinfo=UTC
    )
    assert forecast.variance_days == 0.25


def test_ready_activity_not_started_yet_starts_no_earlier_than_now(acme_plan):
    now = datetime(2027, 1, 4, 15, tzinfo=UTC)  # request case done at 09:00, nobody picked it up yet
    forecast = reforecast(acme_plan, {"initiation.create_request_case": (MONDAY_9, MONDAY_9)}, now=now)
    respond = forecast.activity("initiation.respond_to_request")
    assert respond.forecast_start == now
    assert respond.forecast_finish == datetime(2027, 1, 5, 15, tzinfo=UTC)
    assert forecast.variance_days == 0.25


def test_reforecast_of_a_reforecast_keeps_the_original_baseline(acme_plan):
    first = reforecast(acme_plan, {}, now=datetime(2027, 1, 5, 9, tzinfo=UTC))
    second = reforecast(first, {}, now=datetime(2027, 1, 6, 9, tzinfo=UTC))
    assert first.variance_days == 1
    assert second.variance_days == 2
    assert second.planned_finish == acme_plan.planned_finish


# --- bad input -----------------------------------------------------------------------------------------


def test_naive_start_is_refused(model):
    with pytest.raises(PlanError, match=r"start=.*timezone-aware"):
        make_plan(model, UTC_CALENDAR, datetime(2027, 1, 4, 9))


def test_negative_customer_wait_is_refused(model):
    with pytest.raises(PlanError, match="customer_wait_days=-1"):
        make_plan(model, UTC_CALENDAR, MONDAY_9, customer_wait_days=-1)


def test_unknown_activity_in_actuals_is_refused(acme_plan):
    with pytest.raises(PlanError, match=r"unknown activity 'dev\.nope'"):
        reforecast(acme_plan, {"dev.nope": (MONDAY_9, None)}, now=MONDAY_9)


def test_actual_finish_before_start_is_refused(acme_plan):
    with pytest.raises(
        PlanError, match=r"actuals\['initiation.respond_to_request'\]: finish .* before start"
    ):
        reforecast(
            acme_plan,
            {"initiation.respond_to_request": (MONDAY_9, MONDAY_9 - timedelta(hours=1))},
            now=MONDAY_9,
        )


def test_naive_now_is_refused(acme_plan):
    with pytest.raises(PlanError, match="now="):
        reforecast(acme_plan, {}, now=datetime(2027, 1, 4, 9))


# --- upgrade windows ------------------------------------------------------------------------------------


def _globex_prod_only():
    """globex with only its prod windows and freezes (no customer-wide freeze)."""
    return load_customer_config(CUSTOMERS / "globex.yaml").model_copy(update={"change_freezes": ()})


def _is_an_opening(instant: datetime) -> bool:
    local = instant.astimezone(BERLIN)
    opening_days = {4: time(22), 5: time(22), 6: time(8)}  # fri/sat 22:00, sun 08:00
    return local.weekday() in opening_days and local.time() == opening_days[local.weekday()]


def test_prod_backup_starts_at_its_next_window_the_upgrade_right_after_and_everything_downstream_moves():
    globex = _globex_prod_only()
    start = datetime(2027, 1, 4, 9, tzinfo=BERLIN)
    plan = make_customer_plan(globex, start)
    free = make_customer_plan(globex, start, rehearse_windows=True)
    assert free.planned_finish == plan.planned_finish  # rehearse_windows changes nothing in a real run
    sign_off = plan.activity("uat.customer_sign_off")
    backup = plan.activity("prod.backup_environment")
    upgrade = plan.activity("prod.upgrade_environment")
    assert backup.planned_start > sign_off.planned_finish and _is_an_opening(backup.planned_start)
    assert backup.scheduled_wait_days == pytest.approx(
        plan.clock.business_days_between(sign_off.planned_finish, backup.planned_start)
    )
    assert backup.window.startswith("the backup waits until ")
    assert "outside the upgrade windows" in backup.window
    # the upgrade shares its backup's window: no second wait for the backup's budget to pass
    assert upgrade.planned_start == backup.planned_finish
    assert upgrade.scheduled_wait_days == 0 and upgrade.window == ""
    for stage in ("dev", "uat"):
        for key in (f"{stage}.backup_environment", f"{stage}.upgrade_environment"):
            assert plan.activity(key).scheduled_wait_days == 0 and plan.activity(key).window == ""
    reapply = plan.activity("prod.reapply_settings")
    assert reapply.planned_start == upgrade.planned_finish


def test_a_freeze_over_the_planned_window_pushes_the_backup_and_the_upgrade_past_it():
    globex = _globex_prod_only()
    start = datetime(2027, 1, 4, 9, tzinfo=BERLIN)
    unfrozen = make_customer_plan(globex, start).activity("prod.backup_environment")
    first_day = unfrozen.planned_start.astimezone(BERLIN).date() - timedelta(days=3)
    frozen_config = globex.model_copy(
        update={
            "change_freezes": (
                ChangeFreeze(start=first_day, end=first_day + timedelta(days=20), reason="Audit"),
            )
        }
    )
    plan = make_customer_plan(frozen_config, start)
    backup = plan.activity("prod.backup_environment")
    assert backup.planned_start.astimezone(BERLIN).date() > first_day + timedelta(days=20)
    assert "change freeze 'Audit'" in backup.window
    assert plan.activity("prod.upgrade_environment").planned_start == backup.planned_finish


def test_a_rehearsal_ignores_windows_unless_asked_and_then_compresses_them():
    globex = _globex_prod_only()
    start = datetime(2027, 1, 4, 9, tzinfo=UTC)
    ignored = make_customer_plan(globex, start, seconds_per_business_day=2.0)
    assert ignored.activity("prod.backup_environment").scheduled_wait_days == 0
    rehearsed = make_customer_plan(globex, start, seconds_per_business_day=2.0, rehearse_windows=True)
    wait = rehearsed.activity("prod.backup_environment").scheduled_wait_days
    assert 0 < wait < 7  # rehearsal business days: at most a (compressed) week
    assert rehearsed.activity("prod.upgrade_environment").scheduled_wait_days == 0
    assert rehearsed.planned_finish > ignored.planned_finish


def _done_until(plan, key):
    """Actuals: everything planned to finish before ``key`` starts finished on plan."""
    before = plan.activity(key).planned_start
    return {a.key: (a.planned_start, a.planned_finish) for a in plan.activities if a.planned_finish <= before}


def test_reforecast_a_backup_that_ran_past_its_window_makes_the_upgrade_wait_for_the_next():
    globex = _globex_prod_only()
    start = datetime(2027, 1, 4, 9, tzinfo=BERLIN)
    plan = make_customer_plan(globex, start)
    backup = plan.activity("prod.backup_environment")
    # The backup started at the opening but finished a week late, on a Monday 09:00: the window it
    # started in has closed, so the upgrade waits for the next one.
    week_later = (backup.planned_start + timedelta(days=7)).astimezone(BERLIN)
    late = week_later.replace(hour=9, minute=0) - timedelta(days=week_later.weekday())
    actuals = _done_until(plan, "prod.backup_environment")
    actuals["prod.backup_environment"] = (backup.planned_start, late)
    forecast = reforecast(plan, actuals, now=late)
    moved = forecast.activity("prod.upgrade_environment")
    assert moved.forecast_start > late and moved.scheduled_wait_days > 0
    assert _is_an_opening(moved.forecast_start)
    assert moved.window.startswith("the upgrade waits until ")


def test_reforecast_a_backup_done_in_its_window_lets_the_upgrade_follow_at_once():
    globex = _globex_prod_only()
    plan = make_customer_plan(globex, datetime(2027, 1, 4, 9, tzinfo=BERLIN))
    backup = plan.activity("prod.backup_environment")
    done = backup.planned_start + timedelta(minutes=20)
    actuals = {**_done_until(plan, "prod.backup_environment"), backup.key: (backup.planned_start, done)}
    forecast = reforecast(plan, actuals, now=done + timedelta(minutes=1))
    upgrade = forecast.activity("prod.upgrade_environment")
    assert upgrade.forecast_start == done + timedelta(minutes=1) and upgrade.scheduled_wait_days == 0
    assert forecast.variance_days < 0  # ahead of the baseline, which gave the backup its budget


def test_reforecast_a_backup_not_started_yet_still_plans_it_at_the_opening_and_the_upgrade_after_it():
    globex = _globex_prod_only()
    plan = make_customer_plan(globex, datetime(2027, 1, 4, 9, tzinfo=BERLIN))
    backup = plan.activity("prod.backup_environment")
    now = plan.activity("uat.customer_sign_off").planned_finish + timedelta(hours=1)
    forecast = reforecast(plan, _done_until(plan, "prod.backup_environment"), now=now)
    assert forecast.activity(backup.key).forecast_start == backup.planned_start
    upgrade = forecast.activity("prod.upgrade_environment")
    assert upgrade.forecast_start == forecast.activity(backup.key).forecast_finish
    assert upgrade.scheduled_wait_days == 0 and forecast.variance_days == 0


def test_reforecast_an_activity_the_ledger_shows_waiting_starts_at_its_opening_and_says_why():
    globex = _globex_prod_only()
    plan = make_customer_plan(globex, datetime(2027, 1, 4, 9, tzinfo=BERLIN))
    backup = plan.activity("prod.backup_environment")
    now = backup.planned_start - timedelta(hours=5)
    # e.g. a freeze declared since the plan was made; the task's opening is trusted, even one the plan's
    # schedule would not give (a rehearsal's clock anchored a little differently): Tuesday 22:00, and
    # the upgrade follows the backup on Thursday 22:00, outside the plan's windows
    later = backup.planned_start + timedelta(days=4)
    actuals = {**_done_until(plan, backup.key), backup.key: (now - timedelta(hours=1), None)}
    why = "the backup waits until Fri: change freeze 'Audit'"
    forecast = reforecast(plan, actuals, now=now, waiting={backup.key: (later, why)})
    waiting = forecast.activity(backup.key)
    assert waiting.forecast_start == later and waiting.progress == "not_started"
    assert waiting.window == why and waiting.scheduled_wait_days > 0
    upgrade = forecast.activity("prod.upgrade_environment")
    assert upgrade.forecast_start == waiting.forecast_finish and upgrade.scheduled_wait_days == 0
    assert upgrade.forecast_start.astimezone(BERLIN).weekday() == 3
    with pytest.raises(PlanError, match=r"waiting: unknown activity 'prod\.nope'"):
        reforecast(plan, {}, now=now, waiting={"prod.nope": (later, why)})


def test_openings_for_an_unknown_activity_are_refused():
    with pytest.raises(PlanError, match=r"unknown activity 'prod\.nope'"):
        make_plan(load_process_model(), UTC_CALENDAR, MONDAY_9, openings={"prod.nope": UpgradeSchedule()})
