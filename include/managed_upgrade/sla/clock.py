"""The SLA clock of a run, so misses and customer reminders are decided from the ledger's events alone.

:func:`sla_state` replays a run's activity events (rows of :meth:`managed_upgrade.ledger.Ledger.events`)
against the process model and the customer's business clock; :func:`next_due_at` says when the next
miss or reminder can fall due, so a watcher sleeps exactly until then. Pure: no Airflow, no I/O.

Rules (the contract the tests check):

* **Budget unit clock.** A unit (:attr:`ProcessModel.budget_units`) starts at the earliest ``ready``
  or ``started`` event of its activities and stops at the ``finished`` of its last activity, once
  every activity of the unit is finished. An activity without such an event whose upstream
  activities (``after``) all finished is ready at the last of their finishes (what the listener
  writes once its task runs; a task still queued for a worker does not hold its clock back).
  Retries (new ``started`` events with a higher ``try_number``) do not restart it; only a
  ``ready``/``started`` of a higher try than an activity's ``finished`` reopens that activity (the
  task was cleared and runs again).
* **Customer waits.** An activity waits on the customer from ``waiting_on_customer`` until its
  ``resumed`` or ``finished`` (the listener records them while a customer question is open). An
  activity with ``waits_on_customer`` in the model (a customer sign-off) that has no such event waits
  for its whole span, from its start to its finish; once it has one, only the recorded spans count,
  since a fix round inside a sign-off is the consultant's time. Overlapping spans of one activity are
  one continuous wait.
* **Scheduled waits.** An activity that waits for its upgrade window (``waiting_for_window``, its
  ``detail.until`` the opening it waits for, ``try_number`` the wait's number in the run) waits from
  that event until the earlier of ``until`` and its ``finished``/``failed``. Nobody is late then: the
  wait pauses every unit, whatever its owner, and is reported apart (:attr:`UnitClock.scheduled_days`,
  :attr:`SlaState.scheduled_waits`, status ``waiting_for_window`` while it lasts). Its end is known in
  advance, so the unit's ``due_at`` is too.
* **Pauses.** Waits do not count against consultant or project-manager units: the unit's consumed
  business days are its elapsed business days minus the (merged) wait time inside its window.
  Customer-owned units count all of their time except scheduled waits. A customer wait and a
  scheduled wait that overlap pause the unit once.
* **Run-out instant.** The budget runs out when consumed time reaches the budget: ``start + budget``
  business days, pushed later by every wait that began before that instant. A running unit is due
  then (``due_at``); a paused one has no ``due_at``; a unit that ran out is missed, and so is one that
  finished after its run-out instant. ``overrun_days`` = consumed - budget (0 when not missed).
* **Planned finish** to report: ``start + budget + paused`` business days (paused time up to the
  unit's end, or up to ``now`` while it runs), so ``business_days_between(planned_finish, end)``
  equals the overrun.
* **Reminders.** Reminder ``k`` of a wait falls due ``k * reminder_days`` business days after the wait
  began, while the wait lasts (a wait closed at or before that instant never gets it). Numbers are
  counted per budget unit in order of their due instants (1, 2, ...), because the ledger keys
  reminders by (budget unit, number); with one wait per unit, reminder ``k`` has number ``k``. An
  activity without a budget reports its waits under its own key.

All instants are UTC datetimes; business time comes from the clock, so a rehearsal clock (one business
day = N seconds) and a real calendar give the same decisions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from managed_upgrade.process.model import BudgetUnit, ProcessModel, Role
from managed_upgrade.sla.calendar import BusinessClock

__all__ = [
    "CustomerWait",
    "Reminder",
    "ScheduledWait",
    "SlaClockError",
    "SlaState",
    "UnitClock",
    "UnitStatus",
    "final_activity_key",
    "next_due_at",
    "run_is_over",
    "sla_state",
]

UnitStatus = Literal["not_started", "running", "paused_on_customer", "waiting_for_window", "finished"]

_START_EVENTS = ("ready", "started")


class SlaClockError(ValueError):
    """An event row cannot be replayed (naive instant, unknown event); the message names the row."""


@dataclass(frozen=True)
class UnitClock:
    """One budget unit's clock at ``now``."""

    id: str
    title: str
    owner: Role
    activity_keys: tuple[str, ...]
    budget_days: float
    status: UnitStatus
    started_at: datetime | None
    finished_at: datetime | None
    consumed_days: float
    """Business days counted against the budget (customer waits excluded for consultant/PM units)."""
    paused_days: float
    """Business days of customer waits inside the unit's window so far."""
    due_at: datetime | None
    """When the budget runs out if nothing changes; ``None`` when not started, paused or finished."""
    ran_out_at: datetime | None
    """The instant the budget ran out, when it did (``missed``); the instant its alert is due."""
    planned_finish: datetime | None
    missed: bool
    overrun_days: float
    current_activity: str
    """The unit's first activity (process order) not finished yet; its last one once all are."""
    scheduled_days: float = 0.0
    """Business days its activities waited for their upgrade window inside the unit's window so far."""


