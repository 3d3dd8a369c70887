"""Planned versus actual for one run, laid out as bars, so a manager sees at a glance where it slipped.

One row per activity in process order: the planned bar (the baseline the run saved when it started),
the actual bar (the ledger's events), the customer waits inside it (shaded: they do not count against
the consultant's budget), the waits for an upgrade window (shaded up to the opening they wait for:
scheduled, nobody's delay), the instant a budget ran out (SLA miss), and the re-forecast of what is
left (upgrade windows and the openings the tasks wait for included, as in the baseline). Above the
rows: today, the re-forecast finish against the customer's deadline and the 10-week ceiling, who
must act now and for how long they have waited, and what waits for its window until when and why.
A rehearsal run is drawn on its own compressed clock (instants are real instants; one business day
is a few seconds).

Positions are percentages of one time axis, so the template only draws rectangles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from managed_upgrade.process.model import Role
from managed_upgrade.sla.clock import ScheduledWait, SlaState, UnitClock, sla_state
from managed_upgrade.sla.plan import Plan, make_customer_plan, reforecast
from managed_upgrade.views.run_facts import RunFacts, RunReading

ActivityStatus = Literal["not_started", "running", "waiting_on_customer", "waiting_for_window", "finished"]

AXIS_TICKS = 6


@dataclass(frozen=True)
class Span:
    """A stretch of time placed on the axis: ``left`` and ``width`` in percent of it."""

    start: datetime
    end: datetime
    left: float
    width: float
    open_ended: bool = False
    """The stretch has not ended yet: it is drawn up to now."""


@dataclass(frozen=True)
class Marker:
    """An instant placed on the axis (``left`` in percent), with what it means."""

    at: datetime
    left: float
    label: str


@dataclass(frozen=True)
class WindowWait:
    """An activity waiting, as scheduled, for its environment's upgrade window: nobody must act."""

    activity_key: str
    title: str
    since: datetime
    until: datetime | None
    """The opening it waits for (the ledger event's ``until``); ``None`` if the event did not say."""
    reason: str
    """Why: the freeze (name, days, until when) or ``outside the upgrade windows``."""


@dataclass(frozen=True)
class ActivityRow:
    """One activity: its bars and the facts beside them."""

    key: str
    stage: str
    title: str
    owner: Role
    budget_unit: str | None
    budget_days: float | None
    status: ActivityStatus
    planned: Span | None
    actual: Span | None
    forecast: Span | None
    """What is left of it by the re-forecast (running or not started); ``None`` once finished."""
    waits: tuple[Span, ...]
    miss: Marker | None
    """When its budget ran out, on the row of the activity that was running then."""
    unit_missed: bool
    variance_days: float | None
    """Business days from planned to actual (finished) or forecast finish; positive = late."""
    window_waits: tuple[Span, ...] = ()
    """Its waits for an upgrade window, each up to the opening it waits for."""
    window: WindowWait | None = None
    """The wait for its window going on now, if any (status ``waiting_for_window``)."""

    @property
    def status_label(self) -> str:
        """The status as the page shows it (``waiting for window``)."""
        return self.status.replace("_", " ")


@dataclass(frozen=True)
class PendingAction:
    """Who must act now on a running activity, since when, and how long that is."""

    activity_key: str
    title: str
    role: Role
    people: tuple[str, ...]
    since: datetime
    waited_business_days: float
    waited: timedelta
    sla: str
    """``running`` (``due_at`` says until when), ``missed``, ``paused_on_customer`` or ``no budget``."""
    due_at: datetime | None


@dataclass(frozen=True)
class Tick:
    left: float
    label: str


@dataclass(frozen=True)
class RunSchedule:
    """Everything the planned-vs-actual page shows for one run."""

    dag_id: str
    run_id: str
    customer_id: str
    customer_name: str
    status: str
    now: datetime
    timezone: str
    """The customer's zone (IANA name): real runs are shown in it."""
    rehearsal_seconds_per_day: float | None
    rows: tuple[ActivityRow, ...]
    ticks: tuple[Tick, ...]
    today: Marker
    planned_finish: datetime
    forecast_finish: datetime
    actual_finish: datetime | None
    deadline: Marker
    ceiling: Marker
    finish: Marker
    variance_days: float
    late_for_deadline: bool
    beyond_ceiling: bool
    actions: tuple[PendingAction, ...]
    misses: tuple[str, ...]
    """Budget units that missed their SLA (ledger claims and the clock), in process order."""
    window_waits: tuple[WindowWait, ...] = ()
    """Activities waiting for their upgrade window now, in process order: scheduled, nobody acts."""


