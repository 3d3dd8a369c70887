"""Upgrade runs as the ledger records them, generated from a customer's plan, for the views' tests.

A run follows its plan stretched by ``slip`` (1.0 = on plan, 1.5 = everything takes half as long
again) up to ``until``: activities that started by then have a ``started`` event, those that finished
a ``finished`` event, at the instants the stretched plan gives them. Customer sign-offs wait on the
customer for their whole span (what the SLA clock assumes when no explicit wait is recorded).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from managed_upgrade.config import CustomerConfig, dag_id_for, load_customer_config
from managed_upgrade.config.snapshot import ConfigSnapshot
from managed_upgrade.sla.plan import Plan, make_customer_plan
from managed_upgrade.views.run_facts import RunFacts

CUSTOMERS = Path(__file__).resolve().parents[1] / "include" / "customers"


@cache
def customer_config(customer_id: str = "acme", template: str = "acme") -> CustomerConfig:
    """The demo customer ``template`` under another id and name (many customers for the portfolio)."""
    config = load_customer_config(CUSTOMERS / f"{template}.yaml")
    if customer_id == config.customer_id:
        return config
    return config.model_copy(update={"customer_id": customer_id, "name": f"{customer_id.title()} Ltd"})


def snapshot_row(config: CustomerConfig, taken_at: datetime) -> dict[str, Any]:
    """The ``run_configs`` row a run of ``config`` stores."""
    return {
        **ConfigSnapshot.of(config).as_row(),
        "taken_at": taken_at,
        "taken_by": "initiation.create_request_case",
    }


def run_plan(
    config: CustomerConfig,
    start: datetime,
    seconds_per_business_day: float | None = None,
    *,
    rehearse_windows: bool = False,
) -> Plan:
    return make_customer_plan(
        config, start, seconds_per_business_day=seconds_per_business_day, rehearse_windows=rehearse_windows
    )


def run_events(plan: Plan, until: datetime, slip: float = 1.0) -> list[dict[str, Any]]:
    """The activity events of a run that follows ``plan`` stretched by ``slip``, up to ``until``."""
    events = []
    for activity in plan.activities:
        start = plan.start + (activity.planned_start - plan.start) * slip
        finish = plan.start + (activity.planned_finish - plan.start) * slip
        if start > until:
            continue
        events.append(
            {"activity_key": activity.key, "event": "started", "try_number": 1, "at": start, "detail": {}}
        )
        if finish <= until:
            events.append(
                {
                    "activity_key": activity.key,
                    "event": "finished",
                    "try_number": 1,
                    "at": finish,
                    "detail": {},
                }
            )
    return sorted(events, key=lambda event: event["at"])


def run_facts(
    customer_id: str,
    start: datetime,
    until: datetime,
    *,
    slip: float = 1.0,
    run_id: str | None = None,
    conf: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
    finished_at: datetime | None = None,
    stops: tuple[dict[str, Any], ...] = (),
    with_config: bool = True,
    template: str = "acme",
    extra_events: tuple[dict[str, Any], ...] = (),
) -> RunFacts:
    """A run of ``customer_id`` (made from the demo customer ``template``) started at ``start`` as the
    ledger shows it at ``until``; ``extra_events`` are added (e.g. a wait for an upgrade window)."""
    config = customer_config(customer_id, template)
    conf = dict(conf or {})
    plan = run_plan(
        config,
        start,
        conf.get("seconds_per_business_day"),
        rehearse_windows=conf.get("rehearse_windows") is True,
    )
    dag_id = dag_id_for(customer_id)
    run_id = run_id or f"manual__{start.isoformat()}"
    return RunFacts(
        dag_id=dag_id,
        run_id=run_id,
        customer_id=customer_id,
        started_at=start,
        conf=conf,
        summary=summary,
        finished_at=finished_at,
        config_row=snapshot_row(config, start) if with_config else None,
        plan=plan.to_rows(dag_id, run_id),
        events=sorted([*run_events(plan, until, slip), *extra_events], key=lambda event: event["at"]),
        stops=stops,
    )


def window_wait(key: str, since: datetime, until: datetime, reason: str) -> tuple[dict[str, Any], ...]:
    """What the ledger holds for a task that started at ``since`` and waits for its window until
    ``until``: its ``started`` event and the ``waiting_for_window`` event the task records."""
    return (
        {"activity_key": key, "event": "started", "try_number": 1, "at": since, "detail": {}},
        {
            "activity_key": key,
            "event": "waiting_for_window",
            "try_number": 1,
            "at": since,
            "detail": {"until": until.isoformat(), "reason": reason, "waiting_for": "window"},
        },
    )