@dataclass(frozen=True)
class CustomerWait:
    """A continuous stretch during which an activity waited on the customer."""

    budget_unit: str
    activity_key: str
    started_at: datetime
    ended_at: datetime | None
    """``None`` while the customer still has the ball."""


@dataclass(frozen=True)
class ScheduledWait:
    """A stretch during which an activity waited for its upgrade window: scheduled, nobody's delay."""

    budget_unit: str
    activity_key: str
    started_at: datetime
    ends_at: datetime | None
    """The opening it waits for (or the activity's end, if earlier); ``None`` if the event did not say."""
    reason: str


@dataclass(frozen=True)
class Reminder:
    """A reminder to the customer that has fallen due."""

    budget_unit: str
    activity_key: str
    number: int
    wait_started_at: datetime
    due_at: datetime


@dataclass(frozen=True, eq=False)
class SlaState:
    """Every unit's clock, every customer wait and the reminders due, as of ``now``."""

    now: datetime
    clock: BusinessClock
    reminder_days: float
    units: tuple[UnitClock, ...]
    waits: tuple[CustomerWait, ...]
    reminders: tuple[Reminder, ...]
    scheduled_waits: tuple[ScheduledWait, ...] = ()

    def unit(self, unit_id: str) -> UnitClock:
        for unit in self.units:
            if unit.id == unit_id:
                return unit
        raise KeyError(f"no budget unit {unit_id!r}; known: {', '.join(u.id for u in self.units)}")

    @property
    def misses(self) -> tuple[UnitClock, ...]:
        """The units whose budget ran out, in process order."""
        return tuple(unit for unit in self.units if unit.missed)


# --- replaying events --------------------------------------------------------------------------------


@dataclass
class _ActivityTrack:
    """What the events say about one activity."""

    first_start: datetime | None = None
    finished_at: datetime | None = None
    finished_try: int = 0
    latest_start_try: int = 0
    wait_opened_at: datetime | None = None
    explicit_waits: list[tuple[datetime, datetime | None]] | None = None
    window_waits: list[tuple[datetime, datetime | None, str]] | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None and self.finished_try >= self.latest_start_try


def _instant(row: Mapping[str, Any], index: int) -> datetime:
    at = row.get("at")
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise SlaClockError(
            f"event #{index} ({row.get('activity_key')!r} {row.get('event')!r}) has at={at!r}; "
            "it must be a timezone-aware datetime (as the ledger returns it)"
        )
    return at.astimezone(UTC)


def _tracks(model: ProcessModel, events: Iterable[Mapping[str, Any]]) -> dict[str, _ActivityTrack]:
    tracks = {activity.key: _ActivityTrack() for activity in model.activities}
    ordered = sorted(
        ((_instant(row, index), index, row) for index, row in enumerate(events)), key=lambda e: e[:2]
    )
    for at, index, row in ordered:
        key, kind = row.get("activity_key"), row.get("event")
        track = tracks.get(key) if isinstance(key, str) else None
        if track is None:
            continue  # an activity the model no longer has (e.g. a run made by an older DAG version)
        try_number = int(row.get("try_number") or 1)
        if kind in _START_EVENTS:
            if track.first_start is None or at < track.first_start:
                track.first_start = at
            track.latest_start_try = max(track.latest_start_try, try_number)
        elif kind == "finished":
            if track.finished_at is None or try_number >= track.finished_try:
                track.finished_at, track.finished_try = at, try_number
            _close_wait(track, at)
        elif kind == "waiting_on_customer":
            if track.wait_opened_at is None:
                track.wait_opened_at = at
        elif kind == "resumed":
            _close_wait(track, at)
        elif kind == "waiting_for_window":
            detail = row.get("detail") or {}
            until = _until(detail.get("until"), index, key)
            reason = str(detail.get("reason") or "")
            track.window_waits = [*(track.window_waits or []), (at, until, reason)]
        elif kind != "failed":
            raise SlaClockError(
                f"event #{index} ({key!r}) is {kind!r}; known events: ready, started, "
                "waiting_on_customer, resumed, waiting_for_window, finished, failed"
            )
    _keep_open_waits(tracks)
    _infer_ready(model, tracks)
    return tracks


