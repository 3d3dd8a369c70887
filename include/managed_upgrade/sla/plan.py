"""The run's schedule, so managers see when each activity should start and finish and how late the run is.

:func:`make_plan` lays the process model out on the customer's business clock by critical path;
:func:`reforecast` replays it with what actually happened and measures the schedule variance.

Rules (the contract the tests check):

* **Earliest start.** An activity starts when the latest of its ``after`` activities finishes; roots
  start at the run's start instant. Nothing waits for a business day to begin: the clock's
  ``add_business_days`` already counts from the next business time.
* **Upgrade windows.** An activity with a schedule in ``openings`` (an environment's backup and its
  upgrade, see :mod:`managed_upgrade.sla.windows`) starts at the schedule's next opening at or after
  its earliest start; the wait is its :attr:`ActivityPlan.scheduled_wait_days`, and everything
  downstream moves. An activity that directly follows one with the same schedule (the upgrade after
  its backup) shares that one's window: it is asked at the instant its predecessor starts (or at
  ``now`` once that started), so the backup starts at the opening and the upgrade right after it,
  without a second wait for the predecessor's budget to pass. :func:`make_customer_plan` takes the
  schedules from the config (in a rehearsal only when the run rehearses windows).
* **Own budget.** An activity with its own ``duration_days`` lasts that many business days.
* **No budget** (``create_request_case``, closure): zero planned time, finish = start.
* **Budget groups.** A group's days are split in whole business days over its members that do not wait
  on the customer, in process order: each gets ``days // n``; the first ``days % n`` members get one
  day more (Development, 12 days over 6 members: 2 each; UAT, 8 over 7: 2, 1, 1, 1, 1, 1, 1). Whole days
  keep the arithmetic exact (no drift in rehearsal seconds or microseconds) and, because the model's
  groups are chains, the group's consultant members end exactly ``days`` after the group starts.
* **Customer waits** (``waits_on_customer``, e.g. ``customer_sign_off``) are planned with their own
  reminder budget ``customer_wait_days`` (the config's ``customer_wait.reminder_days``), whatever
  budget unit they belong to. They never take a share of a group's days: the consultant's group
  clock pauses while the customer has the ball. A group's window is [earliest member start, latest
  member finish], so for a chain it is ``days + customer_wait_days`` business days long, of which
  :attr:`BudgetUnitPlan.customer_wait_days` are the pause.
* **Critical path.** From the activity that finishes last (ties: the last in process order, so
  zero-time closure steps are included) back through the upstream that finished last (ties: first in
  ``after`` order) to a root.
* **Re-forecast.** Finished activities take their actual times; running ones finish at the later of
  ``actual start + budget`` and ``now``; activities not started yet start at the later of their
  earliest start and ``now`` (then the next opening of their window) and last their budget. An
  activity the ledger shows waiting for its window (``waiting``: activity key -> the opening it
  waits for) is not started yet and starts at that opening at the earliest: the task's own answer,
  which also knows the freezes declared since the plan was made; the activity sharing its window
  follows it without a wait of its own.
  Everything downstream moves accordingly. The baseline (``planned_*``) never changes;
  ``forecast_*`` carries the new times.
* **Variance** is business days from planned to forecast finish, by the clock: positive = late.

All instants are UTC datetimes (what the clock returns); the start may be given in any zone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from managed_upgrade.process.model import Activity, BudgetUnit, ProcessModel, Role
from managed_upgrade.sla.calendar import BusinessClock, calendar_for
from managed_upgrade.sla.windows import WINDOW_ACTIVITIES, StartSchedule, run_schedules

if TYPE_CHECKING:
    from managed_upgrade.config import CustomerConfig

__all__ = [
    "DEFAULT_CUSTOMER_WAIT_DAYS",
    "ActivityPlan",
    "BudgetUnitPlan",
    "Plan",
    "PlanError",
    "Progress",
    "make_customer_plan",
    "make_plan",
    "member_budget_days",
    "reforecast",
]

DEFAULT_CUSTOMER_WAIT_DAYS = 5
"""Reminder budget of a customer-owned wait when the config does not say (``customer_wait.reminder_days``)."""

Progress = Literal["not_started", "running", "finished"]


class PlanError(ValueError):
    """A plan input is invalid (naive instant, unknown activity, finish before start); says which."""


@dataclass(frozen=True)
class ActivityPlan:
    """One activity's baseline and forecast window.

    ``budget_days`` is the business time the plan gives it (its own days, its share of a group, the
    customer-wait budget, or ``None`` for an activity without budget, planned as zero time).
    """

    key: str
    owner: Role
    budget_unit: str | None
    budget_days: float | None
    waits_on_customer: bool
    planned_start: datetime
    planned_finish: datetime
    forecast_start: datetime
    forecast_finish: datetime
    progress: Progress
    variance_days: float
    """Business days from planned to forecast finish; positive = late."""
    scheduled_wait_days: float = 0.0
    """Business days between its earliest start and its (forecast) start spent waiting for a window."""
    window: str = ""
    """Why it waits for its window (empty when it need not): the schedule's own sentence."""


