"""Planned vs actual of one run: bars per activity in process order, misses, waits, forecast, who acts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from upgrade_history import customer_config, run_facts, window_wait

from managed_upgrade.process.model import Role
from managed_upgrade.views.rendering import render_page
from managed_upgrade.views.schedule import run_schedule

START = datetime(2027, 1, 11, 8, tzinfo=UTC)  # a Monday


def test_an_on_plan_run_has_one_row_per_activity_in_process_order_and_no_miss():
    now = START + timedelta(days=20)
    schedule = run_schedule(run_facts("acme", START, now), now)

    assert schedule is not None
    model = customer_config("acme").process_model()
    assert [row.key for row in schedule.rows] == [activity.key for activity in model.activities]
    assert schedule.misses == ()
    statuses = {row.status for row in schedule.rows}
    assert {"finished", "not_started"} <= statuses
    for row in schedule.rows:
        assert row.planned is not None and 0 <= row.planned.left <= 100
        if row.status == "finished":
            assert row.actual is not None and row.forecast is None and row.variance_days == 0
        if row.status == "not_started":
            assert row.actual is None and row.forecast is not None
    assert 0 < schedule.today.left < 100
    assert schedule.forecast_finish == schedule.planned_finish and schedule.variance_days == 0


def test_a_slipping_run_marks_the_budgets_that_ran_out_and_forecasts_a_later_finish():
    now = START + timedelta(days=30)
    schedule = run_schedule(run_facts("acme", START, now, slip=1.6), now)

    assert schedule is not None
    assert "respond_to_request" in schedule.misses
    missed_rows = [row for row in schedule.rows if row.miss is not None]
    assert missed_rows and all(row.unit_missed for row in missed_rows)
    for row in missed_rows:  # the marker sits inside the actual bar of the activity running then
        assert row.actual is not None
        assert row.actual.left <= row.miss.left <= row.actual.left + row.actual.width + 0.01
    assert schedule.forecast_finish > schedule.planned_finish and schedule.variance_days > 0
    assert schedule.late_for_deadline is (schedule.forecast_finish > schedule.deadline.at)


def test_a_customer_sign_off_shows_its_wait_and_the_customer_must_act():
    config = customer_config("acme")
    facts = run_facts("acme", START, START + timedelta(days=365))
    sign_off = next(row for row in facts.plan if row["activity_key"] == "dev.customer_sign_off")
    now = sign_off["planned_start"] + timedelta(hours=30)
    schedule = run_schedule(run_facts("acme", START, now), now)

    assert schedule is not None
    row = next(row for row in schedule.rows if row.key == "dev.customer_sign_off")
    assert row.status == "waiting_on_customer"
    assert len(row.waits) == 1 and row.waits[0].open_ended
    (action,) = schedule.actions
    assert action.activity_key == "dev.customer_sign_off" and action.role == Role.CUSTOMER
    assert action.people == tuple(contact.name for contact in config.contacts.customer)
    assert action.since == sign_off["planned_start"] and action.waited == timedelta(hours=30)
    assert action.waited_business_days > 0


def test_a_gate_waiting_on_the_consultant_names_the_assigned_users():
    facts = run_facts("acme", START, START + timedelta(days=365))
    gate = next(row for row in facts.plan if row["activity_key"] == "initiation.respond_to_request")
    now = gate["planned_start"] + timedelta(hours=2)
    schedule = run_schedule(run_facts("acme", START, now), now)

    assert schedule is not None
    (action,) = schedule.actions
    assert action.role == Role.CONSULTANT and action.people == customer_config("acme").users.consultant
    assert action.sla == "running" and action.due_at is not None


def test_a_rehearsal_run_is_drawn_on_its_compressed_clock():
    now = START + timedelta(seconds=40)
    facts = run_facts("acme", START, now, conf={"seconds_per_business_day": 2, "deadline": "2027-03-31"})
    schedule = run_schedule(facts, now)

    assert schedule is not None
    assert schedule.rehearsal_seconds_per_day == 2
    assert schedule.ceiling.at == START + timedelta(seconds=50 * 2)
    assert schedule.planned_finish - START < timedelta(minutes=5)
    assert all(tick.label[0] in "+-" and ":" in tick.label for tick in schedule.ticks)


def test_a_stopped_run_asks_nobody_to_act():
    whole = run_facts("acme", START, START + timedelta(days=365))
    gate = next(row for row in whole.plan if row["activity_key"] == "initiation.respond_to_request")
    now = gate["planned_start"] + timedelta(hours=2)
    running = run_schedule(run_facts("acme", START, now), now)
    stop = {"task_id": None, "how": "run_marked_failed", "stopped_at": now, "reason": "customer cancelled"}
    stopped = run_schedule(run_facts("acme", START, now, stops=(stop,)), now)

    assert running is not None and running.actions
    assert stopped is not None and stopped.status == "stopped" and stopped.actions == ()


def test_a_run_without_its_config_snapshot_has_no_schedule_yet():
    facts = run_facts("acme", START, START, with_config=False)

    assert run_schedule(facts, START) is None
    assert facts.config_problem is not None and "first task" in facts.config_problem


# --- waits for an upgrade window ------------------------------------------------------------------

BACKUP, UPGRADE, SIGN_OFF = "prod.backup_environment", "prod.upgrade_environment", "uat.customer_sign_off"


def _globex_planned(key: str, start: datetime = START) -> dict:
    facts = run_facts("globex", start, start + timedelta(days=365), template="globex")
    return next(row for row in facts.plan if row["activity_key"] == key)


def _globex_waiting(now: datetime, until: datetime, reason: str = "outside the upgrade windows", **kw):
    """globex's run at ``now``, its prod backup waiting for its window since the UAT sign-off."""
    since = _globex_planned(SIGN_OFF)["planned_finish"]
    return run_facts(
        "globex", START, now, template="globex", extra_events=window_wait(BACKUP, since, until, reason), **kw
    )


