"""When a run's deadline alerts fall due, so the customer's deadline and the 10-week ceiling warn in time.

Three alerts per run (DESIGN §5, run-level deadlines):

* ``deadline_warning`` -- ``warning_days`` business days before the customer's deadline ends;
* ``deadline_missed`` -- the end of the deadline date in the customer's zone (24:00 local, so "by
  2027-03-31" is missed at the first instant of April 1st);
* ``timeline_ceiling`` -- :data:`TIMELINE_CEILING_DAYS` business days after the run's start (the
  process's 10-week ceiling).

Real runs count business days in the customer's calendar. A rehearsal (``seconds_per_business_day``)
compresses consistently with the rest of the run: the due instant is the run's start plus the
business days from the start to the real target, in the customer's calendar, times the seconds per
business day. A target already in the past gives an instant in the past, which alerts at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from managed_upgrade.sla.alerts import AlertKind
from managed_upgrade.sla.calendar import BusinessCalendar, BusinessClock

RunDeadlineKind = Literal[AlertKind.DEADLINE_WARNING, AlertKind.DEADLINE_MISSED, AlertKind.TIMELINE_CEILING]
RUN_DEADLINE_KINDS: tuple[RunDeadlineKind, ...] = (
    AlertKind.DEADLINE_WARNING,
    AlertKind.DEADLINE_MISSED,
    AlertKind.TIMELINE_CEILING,
)

TIMELINE_CEILING_DAYS = 50
"""The process's ceiling: 10 weeks of 5 business days from the run's start."""

DEFAULT_WARNING_DAYS = 5
"""Business days of notice before the customer's deadline."""


def deadline_end(deadline: date, clock: BusinessClock) -> datetime:
    """The end of ``deadline`` in the clock's zone (local 24:00), in UTC."""
    return datetime.combine(deadline + timedelta(days=1), time(), tzinfo=clock.timezone).astimezone(UTC)


def real_target(
    kind: RunDeadlineKind,
    *,
    deadline: date,
    run_start: datetime,
    calendar: BusinessClock,
    warning_days: float = DEFAULT_WARNING_DAYS,
) -> datetime:
    """The instant ``kind`` (or its value) falls due in a real run, on the customer's ``calendar``."""
    if kind == AlertKind.DEADLINE_MISSED:
        return deadline_end(deadline, calendar)
    if kind == AlertKind.DEADLINE_WARNING:
        return calendar.add_business_days(deadline_end(deadline, calendar), -warning_days)
    if kind == AlertKind.TIMELINE_CEILING:
        return calendar.add_business_days(run_start, TIMELINE_CEILING_DAYS)
    raise ValueError(f"unknown run deadline kind {kind!r}; use one of {', '.join(RUN_DEADLINE_KINDS)}")


def due_at(
    kind: RunDeadlineKind,
    *,
    deadline: date,
    run_start: datetime,
    calendar: BusinessClock,
    seconds_per_business_day: float | None = None,
    warning_days: float = DEFAULT_WARNING_DAYS,
) -> datetime:
    """When the alert ``kind`` of a run falls due (UTC), real or compressed by a rehearsal."""
    target = real_target(
        kind, deadline=deadline, run_start=run_start, calendar=calendar, warning_days=warning_days
    )
    if not seconds_per_business_day:
        return target
    days = calendar.business_days_between(run_start, target)
    return run_start.astimezone(UTC) + timedelta(seconds=days * float(seconds_per_business_day))


def calendar_from_settings(settings: Mapping[str, Any]) -> BusinessCalendar:
    """The customer's real calendar from the config's ``calendar`` section as plain JSON."""
    return BusinessCalendar.from_settings(settings)


def deadline_date(conf: Mapping[str, Any] | None, default: date) -> date:
    """The run's deadline date: the trigger form's ``deadline`` when it is an ISO date, else ``default``."""
    value = (conf or {}).get("deadline")
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    try:
        return date.fromisoformat(str(value))
    except (TypeError, ValueError):
        return default


def rehearsal_seconds(conf: Mapping[str, Any] | None) -> float | None:
    """The run's ``seconds_per_business_day`` when it is a positive number, else ``None`` (a real run)."""
    value = (conf or {}).get("seconds_per_business_day")
    if value is None or isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None
