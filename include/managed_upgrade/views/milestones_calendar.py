"""A customer's planned milestones as an iCalendar feed, so people see them in their own calendar.

One event per stage of the current upgrade (its planned window from the run's baseline), one for the
re-forecast finish and one for the customer's deadline. UIDs are stable per run and stage, so a
calendar that re-reads the feed updates the events instead of duplicating them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from icalendar import Calendar, Event

from managed_upgrade.views.portfolio import PortfolioRow

PRODID = "-//Managed Upgrade//Planned milestones//EN"
STAGE_TITLES = {
    "initiation": "Initiation",
    "preparation": "Preparation",
    "dev": "Development environment",
    "uat": "UAT environment",
    "prod": "Production environment",
    "closure": "Closure",
}


def _event(
    uid: str, summary: str, start: datetime, end: datetime, stamp: datetime, description: str
) -> Event:
    event = Event()
    event.add("uid", uid)
    event.add("dtstamp", stamp)
    event.add("dtstart", start.astimezone(UTC))
    event.add("dtend", max(end, start).astimezone(UTC))
    event.add("summary", summary)
    event.add("description", description)
    return event


def milestones_ics(row: PortfolioRow, now: datetime) -> bytes:
    """The feed of ``row``'s current upgrade (empty calendar when it has none), RFC 5545 bytes."""
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("x-wr-calname", f"Managed upgrade: {row.customer_name}")
    stamp = now.astimezone(UTC)
    if row.run_id is None:
        return bytes(calendar.to_ical())
    prefix = f"{row.dag_id}.{row.run_id}"
    about = f"{row.customer_name} ({row.customer_id}), run {row.run_id}"
    for stage, start, finish in row.milestones:
        title = STAGE_TITLES.get(stage, stage)
        summary = f"{row.customer_name}: {title} (planned)"
        description = f"Planned window of {title}: {about}."
        calendar.add_component(
            _event(f"{prefix}.{stage}@managed-upgrade", summary, start, finish, stamp, description)
        )
    if row.forecast_finish is not None:
        summary = f"{row.customer_name}: upgrade finish (forecast)"
        at, description = row.forecast_finish, f"Re-forecast finish of {about}."
        calendar.add_component(
            _event(f"{prefix}.forecast-finish@managed-upgrade", summary, at, at, stamp, description)
        )
    if row.deadline is not None:
        deadline = Event()
        deadline.add("uid", f"{prefix}.deadline@managed-upgrade")
        deadline.add("dtstamp", stamp)
        deadline.add("dtstart", row.deadline)
        deadline.add("summary", f"{row.customer_name}: upgrade deadline")
        deadline.add("description", f"The customer's deadline for completion: {about}.")
        calendar.add_component(deadline)
    return bytes(calendar.to_ical())
