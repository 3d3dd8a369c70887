"""One run's ledger rows and what they mean together, so every view reads a run the same way.

A run is read through the config snapshot it was started with (calendar, users, overrides, wait
budget) and its conf (rehearsal compression, deadline), exactly as the SLA watch and the deadline
alerts read it; a view never re-reads a customer file that may have changed since.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from typing import Any, Literal

from managed_upgrade.config import CustomerConfig
from managed_upgrade.config.snapshot import ConfigSnapshot
from managed_upgrade.process.model import ProcessModel
from managed_upgrade.sla.alerts import AlertKind
from managed_upgrade.sla.calendar import BusinessClock, calendar_for
from managed_upgrade.sla.deadlines import deadline_date, due_at, rehearsal_seconds

RunStatus = Literal["running", "finished", "stopped", "failed"]

RUN_LEVEL_STOPS = ("run_marked_failed", "run_marked_success", "run_failed")
"""``run_stops.how`` values that end the whole run (the others stop one task)."""


@dataclass(frozen=True)
class RunFacts:
    """One run's ledger rows: ``runs``, ``run_configs``, ``planned_activities``, events, misses, stops."""

    dag_id: str
    run_id: str
    customer_id: str
    started_at: datetime
    conf: Mapping[str, Any] = field(default_factory=dict)
    summary: Mapping[str, Any] | None = None
    finished_at: datetime | None = None
    config_row: Mapping[str, Any] | None = None
    """The ``run_configs`` row: ``None`` until the run's first task stored it."""
    plan: Sequence[Mapping[str, Any]] = ()
    events: Sequence[Mapping[str, Any]] = ()
    sla_misses: Sequence[Mapping[str, Any]] = ()
    stops: Sequence[Mapping[str, Any]] = ()

    @property
    def key(self) -> tuple[str, str]:
        return self.dag_id, self.run_id

    @property
    def status(self) -> RunStatus:
        """Finished (closure recorded its summary), stopped by hand, failed for good, else running."""
        if self.summary is not None or self.finished_at is not None:
            return "finished"
        if any(stop.get("task_id") is None and stop.get("how") in RUN_LEVEL_STOPS for stop in self.stops):
            return "stopped"
        for event in self.events:
            if event.get("event") == "failed" and (event.get("detail") or {}).get("terminal") is True:
                return "failed"
        return "running"

    @cached_property
    def reading(self) -> RunReading | None:
        """The run read through its config snapshot; ``None`` without one (see :attr:`config_problem`)."""
        return None if self.config_row is None or self.config_problem else _reading(self)

    @cached_property
    def config_problem(self) -> str | None:
        """Why the snapshot cannot be read (no snapshot yet, or it no longer validates), else ``None``."""
        if self.config_row is None:
            return "the run has not stored its config yet (its first task has not started)"
        try:
            _restore(self.config_row)
        except ValueError as error:  # a pydantic ValidationError or the loader's InputFileError
            return f"the run's config snapshot does not validate any more: {error}"
        return None


@dataclass(frozen=True, eq=False)
class RunReading:
    """A run's config, process model, business clock and run-level deadlines."""

    config: CustomerConfig
    model: ProcessModel
    clock: BusinessClock
    seconds_per_business_day: float | None
    start: datetime
    deadline: date
    deadline_at: datetime
    """End of the customer's deadline date (compressed like the run in a rehearsal)."""
    ceiling_at: datetime
    """The process's 10-week ceiling from the run's start (compressed like the run in a rehearsal)."""
    rehearse_windows: bool = False
    """A rehearsal that honours the upgrade windows (trigger form); a real run always does."""

    @property
    def is_rehearsal(self) -> bool:
        return self.seconds_per_business_day is not None


_RESTORED: dict[str, CustomerConfig] = {}
"""Snapshots by digest: one validation per config version, however many runs and requests read it."""


def clear_config_cache() -> None:
    """Forget the validated snapshots (a benchmark's cold start; a long-lived server keeps them)."""
    _RESTORED.clear()


def _restore(row: Mapping[str, Any]) -> CustomerConfig:
    snapshot = ConfigSnapshot.from_row(row)
    config = _RESTORED.get(snapshot.digest)
    if config is None:
        config = _RESTORED[snapshot.digest] = snapshot.restore()
    return config


def _reading(facts: RunFacts) -> RunReading:
    assert facts.config_row is not None
    config = _restore(facts.config_row)
    seconds = rehearsal_seconds(facts.conf)
    real_calendar = calendar_for(config.calendar, None)
    clock = real_calendar if seconds is None else calendar_for(config.calendar, seconds)
    starts = [row["planned_start"] for row in facts.plan if row.get("planned_start") is not None]
    start = min(starts) if starts else facts.started_at
    start = start.astimezone(UTC)
    deadline = deadline_date(facts.conf, config.request_case.deadline)

    def alert(kind: Literal[AlertKind.DEADLINE_MISSED, AlertKind.TIMELINE_CEILING]) -> datetime:
        return due_at(
            kind, deadline=deadline, run_start=start, calendar=real_calendar, seconds_per_business_day=seconds
        )

    return RunReading(
        config=config,
        model=config.process_model(),
        clock=clock,
        seconds_per_business_day=seconds,
        start=start,
        deadline=deadline,
        deadline_at=alert(AlertKind.DEADLINE_MISSED),
        ceiling_at=alert(AlertKind.TIMELINE_CEILING),
        rehearse_windows=facts.conf.get("rehearse_windows") is True,
    )