def _keep_open_waits(tracks: Mapping[str, _ActivityTrack]) -> None:
    """A customer wait still open after the last event is an open span."""
    for track in tracks.values():
        if track.wait_opened_at is not None:
            track.explicit_waits = [*(track.explicit_waits or []), (track.wait_opened_at, None)]
            track.wait_opened_at = None


def _until(value: Any, index: int, key: object) -> datetime | None:
    """``detail.until`` of a ``waiting_for_window`` event: an ISO instant with an offset (or absent)."""
    if value is None:
        return None
    try:
        until = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        until = None
    if until is None or until.tzinfo is None or until.utcoffset() is None:
        raise SlaClockError(
            f"event #{index} ({key!r} waiting_for_window) has detail.until={value!r}; it must be an ISO "
            "instant with a UTC offset"
        )
    return until.astimezone(UTC)


def _scheduled_waits(model: ProcessModel, tracks: Mapping[str, _ActivityTrack]) -> list[ScheduledWait]:
    """Each activity's window waits, ended at the activity's end when that came first."""
    found = []
    for activity in model.activities:
        track = tracks[activity.key]
        unit = model.budget_unit_of(activity.key)
        for start, until, reason in track.window_waits or []:
            end = until
            if track.finished_at is not None and track.finished_at >= start:
                end = track.finished_at if end is None else min(end, track.finished_at)
            found.append(ScheduledWait(unit.id if unit else activity.key, activity.key, start, end, reason))
    return found


def _infer_ready(model: ProcessModel, tracks: Mapping[str, _ActivityTrack]) -> None:
    """An activity whose upstream all finished is ready then, even before its task runs.

    The listener writes ``ready`` only once the task runs (backdated to its upstream's finish); a task
    queued for a worker would otherwise start its budget late, and a miss would be found late.
    """
    for activity in model.topological_order():
        track = tracks[activity.key]
        if track.first_start is not None or not activity.after:
            continue
        upstream = [tracks[key] for key in activity.after]
        if all(up.finished for up in upstream):
            track.first_start = max(up.finished_at for up in upstream if up.finished_at is not None)


def _close_wait(track: _ActivityTrack, at: datetime) -> None:
    if track.wait_opened_at is not None:
        track.explicit_waits = [*(track.explicit_waits or []), (track.wait_opened_at, at)]
        track.wait_opened_at = None


def _merge(spans: Iterable[tuple[datetime, datetime | None]]) -> list[tuple[datetime, datetime | None]]:
    """Overlapping or touching spans as one; ``None`` ends mean "still open" (later than anything)."""
    merged: list[tuple[datetime, datetime | None]] = []
    for start, end in sorted(spans, key=lambda span: span[0]):
        if merged and (merged[-1][1] is None or start <= merged[-1][1]):
            last_start, last_end = merged[-1]
            merged[-1] = (last_start, None if end is None or last_end is None else max(last_end, end))
        else:
            merged.append((start, end))
    return merged


def _activity_waits(model: ProcessModel, tracks: Mapping[str, _ActivityTrack]) -> list[CustomerWait]:
    waits = []
    for activity in model.activities:
        track = tracks[activity.key]
        spans = list(track.explicit_waits or [])
        if activity.waits_on_customer and not spans and track.first_start is not None:
            spans.append((track.first_start, track.finished_at if track.finished else None))
        unit = model.budget_unit_of(activity.key)
        for start, end in _merge(spans):
            waits.append(CustomerWait(unit.id if unit else activity.key, activity.key, start, end))
    return waits


# --- one unit's clock ------------------------------------------------------------------------------