class Axis:
    """Maps instants to percent of the chart's width."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.seconds = max((end - start).total_seconds(), 1.0)

    def left(self, at: datetime) -> float:
        return round(min(max((at - self.start).total_seconds() / self.seconds, 0.0), 1.0) * 100, 3)

    def span(self, start: datetime, end: datetime | None, now: datetime) -> Span:
        stop = end if end is not None else max(now, start)
        left = self.left(start)
        return Span(start, stop, left, round(max(self.left(stop) - left, 0.0), 3), open_ended=end is None)


def _actuals(facts: RunFacts, keys: Sequence[str]) -> dict[str, tuple[datetime | None, datetime | None]]:
    """First start and the finish of the latest try per activity (a retry after a finish reopens it)."""
    starts: dict[str, datetime] = {}
    start_try: dict[str, int] = {}
    finishes: dict[str, tuple[datetime, int]] = {}
    known = set(keys)
    for event in facts.events:
        key, kind, at = event.get("activity_key"), event.get("event"), event.get("at")
        if key not in known or not isinstance(key, str) or not isinstance(at, datetime):
            continue
        at, try_number = at.astimezone(UTC), int(event.get("try_number") or 1)
        if kind in ("ready", "started"):
            starts[key] = min(starts.get(key, at), at)
            start_try[key] = max(start_try.get(key, 0), try_number)
        elif kind == "finished" and (key not in finishes or try_number >= finishes[key][1]):
            finishes[key] = (at, try_number)
    actuals: dict[str, tuple[datetime | None, datetime | None]] = {}
    for key in keys:
        finish = finishes.get(key)
        done = finish[0] if finish and finish[1] >= start_try.get(key, 0) else None
        begun = starts.get(key)
        if begun is not None and done is not None and done < begun:
            begun = done
        if begun is not None or done is not None:
            actuals[key] = (begun, done)
    return actuals


def _baseline(facts: RunFacts) -> dict[str, tuple[datetime, datetime]]:
    return {
        str(row["activity_key"]): (
            row["planned_start"].astimezone(UTC),
            row["planned_finish"].astimezone(UTC),
        )
        for row in facts.plan
        if row.get("planned_start") is not None and row.get("planned_finish") is not None
    }


def _people(reading: RunReading, role: Role) -> tuple[str, ...]:
    config = reading.config
    if role == Role.CUSTOMER:
        return tuple(contact.name for contact in config.contacts.customer)
    return tuple(getattr(config.users, role.value))


def _unit_sla(unit: UnitClock | None) -> tuple[str, datetime | None]:
    if unit is None:
        return "no budget", None
    if unit.missed:
        return "missed", None
    return unit.status, unit.due_at


def _miss_instants(state: SlaState, facts: RunFacts) -> dict[str, datetime]:
    """Budget unit -> when it ran out: the clock's instant, else the ledger claim's planned finish."""
    instants = {unit.id: unit.ran_out_at for unit in state.units if unit.missed and unit.ran_out_at}
    for row in facts.sla_misses:
        unit_id, at = row.get("budget_unit"), row.get("planned_finish")
        if isinstance(unit_id, str) and isinstance(at, datetime) and unit_id not in instants:
            instants[unit_id] = at.astimezone(UTC)
    return instants


def _forecast(
    reading: RunReading, actuals: Mapping[str, Any], windows: Mapping[str, WindowWait], now: datetime
) -> Plan:
    """The run's plan (upgrade windows as the run honours them) re-forecast at ``now``; an activity
    waiting for its window starts at the opening its task waits for."""
    plan = make_customer_plan(
        reading.config,
        reading.start,
        seconds_per_business_day=reading.seconds_per_business_day,
        rehearse_windows=reading.rehearse_windows,
    )
    waiting = {key: (wait.until, wait.reason) for key, wait in windows.items() if wait.until is not None}
    return reforecast(plan, actuals, now, waiting=waiting)


def _open_window_waits(reading: RunReading, state: SlaState, now: datetime) -> dict[str, WindowWait]:
    """Activity key -> its wait for an upgrade window going on at ``now`` (the latest, if several)."""
    titles = {activity.key: activity.title for activity in reading.model.activities}
    found: dict[str, ScheduledWait] = {}
    for wait in state.scheduled_waits:
        going = wait.started_at <= now and (wait.ends_at is None or now < wait.ends_at)
        latest = found.get(wait.activity_key)
        if going and (latest is None or latest.started_at <= wait.started_at):
            found[wait.activity_key] = wait
    return {
        key: WindowWait(key, titles.get(key, key), wait.started_at, wait.ends_at, wait.reason)
        for key, wait in found.items()
    }


def run_schedule(facts: RunFacts, now: datetime) -> RunSchedule | None:
    """The page's data for ``facts`` at ``now``; ``None`` when the run cannot be read (no snapshot yet)."""
    reading = facts.reading
    if reading is None:
        return None
    now = now.astimezone(UTC)
    model, clock = reading.model, reading.clock
    keys = [activity.key for activity in model.activities]
    actuals = _actuals(facts, keys)
    baseline = _baseline(facts)
    state = sla_state(
        model, clock, list(facts.events), reminder_days=reading.config.customer_wait.reminder_days, now=now
    )
    run_over = facts.status != "running"
    windows = {} if run_over else _open_window_waits(reading, state, now)
    windows = {key: wait for key, wait in windows.items() if actuals.get(key, (None, None))[1] is None}
    forecast = _forecast(reading, actuals, windows, now)
    finished_all = all(actuals.get(key, (None, None))[1] is not None for key in keys)
    actual_finish = max((finish for _, finish in actuals.values() if finish), default=None)
    forecast_finish = actual_finish if finished_all and actual_finish else forecast.forecast_finish
    planned_finish = max((finish for _, finish in baseline.values()), default=forecast.planned_finish)

    instants = [reading.start, now, planned_finish, forecast_finish, reading.deadline_at, reading.ceiling_at]
    instants += [start for start, _ in baseline.values()]
    instants += [start for start, _ in actuals.values() if start]
    axis = Axis(min(instants), max(instants))
    misses = _miss_instants(state, facts)

    waits_by_key: dict[str, list[Span]] = {}
    for wait in state.waits:
        waits_by_key.setdefault(wait.activity_key, []).append(axis.span(wait.started_at, wait.ended_at, now))
    open_waits = {wait.activity_key: wait for wait in state.waits if wait.ended_at is None}
    window_spans: dict[str, list[Span]] = {}
    for scheduled in state.scheduled_waits:
        window_spans.setdefault(scheduled.activity_key, []).append(
            axis.span(scheduled.started_at, scheduled.ends_at, now)
        )

    rows = []
    for activity in model.activities:
        begun, done = actuals.get(activity.key, (None, None))
        planned = baseline.get(activity.key)
        projected = forecast.activity(activity.key)
        if done is not None:
            status: ActivityStatus = "finished"
        elif activity.key in windows:
            status = "waiting_for_window"
        elif begun is None:
            status = "not_started"
        else:
            status = "waiting_on_customer" if activity.key in open_waits else "running"
        unit = model.budget_unit_of(activity.key)
        miss_at = misses.get(unit.id) if unit else None
        miss = None
        if (
            miss_at is not None
            and begun is not None
            and begun <= miss_at
            and (done is None or miss_at <= done)
        ):
            miss = Marker(miss_at, axis.left(miss_at), f"{unit.id if unit else activity.key} budget ran out")
        end_of_row = done if done is not None else projected.forecast_finish
        rows.append(
            ActivityRow(
                key=activity.key,
                stage=activity.stage,
                title=activity.title,
                owner=activity.owner,
                budget_unit=unit.id if unit else None,
                budget_days=projected.budget_days,
                status=status,
                planned=axis.span(*planned, now) if planned else None,
                actual=axis.span(begun, done, now) if begun is not None else None,
                forecast=None
                if done is not None or run_over
                else axis.span(max(projected.forecast_start, now), projected.forecast_finish, now),
                waits=tuple(waits_by_key.get(activity.key, ())),
                miss=miss,
                unit_missed=unit is not None and unit.id in misses,
                variance_days=round(_signed_days(reading, planned[1], end_of_row), 2) if planned else None,
                window_waits=tuple(window_spans.get(activity.key, ())),
                window=windows.get(activity.key),
            )
        )

    actions = [] if run_over else _pending_actions(reading, state, actuals, open_waits, now)
    return RunSchedule(
        dag_id=facts.dag_id,
        run_id=facts.run_id,
        customer_id=facts.customer_id,
        customer_name=reading.config.name,
        status=facts.status,
        now=now,
        timezone=reading.clock.timezone.key,
        rehearsal_seconds_per_day=reading.seconds_per_business_day,
        rows=tuple(rows),
        ticks=_ticks(axis, reading),
        today=Marker(now, axis.left(now), "now"),
        planned_finish=planned_finish,
        forecast_finish=forecast_finish,
        actual_finish=actual_finish if finished_all else None,
        deadline=Marker(reading.deadline_at, axis.left(reading.deadline_at), f"deadline {reading.deadline}"),
        ceiling=Marker(reading.ceiling_at, axis.left(reading.ceiling_at), "10-week ceiling"),
        finish=Marker(forecast_finish, axis.left(forecast_finish), "forecast finish"),
        variance_days=round(_signed_days(reading, planned_finish, forecast_finish), 2),
        late_for_deadline=forecast_finish > reading.deadline_at,
        beyond_ceiling=forecast_finish > reading.ceiling_at,
        actions=tuple(actions),
        misses=tuple(unit.id for unit in model.budget_units if unit.id in misses),
        window_waits=tuple(windows[key] for key in keys if key in windows),
    )