def test_an_on_plan_run_with_upgrade_windows_forecasts_its_planned_finish():
    """The forecast honours the windows as the baseline did: no phantom gain before the wait."""
    now = _globex_planned(SIGN_OFF)["planned_start"] + timedelta(hours=1)
    schedule = run_schedule(run_facts("globex", START, now, template="globex"), now)

    assert schedule is not None
    assert schedule.forecast_finish == schedule.planned_finish and schedule.variance_days == 0
    backup = next(row for row in schedule.rows if row.key == BACKUP)
    assert backup.forecast is not None and backup.forecast.start == _globex_planned(BACKUP)["planned_start"]


def test_a_backup_waiting_for_its_window_says_until_when_and_why_and_nobody_must_act():
    opening = _globex_planned(BACKUP)["planned_start"]
    since = _globex_planned(SIGN_OFF)["planned_finish"]
    now = since + timedelta(hours=2)
    schedule = run_schedule(_globex_waiting(now, opening), now)

    assert schedule is not None
    row = next(row for row in schedule.rows if row.key == BACKUP)
    assert row.status == "waiting_for_window" and row.status_label == "waiting for window"
    assert row.window is not None
    assert (row.window.since, row.window.until, row.window.reason) == (
        since,
        opening,
        "outside the upgrade windows",
    )
    (span,) = row.window_waits
    assert (span.start, span.end, span.open_ended) == (since, opening, False)
    assert row.forecast is not None and row.forecast.start == opening
    assert schedule.window_waits == (row.window,) and row.window.title == "Back up Prod Environment"
    assert schedule.actions == ()  # scheduled: nobody's delay, nobody must act
    assert schedule.forecast_finish == schedule.planned_finish and schedule.variance_days == 0
    upgrade = next(row for row in schedule.rows if row.key == UPGRADE)
    assert upgrade.status == "not_started" and upgrade.window is None

    html = render_page("schedule", ui_root="", app_root="/managed-upgrade", schedule=schedule)
    assert "waiting for window" in html
    assert "window opens 2027-03-12 22:00: outside the upgrade windows" in html  # Europe/Berlin
    assert "Nobody must act: Back up Prod Environment waits for its upgrade window" in html
    assert "Nobody: no gate or customer wait is open." not in html


def test_an_opening_moved_by_a_freeze_moves_the_forecast_and_shows_the_freeze():
    later = _globex_planned(BACKUP)["planned_start"] + timedelta(days=7)
    reason = "change freeze 'Audit' (2027-03-12 to 2027-03-14, prod) until 2027-03-14"
    now = _globex_planned(SIGN_OFF)["planned_finish"] + timedelta(hours=2)
    schedule = run_schedule(_globex_waiting(now, later, reason), now)

    assert schedule is not None
    row = next(row for row in schedule.rows if row.key == BACKUP)
    assert row.window is not None and row.window.until == later and row.window.reason == reason
    assert row.forecast is not None and row.forecast.start == later
    assert schedule.forecast_finish > schedule.planned_finish and schedule.variance_days > 0


def test_once_the_window_opened_the_activity_runs_and_its_wait_stays_drawn():
    opening = _globex_planned(BACKUP)["planned_start"]
    now = opening + timedelta(minutes=10)
    schedule = run_schedule(_globex_waiting(now, opening), now)

    assert schedule is not None
    row = next(row for row in schedule.rows if row.key == BACKUP)
    assert row.status == "running" and row.window is None and schedule.window_waits == ()
    (span,) = row.window_waits
    assert span.end == opening and not span.open_ended


def test_a_stopped_run_shows_no_window_wait():
    opening = _globex_planned(BACKUP)["planned_start"]
    now = _globex_planned(SIGN_OFF)["planned_finish"] + timedelta(hours=2)
    stop = {"task_id": None, "how": "run_marked_failed", "stopped_at": now, "reason": "cancelled"}
    schedule = run_schedule(_globex_waiting(now, opening, stops=(stop,)), now)

    assert schedule is not None and schedule.window_waits == ()
    assert all(row.status != "waiting_for_window" for row in schedule.rows)


def test_a_rehearsal_that_rehearses_windows_forecasts_them_like_its_plan():
    conf = {"seconds_per_business_day": 2, "deadline": "2027-03-31", "rehearse_windows": True}
    whole = run_facts("globex", START, START + timedelta(hours=1), template="globex", conf=conf)
    backup = next(row for row in whole.plan if row["activity_key"] == BACKUP)
    sign_off = next(row for row in whole.plan if row["activity_key"] == SIGN_OFF)
    assert backup["planned_start"] > sign_off["planned_finish"]  # the baseline waits (compressed)
    now = sign_off["planned_start"]
    schedule = run_schedule(run_facts("globex", START, now, template="globex", conf=conf), now)

    assert schedule is not None
    assert schedule.forecast_finish == schedule.planned_finish
