"""Every customer's upgrade on one page, so a manager sees which ones are at risk and which are due.

One row per customer: the current upgrade (the latest run still going, else the latest run) with its
stage, the share of its budget used, planned and forecast finish against the deadline, who must act
and for how long (or, while an environment's backup or upgrade waits for its upgrade window, that the
run waits for it until when and why: scheduled, nobody's delay), and its SLA misses; then the last
completed upgrade and whether the yearly upgrade is due. A run is at risk when its forecast passes the
customer's deadline, or a budget still running has used more than a set share of its days. (The
10-week ceiling is drawn on the run's page: with the default customer-wait budgets the plan itself
ends past it, so it would flag every run.)

The cost is linear in the runs handed in: each current run is re-forecast once.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from managed_upgrade.sla.clock import sla_state
from managed_upgrade.views.run_facts import RunFacts
from managed_upgrade.views.schedule import PendingAction, WindowWait, run_schedule

DEFAULT_BUDGET_SHARE = 0.8
"""A running budget with more than this share of its business days used puts the run at risk."""
UPGRADE_INTERVAL = timedelta(days=365)
"""Customers upgrade yearly."""
DEFAULT_DUE_LEAD = timedelta(days=30)
"""The yearly upgrade shows as due this long before the anniversary of the last one."""


@dataclass(frozen=True)
class CustomerRuns:
    """A customer's DAG and its recorded runs (any order)."""

    dag_id: str
    customer_id: str
    runs: Sequence[RunFacts] = ()


@dataclass(frozen=True)
class PortfolioRow:
    """One customer's line of the portfolio."""

    customer_id: str
    customer_name: str
    dag_id: str
    run_id: str | None
    status: str
    """``running``, ``finished``, ``stopped``, ``failed``, ``unreadable`` or ``none`` (never run)."""
    stage: str | None
    budget_used_pct: float | None
    planned_finish: datetime | None
    forecast_finish: datetime | None
    deadline: date | None
    at_risk: bool
    risks: tuple[str, ...]
    actions: tuple[PendingAction, ...]
    sla_misses: int
    last_completed_run_id: str | None
    last_completed_at: datetime | None
    upgrade_due: bool
    rehearsal: bool
    problem: str | None = None
    milestones: tuple[tuple[str, datetime, datetime], ...] = field(default=())
    """``(stage, planned start, planned finish)`` of the current run, for the calendar feed."""
    window_waits: tuple[WindowWait, ...] = ()
    """What of the current run waits for its upgrade window now (until when, why): nobody acts."""

    @property
    def waiting_for_window_until(self) -> datetime | None:
        """The latest opening the run waits for now (``None`` when it waits for none, or none recorded)."""
        return max((wait.until for wait in self.window_waits if wait.until is not None), default=None)


@dataclass(frozen=True)
class _Common:
    """The fields of a row that do not depend on reading the current run."""

    customer_id: str
    dag_id: str
    last_completed_run_id: str | None
    last_completed_at: datetime | None
    upgrade_due: bool

    def fields(self) -> dict[str, Any]:
        return dict(self.__dict__)


def current_run(runs: Sequence[RunFacts]) -> RunFacts | None:
    """The latest run still going, else the latest run; ``None`` when there is none."""
    ordered = sorted(runs, key=lambda run: (run.started_at, run.run_id))
    going = [run for run in ordered if run.status == "running"]
    latest = going or ordered
    return latest[-1] if latest else None


def last_completed(runs: Sequence[RunFacts]) -> RunFacts | None:
    finished = [run for run in runs if run.status == "finished"]
    return max(finished, key=_completed_at, default=None)


def _completed_at(run: RunFacts) -> datetime:
    return (run.finished_at or run.started_at).astimezone(UTC)


