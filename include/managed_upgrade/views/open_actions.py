"""The questions waiting on one person, across their customers, so a consultant knows what to answer first.

A question is an unanswered HITL detail of Airflow. It lives either in the customer's own DAG (a gate:
its task id is the activity) or in a run of a review DAG -- the shared ``managed_upgrade_review`` or
the per-customer ``managed_upgrade_review__<customer_id>`` -- whose conf names the customer run and
the task that asked (:meth:`managed_upgrade_airflow.gates.questions.ReviewQuestion.to_conf`). Both map
to the same customer, run and activity here. Someone sees a question only if it is assigned to them
and they may read both the DAG it lives in and the customer's DAG.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from managed_upgrade.dag_ids import DAG_ID_PREFIX, dag_id_for
from managed_upgrade.review.review_runs import REVIEW_DAG_ID
from managed_upgrade.sla.clock import SlaState, sla_state
from managed_upgrade.views.run_facts import RunFacts

REVIEW_DAG_PREFIX = f"{REVIEW_DAG_ID}__"
"""Per-customer review DAGs: ``managed_upgrade_review__<customer_id>``."""


@dataclass(frozen=True)
class OpenQuestion:
    """An unanswered HITL detail as Airflow holds it."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    subject: str
    assignees: tuple[str, ...]
    """Airflow user ids allowed to answer."""
    created_at: datetime
    run_conf: Mapping[str, Any] | None = None
    """The conf of the run holding it (a review run's conf names the customer run)."""


@dataclass(frozen=True)
class CustomerRef:
    """Which customer, run and activity a question belongs to (run/activity unknown: ``None``)."""

    customer_id: str
    dag_id: str
    run_id: str | None
    activity_key: str | None


@dataclass(frozen=True)
class OpenAction:
    """One row of "my open actions"."""

    customer_id: str
    dag_id: str
    run_id: str | None
    activity_key: str | None
    stage: str | None
    subject: str
    since: datetime
    waited: timedelta
    waited_business_days: float | None
    sla: str
    """The activity's budget: ``running``, ``missed``, ``paused_on_customer``, ``finished``, ``unknown``."""
    due_at: datetime | None
    answer_path: str
    """Airflow UI route of the answer form (relative to the UI root)."""


def customer_of(question: OpenQuestion) -> CustomerRef | None:
    """The customer run a question belongs to, whichever DAG holds it; ``None`` if it is not ours."""
    if question.dag_id.startswith(DAG_ID_PREFIX):
        customer_id = question.dag_id.removeprefix(DAG_ID_PREFIX)
        return CustomerRef(customer_id, question.dag_id, question.run_id, question.task_id)
    if question.dag_id != REVIEW_DAG_ID and not question.dag_id.startswith(REVIEW_DAG_PREFIX):
        return None
    conf = question.run_conf or {}
    parent_dag = conf.get("dag_id")
    if isinstance(parent_dag, str) and parent_dag.startswith(DAG_ID_PREFIX):
        customer_id = parent_dag.removeprefix(DAG_ID_PREFIX)
        if (
            question.dag_id.startswith(REVIEW_DAG_PREFIX)
            and question.dag_id != REVIEW_DAG_PREFIX + customer_id
        ):
            return None  # a per-customer review DAG never asks for another customer
        run_id, task_id = conf.get("run_id"), conf.get("task_id")
        return CustomerRef(
            customer_id,
            parent_dag,
            run_id if isinstance(run_id, str) else None,
            task_id if isinstance(task_id, str) else None,
        )
    if question.dag_id.startswith(REVIEW_DAG_PREFIX):
        customer_id = question.dag_id.removeprefix(REVIEW_DAG_PREFIX)
        return CustomerRef(customer_id, dag_id_for(customer_id), None, None)
    return None


def answer_path(question: OpenQuestion) -> str:
    """The UI's answer form: ``/dags/{dag}/runs/{run}/tasks/{task}[/mapped/{i}]/required_actions``."""
    dag, run, task = (quote(part, safe="") for part in (question.dag_id, question.run_id, question.task_id))
    mapped = f"/mapped/{question.map_index}" if question.map_index >= 0 else ""
    return f"/dags/{dag}/runs/{run}/tasks/{task}{mapped}/required_actions"


def my_open_actions(
    questions: Iterable[OpenQuestion],
    *,
    user_ids: Collection[str],
    readable_dag_ids: Collection[str],
    runs: Mapping[tuple[str, str], RunFacts],
    now: datetime,
) -> list[OpenAction]:
    """The questions assigned to the caller that they may read, oldest first, with their SLA state.

    ``user_ids``: what the caller may appear as among a question's assignees -- the auth manager's
    user id and the user name (the gates assign by Airflow user name; FAB's ids are numbers).

    ``runs``: the ledger facts of the customer runs (by ``(dag_id, run_id)``), for the activity's
    budget and business-day waiting time; a question whose run is not there still shows.
    """
    now = now.astimezone(UTC)
    states: dict[tuple[str, str], SlaState | None] = {}
    actions = []
    for question in questions:
        ref = customer_of(question)
        if ref is None or not set(user_ids) & set(question.assignees):
            continue
        if question.dag_id not in readable_dag_ids or ref.dag_id not in readable_dag_ids:
            continue
        since = question.created_at.astimezone(UTC)
        facts = runs.get((ref.dag_id, ref.run_id)) if ref.run_id else None
        sla, due, business_days = "unknown", None, None
        if facts is not None and facts.reading is not None:
            key = (ref.dag_id, facts.run_id)
            if key not in states:
                reading = facts.reading
                states[key] = sla_state(
                    reading.model,
                    reading.clock,
                    list(facts.events),
                    reminder_days=reading.config.customer_wait.reminder_days,
                    now=now,
                )
            state = states[key]
            unit = facts.reading.model.budget_unit_of(ref.activity_key) if ref.activity_key else None
            if state is not None and unit is not None:
                clock = state.unit(unit.id)
                sla, due = ("missed" if clock.missed else clock.status), clock.due_at
            business_days = round(facts.reading.clock.business_days_between(since, now), 2)
        actions.append(
            OpenAction(
                customer_id=ref.customer_id,
                dag_id=ref.dag_id,
                run_id=ref.run_id,
                activity_key=ref.activity_key,
                stage=ref.activity_key.split(".", 1)[0] if ref.activity_key else None,
                subject=question.subject,
                since=since,
                waited=now - since,
                waited_business_days=business_days,
                sla=sla,
                due_at=due,
                answer_path=answer_path(question),
            )
        )
    return sorted(actions, key=lambda action: (action.since, action.customer_id))