@dataclass(frozen=True)
class BudgetUnitPlan:
    """One budget's window: the span of its activities, customer waits included (see module rules)."""

    id: str
    owner: Role
    days: int
    is_group: bool
    activity_keys: tuple[str, ...]
    customer_wait_days: float
    """Business days of the window the customer has the ball; the unit's own clock pauses there."""
    planned_start: datetime
    planned_finish: datetime
    forecast_start: datetime
    forecast_finish: datetime
    variance_days: float


@dataclass(frozen=True, eq=False)
class Plan:
    """A run's schedule: activities in dependency order, budget units, critical path and variance."""

    model: ProcessModel
    clock: BusinessClock
    start: datetime
    customer_wait_days: float
    activities: tuple[ActivityPlan, ...]
    budget_units: tuple[BudgetUnitPlan, ...]
    critical_path: tuple[str, ...]
    """Keys from a root to the activity that finishes last, by forecast times (= planned in a new plan)."""
    openings: Mapping[str, StartSchedule] = field(default_factory=dict)
    """Upgrade schedules by activity key: those activities start only at an opening."""

    def activity(self, key: str) -> ActivityPlan:
        for activity in self.activities:
            if activity.key == key:
                return activity
        raise KeyError(f"no activity {key!r} in the plan; known: {', '.join(a.key for a in self.activities)}")

    def budget_unit(self, unit_id: str) -> BudgetUnitPlan:
        for unit in self.budget_units:
            if unit.id == unit_id:
                return unit
        raise KeyError(
            f"no budget {unit_id!r} in the plan; known: {', '.join(u.id for u in self.budget_units)}"
        )

    @property
    def planned_finish(self) -> datetime:
        """When the whole run should finish (baseline)."""
        return max(activity.planned_finish for activity in self.activities)

    @property
    def forecast_finish(self) -> datetime:
        """When the whole run is now expected to finish."""
        return max(activity.forecast_finish for activity in self.activities)

    @property
    def planned_business_days(self) -> float:
        """Business days from the run's start to its planned finish."""
        return self.clock.business_days_between(self.start, self.planned_finish)

    @property
    def variance_days(self) -> float:
        """Run-level schedule variance: business days from planned to forecast finish; positive = late."""
        return self.clock.business_days_between(self.planned_finish, self.forecast_finish)

    def to_rows(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Rows for the ledger table ``planned_activities`` (baseline times), one per activity."""
        return [
            {
                "dag_id": dag_id,
                "run_id": run_id,
                "activity_key": activity.key,
                "budget_unit": activity.budget_unit,
                "owner": activity.owner,
                "planned_start": activity.planned_start,
                "planned_finish": activity.planned_finish,
                "budget_days": None if activity.budget_days is None else float(activity.budget_days),
            }
            for activity in self.activities
        ]


def member_budget_days(model: ProcessModel, customer_wait_days: float) -> dict[str, float | None]:
    """Business days the plan gives each activity (see the module rules); ``None`` means no budget."""
    _check_wait_days(customer_wait_days)
    days: dict[str, float | None] = {}
    for activity in model.activities:
        if activity.waits_on_customer:
            days[activity.key] = customer_wait_days
        elif activity.budget_group is None:
            days[activity.key] = activity.duration_days
    for unit in model.budget_units:
        if not unit.is_group:
            continue
        sharing = [key for key in unit.activity_keys if not model.activity(key).waits_on_customer]
        if not sharing:
            continue
        base, extra = divmod(unit.days, len(sharing))
        for index, key in enumerate(sharing):
            days[key] = base + 1 if index < extra else base
    return days


def make_plan(
    model: ProcessModel,
    clock: BusinessClock,
    start: datetime,
    *,
    customer_wait_days: float = DEFAULT_CUSTOMER_WAIT_DAYS,
    openings: Mapping[str, StartSchedule] | None = None,
) -> Plan:
    """Every activity's planned start and finish by critical path from ``start`` on ``clock``.

    ``openings``: upgrade schedules by activity key (see the module rules).
    """
    known = {activity.key for activity in model.activities}
    unknown = sorted(set(openings or {}) - known)
    if unknown:
        raise PlanError(f"openings: unknown activity {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return _schedule(
        model,
        clock,
        _utc(start, "start"),
        customer_wait_days,
        baseline=None,
        actuals={},
        now=None,
        openings=dict(openings or {}),
    )


def make_customer_plan(
    config: CustomerConfig,
    start: datetime,
    *,
    seconds_per_business_day: float | None = None,
    model: ProcessModel | None = None,
    rehearse_windows: bool = False,
) -> Plan:
    """A customer's plan: its overrides, its calendar (or a rehearsal clock), its customer-wait budget
    and its upgrade windows (in a rehearsal only with ``rehearse_windows``)."""
    process = config.process_model(model)
    schedules = run_schedules(
        config,
        anchor=_utc(start, "start"),
        seconds_per_business_day=seconds_per_business_day,
        rehearse_windows=rehearse_windows,
    )
    openings = {
        activity.key: schedules[activity.stage]
        for activity in process.activities
        if activity.id in WINDOW_ACTIVITIES and activity.stage in schedules
    }
    return make_plan(
        process,
        calendar_for(config.calendar, seconds_per_business_day),
        start,
        customer_wait_days=config.customer_wait.reminder_days,
        openings=openings,
    )


def reforecast(
    plan: Plan,
    actuals: Mapping[str, tuple[datetime | None, datetime | None]],
    now: datetime,
    *,
    waiting: Mapping[str, tuple[datetime, str]] | None = None,
) -> Plan:
    """The plan replayed with actual ``(start, finish)`` per activity key at ``now``; baseline kept.

    ``waiting``: activities waiting for their window now, by key: the opening each waits for and why
    (see the module rules); their actuals are ignored until they finish.
    """
    checked = _checked_actuals(plan, actuals)
    held = _checked_waiting(plan, waiting or {})
    return _schedule(
        plan.model,
        plan.clock,
        plan.start,
        plan.customer_wait_days,
        baseline=plan,
        actuals={key: times for key, times in checked.items() if key not in held or times[1] is not None},
        now=_utc(now, "now"),
        openings=plan.openings,
        waiting={key: held[key] for key in held if checked.get(key, (None, None))[1] is None},
    )


# -- internals ------------------------------------------------------------------------------------------


def _schedule(
    model: ProcessModel,
    clock: BusinessClock,
    start: datetime,
    customer_wait_days: float,
    *,
    baseline: Plan | None,
    actuals: Mapping[str, tuple[datetime | None, datetime | None]],
    now: datetime | None,
    openings: Mapping[str, StartSchedule],
    waiting: Mapping[str, tuple[datetime, str]] | None = None,
) -> Plan:
    budgets = member_budget_days(model, customer_wait_days)
    order = model.topological_order()
    windows: dict[str, tuple[datetime, datetime]] = {}
    progress: dict[str, Progress] = {}
    waits: dict[str, tuple[float, str]] = {}
    held = waiting or {}
    for activity in order:
        earliest = max((windows[upstream][1] for upstream in activity.after), default=start)
        days = budgets[activity.key] or 0
        actual_start, actual_finish = actuals.get(activity.key, (None, None))
        if actual_finish is not None:
            begun = actual_start if actual_start is not None else min(earliest, actual_finish)
            windows[activity.key] = (begun, actual_finish)
            progress[activity.key] = "finished"
        elif actual_start is not None:
            finish = clock.add_business_days(actual_start, days)
            windows[activity.key] = (actual_start, max(finish, now) if now is not None else finish)
            progress[activity.key] = "running"
        else:
            begin = max(earliest, now) if now is not None else earliest
            schedule = openings.get(activity.key)
            if activity.key in held:
                until, why = held[activity.key]
                if until > begin:
                    waits[activity.key] = (clock.business_days_between(begin, until), why)
                    begin = until
            elif schedule is not None:
                begin, wait = _start_in_window(activity, begin, schedule, openings, windows, held, now, clock)
                if wait is not None:
                    waits[activity.key] = wait
            windows[activity.key] = (begin, clock.add_business_days(begin, days))
            progress[activity.key] = "not_started"

    activities = tuple(
        _activity_plan(
            activity, budgets[activity.key], windows, progress, baseline, clock, waits.get(activity.key)
        )
        for activity in order
    )
    by_key = {activity.key: activity for activity in activities}
    units = tuple(_unit_plan(unit, by_key, baseline, clock) for unit in model.budget_units)
    return Plan(
        model=model,
        clock=clock,
        start=start,
        customer_wait_days=customer_wait_days,
        activities=activities,
        budget_units=units,
        critical_path=_critical_path(order, windows),
        openings=openings,
    )


def _start_in_window(
    activity: Activity,
    begin: datetime,
    schedule: StartSchedule,
    openings: Mapping[str, StartSchedule],
    windows: Mapping[str, tuple[datetime, datetime]],
    held: Mapping[str, tuple[datetime, str]],
    now: datetime | None,
    clock: BusinessClock,
) -> tuple[datetime, tuple[float, str] | None]:
    """When ``activity`` (earliest ``begin``) starts in ``schedule``, and its wait (business days, why)
    if it waits (see the module rules)."""
    leader = next((key for key in activity.after if openings.get(key) is schedule), None)
    if leader is not None:
        if leader in held:
            return begin, None  # right after its leader, in the opening the leader's task waits for
        leader_start = windows[leader][0]
        asked = min(begin, max(leader_start, now or leader_start))
        if asked != begin and schedule.opening(asked).is_open:
            return begin, None  # right after its leader, in the window the leader starts in
    opening = schedule.opening(begin)
    if opening.is_open:
        return begin, None
    subject = WINDOW_ACTIVITIES.get(activity.id, "the upgrade")
    return opening.at, (clock.business_days_between(begin, opening.at), opening.describe(subject))


def _activity_plan(
    activity: Activity,
    budget_days: float | None,
    windows: Mapping[str, tuple[datetime, datetime]],
    progress: Mapping[str, Progress],
    baseline: Plan | None,
    clock: BusinessClock,
    wait: tuple[float, str] | None,
) -> ActivityPlan:
    forecast_start, forecast_finish = windows[activity.key]
    if baseline is None:
        planned_start, planned_finish = forecast_start, forecast_finish
    else:
        planned = baseline.activity(activity.key)
        planned_start, planned_finish = planned.planned_start, planned.planned_finish
    return ActivityPlan(
        key=activity.key,
        owner=activity.owner,
        budget_unit=activity.budget_unit_id,
        budget_days=budget_days,
        waits_on_customer=activity.waits_on_customer,
        planned_start=planned_start,
        planned_finish=planned_finish,
        forecast_start=forecast_start,
        forecast_finish=forecast_finish,
        progress=progress[activity.key],
        variance_days=clock.business_days_between(planned_finish, forecast_finish),
        scheduled_wait_days=0.0 if wait is None else wait[0],
        window="" if wait is None else wait[1],
    )


def _unit_plan(
    unit: BudgetUnit,
    by_key: Mapping[str, ActivityPlan],
    baseline: Plan | None,
    clock: BusinessClock,
) -> BudgetUnitPlan:
    members = [by_key[key] for key in unit.activity_keys]
    forecast_start = min(member.forecast_start for member in members)
    forecast_finish = max(member.forecast_finish for member in members)
    if baseline is None:
        planned_start, planned_finish = forecast_start, forecast_finish
    else:
        planned = baseline.budget_unit(unit.id)
        planned_start, planned_finish = planned.planned_start, planned.planned_finish
    wait_days = sum(member.budget_days or 0 for member in members if member.waits_on_customer)
    return BudgetUnitPlan(
        id=unit.id,
        owner=unit.owner,
        days=unit.days,
        is_group=unit.is_group,
        activity_keys=unit.activity_keys,
        customer_wait_days=wait_days,
        planned_start=planned_start,
        planned_finish=planned_finish,
        forecast_start=forecast_start,
        forecast_finish=forecast_finish,
        variance_days=clock.business_days_between(planned_finish, forecast_finish),
    )


def _critical_path(
    order: tuple[Activity, ...], windows: Mapping[str, tuple[datetime, datetime]]
) -> tuple[str, ...]:
    position = {activity.key: index for index, activity in enumerate(order)}
    last = max(order, key=lambda activity: (windows[activity.key][1], position[activity.key]))
    by_key = {activity.key: activity for activity in order}
    path = [last.key]
    current = last
    while current.after:
        latest = max(windows[upstream][1] for upstream in current.after)
        upstream_key = next(key for key in current.after if windows[key][1] == latest)
        path.append(upstream_key)
        current = by_key[upstream_key]
    return tuple(reversed(path))


def _utc(moment: datetime, argument: str) -> datetime:
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise PlanError(f"{argument}={moment!r} must be a timezone-aware datetime")
    return moment.astimezone(UTC)


def _check_wait_days(days: float) -> None:
    if isinstance(days, bool) or not isinstance(days, int | float) or not math.isfinite(days) or days < 0:
        raise PlanError(f"customer_wait_days={days!r} must be a finite number of business days >= 0")


def _checked_waiting(
    plan: Plan, waiting: Mapping[str, tuple[datetime, str]]
) -> dict[str, tuple[datetime, str]]:
    known = {activity.key for activity in plan.activities}
    checked: dict[str, tuple[datetime, str]] = {}
    for key, (until, why) in waiting.items():
        if key not in known:
            raise PlanError(f"waiting: unknown activity {key!r}; known: {', '.join(sorted(known))}")
        checked[key] = (_utc(until, f"waiting[{key!r}]"), why)
    return checked


def _checked_actuals(
    plan: Plan, actuals: Mapping[str, tuple[datetime | None, datetime | None]]
) -> dict[str, tuple[datetime | None, datetime | None]]:
    known = {activity.key for activity in plan.activities}
    checked: dict[str, tuple[datetime | None, datetime | None]] = {}
    for key, (actual_start, actual_finish) in actuals.items():
        if key not in known:
            raise PlanError(f"actuals: unknown activity {key!r}; known: {', '.join(sorted(known))}")
        begun = None if actual_start is None else _utc(actual_start, f"actuals[{key!r}] start")
        done = None if actual_finish is None else _utc(actual_finish, f"actuals[{key!r}] finish")
        if begun is not None and done is not None and done < begun:
            raise PlanError(
                f"actuals[{key!r}]: finish {done.isoformat()} is before start {begun.isoformat()}"
            )
        checked[key] = (begun, done)
    return checked
