"""Planned versus actual: the baseline plan against the ledger's events, per budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from managed_upgrade.process.model import load_process_model
from managed_upgrade.sla.calendar import RehearsalClock
from managed_upgrade.sla.plan import make_plan
from managed_upgrade.sla.planned_vs_actual import planned_vs_actual

MODEL = load_process_model()
T0 = datetime(2027, 3, 1, 9, tzinfo=UTC)
SECONDS = 10.0
CLOCK = RehearsalClock(SECONDS)
RESPOND = "initiation.respond_to_request"
ACKNOWLEDGE = "initiation.acknowledge_request_formally"


def day(n: float) -> datetime:
    return T0 + timedelta(seconds=n * SECONDS)


def ev(key: str, event: str, at: datetime) -> dict:
    return {"activity_key": key, "event": event, "try_number": 1, "at": at, "detail": {}}


def report(events: list[dict], now: datetime) -> dict:
    plan = make_plan(MODEL, CLOCK, T0)
    return planned_vs_actual(MODEL, CLOCK, plan.to_rows("d", "r"), events, reminder_days=5, now=now)


def unit(result: dict, unit_id: str) -> dict:
    return next(item for item in result["units"] if item["budget_unit"] == unit_id)


def test_a_late_response_and_an_early_acknowledgement_show_their_variance_and_the_miss():
    events = [
        ev("initiation.create_request_case", "finished", day(0)),
        ev(RESPOND, "ready", day(0)),
        ev(RESPOND, "finished", day(1.5)),
        ev(ACKNOWLEDGE, "ready", day(1.5)),
        ev(ACKNOWLEDGE, "finished", day(1.75)),
    ]
    result = report(events, day(2))
    respond = unit(result, "respond_to_request")
    assert respond["planned_finish"] == day(1).isoformat()
    assert respond["actual_finish"] == day(1.5).isoformat()
    assert (respond["missed"], respond["overrun_days"], respond["variance_days"]) == (True, 0.5, 0.5)
    acknowledge = unit(result, "acknowledge_request_formally")
    assert acknowledge["planned_finish"] == day(2).isoformat()
    assert (acknowledge["missed"], acknowledge["variance_days"]) == (False, pytest.approx(-0.25))
    assert result["misses"] == ["respond_to_request"]
    assert result["actual_finish"] is None  # the run is not over
    assert (
        result["planned_finish"]
        == max(row["planned_finish"] for row in make_plan(MODEL, CLOCK, T0).to_rows("d", "r")).isoformat()
    )


def test_units_not_started_have_a_plan_and_no_actuals():
    development = unit(report([], day(0)), "development")
    assert development["planned_start"] is not None and development["planned_finish"] is not None
    assert (development["actual_start"], development["actual_finish"], development["variance_days"]) == (
        None,
        None,
        None,
    )
    assert development["missed"] is False


def test_on_any_day_the_report_counts_the_customers_business_days_up_to_now(fixed_today):
    """The run started 3 business days before "today" (each fixed case) on the customer's calendar:
    Respond to Request took 1.5 of its 1 day, Acknowledge has been running 1.5 days by now."""
    calendar, now = fixed_today.calendar, fixed_today.now
    start = calendar.add_business_days(now, -3)
    responded = calendar.add_business_days(start, 1.5)
    events = [
        ev("initiation.create_request_case", "finished", start),
        ev(RESPOND, "ready", start),
        ev(RESPOND, "finished", responded),
        ev(ACKNOWLEDGE, "ready", responded),
    ]
    plan = make_plan(MODEL, calendar, start)
    result = planned_vs_actual(MODEL, calendar, plan.to_rows("d", "r"), events, reminder_days=5, now=now)
    respond = unit(result, "respond_to_request")
    assert respond["planned_finish"] == calendar.add_business_days(start, 1).isoformat()
    assert (respond["consumed_days"], respond["overrun_days"], respond["variance_days"]) == (1.5, 0.5, 0.5)
    acknowledge = unit(result, "acknowledge_request_formally")
    assert (acknowledge["status"], acknowledge["consumed_days"]) == ("running", 1.5)
    assert (acknowledge["missed"], acknowledge["overrun_days"]) == (True, 0.5)
    assert result["misses"] == ["respond_to_request", "acknowledge_request_formally"]


def test_a_wait_for_the_upgrade_window_is_shown_apart_from_customer_waits():
    upgrade = "dev.upgrade_environment"
    events = [
        ev("dev.backup_environment", "ready", day(0)),
        ev("dev.backup_environment", "finished", day(1)),
        ev(upgrade, "ready", day(1)),
        {**ev(upgrade, "waiting_for_window", day(1)), "detail": {"until": day(4).isoformat()}},
    ]
    development = unit(report(events, day(5)), "development")
    assert development["scheduled_wait_days"] == 3.0
    assert development["customer_wait_days"] == 0.0
    assert development["consumed_days"] == 2.0
