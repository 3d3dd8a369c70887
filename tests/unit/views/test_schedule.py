"""Planned vs actual of one run: bars per activity in process order, misses, waits, forecast, who acts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from upgrade_history import customer_config, run_facts

from managed_upgrade.process.model import Role
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