def _pending_actions(
    reading: RunReading,
    state: SlaState,
    actuals: Mapping[str, tuple[datetime | None, datetime | None]],
    open_waits: Mapping[str, Any],
    now: datetime,
) -> list[PendingAction]:
    """Running activities that wait on a person (gates and customer waits), longest waiting first."""
    units = {unit.id: unit for unit in state.units}
    actions = []
    for activity in reading.model.activities:
        begun, done = actuals.get(activity.key, (None, None))
        wait = open_waits.get(activity.key)
        if begun is None or done is not None or not (activity.is_gate or wait is not None):
            continue
        role = Role.CUSTOMER if wait is not None else activity.owner
        since = wait.started_at if wait is not None else begun
        unit = reading.model.budget_unit_of(activity.key)
        sla, due = _unit_sla(units.get(unit.id) if unit else None)
        actions.append(
            PendingAction(
                activity_key=activity.key,
                title=activity.title,
                role=role,
                people=_people(reading, role),
                since=since,
                waited_business_days=round(reading.clock.business_days_between(since, now), 2),
                waited=now - since,
                sla=sla,
                due_at=due,
            )
        )
    return sorted(actions, key=lambda action: action.since)


def _signed_days(reading: RunReading, planned: datetime, actual: datetime) -> float:
    if actual >= planned:
        return reading.clock.business_days_between(planned, actual)
    return -reading.clock.business_days_between(actual, planned)


def _ticks(axis: Axis, reading: RunReading) -> tuple[Tick, ...]:
    """Evenly spaced labels: dates in the customer's zone, or minutes:seconds from start in a rehearsal."""
    ticks = []
    for index in range(AXIS_TICKS + 1):
        at = axis.start + timedelta(seconds=axis.seconds * index / AXIS_TICKS)
        if reading.is_rehearsal:
            offset = int((at - reading.start).total_seconds())
            sign, offset = ("-" if offset < 0 else "+"), abs(offset)
            label = f"{sign}{offset // 60}:{offset % 60:02d}"
        else:
            label = at.astimezone(reading.clock.timezone).strftime("%d %b")
        ticks.append(Tick(axis.left(at), label))
    return tuple(ticks)
