"""The ICS feed of a customer's planned milestones parses back as RFC 5545 with stable event ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from icalendar import Calendar
from upgrade_history import run_facts

from managed_upgrade.views.milestones_calendar import milestones_ics
from managed_upgrade.views.portfolio import CustomerRuns, portfolio_row

START = datetime(2027, 1, 11, 8, tzinfo=UTC)


def _row(now: datetime, *runs):
    return portfolio_row(CustomerRuns("managed_upgrade__acme", "acme", runs), now)


def test_one_event_per_stage_plus_forecast_finish_and_deadline():
    now = START + timedelta(days=10)
    row = _row(now, run_facts("acme", START, now))

    calendar = Calendar.from_ical(milestones_ics(row, now))
    events = calendar.walk("VEVENT")

    stages = [stage for stage, _, _ in row.milestones]
    assert stages == ["initiation", "preparation", "dev", "uat", "prod", "closure"]
    assert len(events) == len(stages) + 2
    uids = [str(event["UID"]) for event in events]
    assert len(set(uids)) == len(uids)
    initiation = events[0]
    assert initiation.decoded("DTSTART") == row.milestones[0][1]
    assert initiation.decoded("DTSTAMP") == now
    deadline = events[-1]
    assert deadline.decoded("DTSTART") == row.deadline
    assert "ACME Corporation" in str(initiation["SUMMARY"])


def test_event_ids_stay_the_same_when_the_feed_is_read_again_later():
    first, later = START + timedelta(days=10), START + timedelta(days=12)
    facts = run_facts("acme", START, first)
    uids = [
        [
            str(event["UID"])
            for event in Calendar.from_ical(milestones_ics(_row(at, facts), at)).walk("VEVENT")
        ]
        for at in (first, later)
    ]
    assert uids[0] == uids[1]


def test_a_customer_without_upgrade_gets_an_empty_calendar():
    calendar = Calendar.from_ical(milestones_ics(_row(START), START))

    assert calendar.walk("VEVENT") == [] and str(calendar["VERSION"]) == "2.0"
