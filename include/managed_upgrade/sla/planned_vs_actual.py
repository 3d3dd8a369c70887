"""Planned versus actual per budget, so managers see where a run's schedule went and by how much.

The baseline is the plan saved when the run started (ledger ``planned_activities``); the actuals
are the ledger's activity events, measured by the SLA clock (:mod:`managed_upgrade.sla.clock`) so
"consumed" here means what the alerts meant: business days on the customer's calendar, customer
waits excluded from consultant and project-manager budgets. Variance is in business days between
planned and actual finish (``None`` until the budget's last activity finished); positive means late.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from managed_upgrade.process.model import ProcessModel
from managed_upgrade.sla.calendar import BusinessClock
from managed_upgrade.sla.clock import sla_state


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _round(days: float | None) -> float | None:
    return None if days is None else round(days, 2)


def planned_vs_actual(
    model: ProcessModel,
    clock: BusinessClock,
    plan_rows: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    *,
    reminder_days: float,
    now: datetime,
) -> dict[str, Any]:
    """``{"units": [...], "planned_finish", "actual_finish", "variance_days", "misses"}``, JSON-ready.

    One entry per budget unit in process order: owner, budget, planned start and finish (the span
    of its activities in the baseline), actual start and finish, consumed and paused business days,
    whether it missed its budget and by how much, and the finish variance.
    """
    rows = list(plan_rows)
    planned: dict[str, tuple[datetime | None, datetime | None]] = {}
    for row in rows:
        planned[row["activity_key"]] = (row.get("planned_start"), row.get("planned_finish"))
    state = sla_state(model, clock, list(events), reminder_days=reminder_days, now=now)
    units = []
    for unit in state.units:
        starts = [start for key in unit.activity_keys if key in planned and (start := planned[key][0])]
        finishes = [finish for key in unit.activity_keys if key in planned and (finish := planned[key][1])]
        planned_start = min(starts) if starts else None
        planned_finish = max(finishes) if finishes else None
        actual = unit.finished_at
        variance = _signed_days(clock, planned_finish, actual) if planned_finish and actual else None
        units.append(
            {
                "budget_unit": unit.id,
                "title": unit.title,
                "owner": unit.owner,
                "status": unit.status,
                "budget_days": unit.budget_days,
                "planned_start": _iso(planned_start),
                "planned_finish": _iso(planned_finish),
                "actual_start": _iso(unit.started_at),
                "actual_finish": _iso(actual),
                "consumed_days": _round(unit.consumed_days),
                "customer_wait_days": _round(unit.paused_days),
                "scheduled_wait_days": _round(unit.scheduled_days),
                "missed": unit.missed,
                "overrun_days": _round(unit.overrun_days),
                "variance_days": _round(variance),
            }
        )
    planned_end = max((row["planned_finish"] for row in rows if row.get("planned_finish")), default=None)
    finished = [unit.finished_at for unit in state.units if unit.finished_at is not None]
    actual_end = max(finished) if finished and all(u.status == "finished" for u in state.units) else None
    return {
        "units": units,
        "planned_finish": _iso(planned_end),
        "actual_finish": _iso(actual_end),
        "variance_days": _round(_signed_days(clock, planned_end, actual_end))
        if planned_end and actual_end
        else None,
        "misses": [unit["budget_unit"] for unit in units if unit["missed"]],
    }


def _signed_days(clock: BusinessClock, planned: datetime, actual: datetime) -> float:
    if actual >= planned:
        return clock.business_days_between(planned, actual)
    return -clock.business_days_between(actual, planned)