def _unit_clock(
    unit: BudgetUnit,
    tracks: Mapping[str, _ActivityTrack],
    waits: list[CustomerWait],
    scheduled: list[ScheduledWait],
    clock: BusinessClock,
    now: datetime,
) -> UnitClock:
    members = [tracks[key] for key in unit.activity_keys]
    starts = [track.first_start for track in members if track.first_start is not None]
    budget = float(unit.days)
    current = next((key for key in unit.activity_keys if not tracks[key].finished), unit.activity_keys[-1])
    if not starts:
        return UnitClock(
            unit.id, unit.title, unit.owner, unit.activity_keys, budget, "not_started",
            None, None, 0.0, 0.0, None, None, None, False, 0.0, current,
        )  # fmt: skip
    start = min(starts)
    finished_at = None
    if all(track.finished for track in members):
        finished_at = max(track.finished_at for track in members if track.finished_at is not None)
    end = finished_at or now
    customer = []
    if unit.owner != Role.CUSTOMER:
        customer = [(w.started_at, w.ended_at) for w in waits if w.budget_unit == unit.id]
    windows = [(w.started_at, w.ends_at) for w in scheduled if w.budget_unit == unit.id]
    pauses = _clipped(customer + windows, start, end, finished_at)
    paused = _span_days(pauses, end, clock)
    customer_days = _span_days(_clipped(customer, start, end, finished_at), end, clock)
    window_pauses = _clipped(windows, start, end, finished_at)
    scheduled_days = _span_days(window_pauses, end, clock)
    open_pause = finished_at is None and bool(pauses) and pauses[-1][1] is None
    in_window_wait = finished_at is None and any(
        s <= now and (e is None or now < e) for s, e in window_pauses
    )
    consumed = clock.business_days_between(start, end) - paused
    ran_out = _run_out_instant(start, budget, pauses, clock)
    if finished_at is not None:
        status: UnitStatus = "finished"
        missed = ran_out is not None and ran_out < finished_at
    else:
        status = "waiting_for_window" if in_window_wait else "running"
        status = "paused_on_customer" if open_pause and not in_window_wait else status
        missed = ran_out is not None and ran_out <= now
    due_at = ran_out if status in ("running", "waiting_for_window") else None
    return UnitClock(
        id=unit.id,
        title=unit.title,
        owner=unit.owner,
        activity_keys=unit.activity_keys,
        budget_days=budget,
        status=status,
        started_at=start,
        finished_at=finished_at,
        consumed_days=consumed,
        paused_days=customer_days,
        due_at=due_at,
        ran_out_at=ran_out if missed else None,
        planned_finish=clock.add_business_days(start, budget + paused),
        missed=missed,
        overrun_days=max(consumed - budget, 0.0) if missed else 0.0,
        current_activity=current,
        scheduled_days=scheduled_days,
    )


def _clipped(
    spans: list[tuple[datetime, datetime | None]],
    start: datetime,
    end: datetime,
    finished_at: datetime | None,
) -> list[tuple[datetime, datetime | None]]:
    """Wait spans merged and clipped to the unit's ``[start, end]``; an open one ending at ``end`` stays
    open ("still waiting"); a known end later than ``now`` is kept (a window wait's opening)."""
    pauses: list[tuple[datetime, datetime | None]] = []
    for wait_start, wait_end in _merge(spans):
        clipped_start, clipped_end = max(wait_start, start), wait_end
        if finished_at is not None:
            clipped_end = finished_at if wait_end is None else min(wait_end, finished_at)
        if clipped_end is None and clipped_start <= end:  # open, maybe opened just now
            pauses.append((clipped_start, None))
        elif clipped_start < end and clipped_end is not None and clipped_end > clipped_start:
            pauses.append((clipped_start, clipped_end))
    return pauses


def _span_days(pauses: list[tuple[datetime, datetime | None]], end: datetime, clock: BusinessClock) -> float:
    return sum(clock.business_days_between(s, end if e is None else min(e, end)) for s, e in pauses)


def _run_out_instant(
    start: datetime, budget: float, pauses: list[tuple[datetime, datetime | None]], clock: BusinessClock
) -> datetime | None:
    """When consumed time reaches ``budget``; ``None`` if an open pause began before that."""
    paused = 0.0
    for pause_start, pause_end in pauses:
        candidate = clock.add_business_days(start, budget + paused)
        if candidate <= pause_start:
            return candidate
        if pause_end is None:
            return None
        paused += clock.business_days_between(pause_start, pause_end)
    return clock.add_business_days(start, budget + paused)