def portfolio_row(
    customer: CustomerRuns,
    now: datetime,
    *,
    budget_share: float = DEFAULT_BUDGET_SHARE,
    due_lead: timedelta = DEFAULT_DUE_LEAD,
) -> PortfolioRow:
    """One customer's row at ``now``."""
    now = now.astimezone(UTC)
    run = current_run(customer.runs)
    done = last_completed(customer.runs)
    completed_at = _completed_at(done) if done else None
    going = run is not None and run.status == "running"
    due = not going and (completed_at is None or now >= completed_at + UPGRADE_INTERVAL - due_lead)
    common = _Common(customer.customer_id, customer.dag_id, done.run_id if done else None, completed_at, due)
    schedule = run_schedule(run, now) if run is not None else None
    if run is None or schedule is None or run.reading is None:
        return PortfolioRow(
            customer_name=customer.customer_id,
            run_id=run.run_id if run else None,
            status="none" if run is None else "unreadable",
            stage=None,
            budget_used_pct=None,
            planned_finish=None,
            forecast_finish=None,
            deadline=None,
            at_risk=run is not None and going,
            risks=(run.config_problem or "",) if run is not None and run.config_problem else (),
            actions=(),
            sla_misses=len({row.get("budget_unit") for row in run.sla_misses}) if run else 0,
            rehearsal=False,
            problem=run.config_problem if run else None,
            **common.fields(),
        )
    reading = run.reading
    state = sla_state(
        reading.model,
        reading.clock,
        list(run.events),
        reminder_days=reading.config.customer_wait.reminder_days,
        now=now,
    )
    budget = sum(unit.budget_days for unit in state.units)
    consumed = sum(min(unit.consumed_days, unit.budget_days) + unit.overrun_days for unit in state.units)
    risks = []
    if going:
        if schedule.late_for_deadline:
            risks.append(f"forecast finish after the deadline {reading.deadline}")
        for unit in state.units:
            if (
                unit.status != "finished"
                and unit.budget_days
                and unit.consumed_days > budget_share * unit.budget_days
            ):
                risks.append(f"{unit.id}: {unit.consumed_days / unit.budget_days:.0%} of its budget used")
    stage = next((row.stage for row in schedule.rows if row.status != "finished"), None)
    return PortfolioRow(
        customer_name=reading.config.name,
        run_id=run.run_id,
        status=run.status,
        stage=stage if run.status == "running" else (stage or "closure"),
        budget_used_pct=round(100 * consumed / budget, 1) if budget else None,
        planned_finish=schedule.planned_finish,
        forecast_finish=schedule.actual_finish or schedule.forecast_finish,
        deadline=reading.deadline,
        at_risk=bool(risks),
        risks=tuple(risks),
        actions=schedule.actions,
        sla_misses=len(schedule.misses),
        rehearsal=reading.is_rehearsal,
        milestones=_milestones(run),
        window_waits=schedule.window_waits,
        **common.fields(),
    )


def _milestones(run: RunFacts) -> tuple[tuple[str, datetime, datetime], ...]:
    """Each stage's planned window from the run's baseline, in process order."""
    reading = run.reading
    if reading is None:
        return ()
    windows: dict[str, tuple[datetime, datetime]] = {}
    stage_of = {activity.key: activity.stage for activity in reading.model.activities}
    for row in run.plan:
        stage = stage_of.get(str(row.get("activity_key")))
        start, finish = row.get("planned_start"), row.get("planned_finish")
        if stage is None or start is None or finish is None:
            continue
        low, high = windows.get(stage, (start, finish))
        windows[stage] = (min(low, start), max(high, finish))
    order = [stage.id for stage in reading.model.stages]
    return tuple((stage, *windows[stage]) for stage in order if stage in windows)


def portfolio(
    customers: Iterable[CustomerRuns],
    now: datetime,
    *,
    budget_share: float = DEFAULT_BUDGET_SHARE,
    due_lead: timedelta = DEFAULT_DUE_LEAD,
) -> list[PortfolioRow]:
    """Every customer's row, at-risk first, then by customer id."""
    rows = [portfolio_row(c, now, budget_share=budget_share, due_lead=due_lead) for c in customers]
    return sorted(rows, key=lambda row: (not row.at_risk, row.customer_id))


CSV_COLUMNS = (
    "customer_id",
    "customer_name",
    "dag_id",
    "run_id",
    "status",
    "stage",
    "budget_used_pct",
    "planned_finish",
    "forecast_finish",
    "deadline",
    "at_risk",
    "risks",
    "open_actions",
    "sla_misses",
    "last_completed_at",
    "upgrade_due",
    "waiting_for_window_until",
)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _guarded(text: str) -> str:
    """A cell a spreadsheet would run as a formula gets a leading apostrophe (CSV injection)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def portfolio_csv(rows: Iterable[PortfolioRow]) -> str:
    """The rows as CSV (RFC 4180, CRLF line ends), one line per customer, columns as :data:`CSV_COLUMNS`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        actions = "; ".join(
            [
                f"{action.title} ({action.role.value}: {', '.join(action.people)}, "
                f"waiting {action.waited_business_days} business days)"
                for action in row.actions
            ]
            + [
                f"{wait.title} waits for its upgrade window"
                + (f" until {wait.until.isoformat()}" if wait.until else "")
                + (f" ({wait.reason})" if wait.reason else "")
                + ", as scheduled: nobody must act"
                for wait in row.window_waits
            ]
        )
        values = {**{name: getattr(row, name, None) for name in CSV_COLUMNS}}
        values["risks"] = "; ".join(row.risks)
        values["open_actions"] = actions
        writer.writerow([_guarded(_cell(values[name])) for name in CSV_COLUMNS])
    return out.getvalue()