# --- reminders ----------------------------------------------------------------------------------


def _reminder_due(clock: BusinessClock, wait: CustomerWait, reminder_days: float, k: int) -> datetime:
    return clock.add_business_days(wait.started_at, k * reminder_days)


def _due_reminders(
    waits: list[CustomerWait], clock: BusinessClock, reminder_days: float, now: datetime
) -> list[Reminder]:
    found: list[tuple[datetime, str, CustomerWait]] = []
    for wait in waits:
        k = 1
        while True:
            due = _reminder_due(clock, wait, reminder_days, k)
            if due > now or (wait.ended_at is not None and due >= wait.ended_at):
                break
            found.append((due, wait.activity_key, wait))
            k += 1
    numbers: dict[str, int] = {}
    reminders = []
    for due, _, wait in sorted(found, key=lambda item: (item[0], item[1])):
        numbers[wait.budget_unit] = numbers.get(wait.budget_unit, 0) + 1
        reminders.append(
            Reminder(wait.budget_unit, wait.activity_key, numbers[wait.budget_unit], wait.started_at, due)
        )
    return reminders


def _next_reminder_after(
    clock: BusinessClock, wait: CustomerWait, reminder_days: float, now: datetime
) -> datetime:
    """The first reminder instant of an open wait strictly after ``now``."""
    elapsed = clock.business_days_between(wait.started_at, now)
    k = max(1, math.floor(elapsed / reminder_days))
    while k > 1 and _reminder_due(clock, wait, reminder_days, k - 1) > now:
        k -= 1
    while (due := _reminder_due(clock, wait, reminder_days, k)) <= now:
        k += 1
    return due


# --- public API -----------------------------------------------------------------------------------


def sla_state(
    model: ProcessModel,
    clock: BusinessClock,
    events: Iterable[Mapping[str, Any]],
    *,
    reminder_days: float,
    now: datetime,
) -> SlaState:
    """Every budget unit's clock and the reminders due at ``now``, from a run's activity events.

    ``model`` is the process with the customer's overrides (``config.process_model()``),
    ``reminder_days`` the customer-wait reminder budget (``config.customer_wait.reminder_days``).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise SlaClockError(f"now={now!r} must be a timezone-aware datetime")
    if not reminder_days > 0:
        raise SlaClockError(f"reminder_days={reminder_days!r} must be a positive number of business days")
    now = now.astimezone(UTC)
    tracks = _tracks(model, events)
    waits = _activity_waits(model, tracks)
    scheduled = _scheduled_waits(model, tracks)
    units = tuple(_unit_clock(unit, tracks, waits, scheduled, clock, now) for unit in model.budget_units)
    reminders = _due_reminders(waits, clock, reminder_days, now)
    return SlaState(now, clock, reminder_days, units, tuple(waits), tuple(reminders), tuple(scheduled))


def next_due_at(state: SlaState, now: datetime) -> datetime | None:
    """The earliest instant after ``now`` at which a miss or a reminder falls due without new events.

    ``None`` when nothing can: every unit is finished, paused, missed or not started and no wait is open.
    """
    now = now.astimezone(UTC)
    candidates = [
        unit.due_at
        for unit in state.units
        if unit.due_at is not None and not unit.missed and unit.due_at > now
    ]
    candidates += [
        _next_reminder_after(state.clock, wait, state.reminder_days, now)
        for wait in state.waits
        if wait.ended_at is None
    ]
    return min(candidates, default=None)


def final_activity_key(model: ProcessModel) -> str:
    """The activity whose ``finished`` ends the run: the last one in dependency order."""
    return model.topological_order()[-1].key


def run_is_over(model: ProcessModel, events: Iterable[Mapping[str, Any]]) -> bool:
    """True once the final activity finished, or any activity failed for good.

    A ``failed`` event is final when its ``detail`` says ``{"terminal": true}`` (no retry left).
    """
    final = final_activity_key(model)
    for row in events:
        if row.get("event") == "finished" and row.get("activity_key") == final:
            return True
        if row.get("event") == "failed" and (row.get("detail") or {}).get("terminal") is True:
            return True
    return False
