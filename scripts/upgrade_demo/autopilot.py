"""Answers a run's human gates through the REST API as their assigned users, like people would.

Used by ``make demo AUTO=1``, the end-to-end tests and the benchmarks. A :class:`GatePolicy` says
what to answer per activity (option and form values); anything it does not name gets the default
answer of that activity, and a gate with no default stops the autopilot with a clear message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_local.client import AirflowClient

TERMINAL_RUN_STATES = {"success", "failed"}


@dataclass(frozen=True)
class Answer:
    """One answer to a gate: the option chosen and the form values it fills in."""

    option: str
    values: Mapping[str, Any] = field(default_factory=dict)
    user: str | None = None
    """Answer as this user (default: the first assigned user)."""


DEFAULT_ANSWERS: dict[str, Answer] = {
    "respond_to_request": Answer(
        "Send receipt to customer",
        {"information_gathered": "Request details confirmed with the customer by phone."},
    ),
    "acknowledge_request_formally": Answer(
        "Send formal acknowledgement", {"kickoff_note": "Kick-off call proposed for next Monday."}
    ),
    "analyse_questionnaire_and_system": Answer(
        "Analysis complete", {"analysis_notes": "Questionnaire and Dev inventory reviewed; no blockers."}
    ),
    "review_test_case_verification": Answer("Approve baseline", {"review_notes": "Baseline accepted."}),
    "fix_and_retest": Answer(
        "Accept with known issues", {"known_issues_reason": "Accepted by the demo autopilot."}
    ),
    "customer_sign_off": Answer("Signed off", {"customer_contact": "Customer test lead", "feedback": ""}),
}
"""What a cooperative consultant and PM answer at each activity (keyed by activity id)."""


Decider = Callable[[dict[str, Any], int], Answer | None]
"""``(hitl_detail, times_this_task_was_answered) -> Answer`` for scripted scenarios; None = default."""


@dataclass
class GatePolicy:
    """Answers per activity key (``dev.customer_sign_off``) or id (``customer_sign_off``)."""

    answers: dict[str, Answer | Decider] = field(default_factory=dict)

    def answer_for(self, detail: dict[str, Any], round_number: int) -> Answer:
        task_id = gate_task_id(detail)
        activity_id = task_id.rsplit(".", 1)[-1]
        for key in (task_id, activity_id):
            chosen = self.answers.get(key)
            if callable(chosen):
                chosen = chosen(detail, round_number)
            if chosen is not None:
                return chosen
        if activity_id in DEFAULT_ANSWERS:
            return DEFAULT_ANSWERS[activity_id]
        raise LookupError(f"the autopilot has no answer for gate {task_id!r} (options {detail['options']})")


def gate_task_id(detail: Mapping[str, Any]) -> str:
    """The customer run's task a question belongs to (a review question names it in ``gate``)."""
    gate = detail.get("gate") or {}
    return str(gate.get("task_id") or detail["task_instance"]["task_id"])


def params_input(detail: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Every form field of the gate: the answer's values, the field's default for the rest.

    The HITL operator refuses a partial form, so a field the answer does not mention keeps its default.
    """
    fields = detail.get("params") or {}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"gate {gate_task_id(detail)} has no form field(s) {sorted(unknown)}")
    result = {}
    for name, spec in fields.items():
        default = spec.get("value") if isinstance(spec, dict) else spec
        result[name] = values.get(name, default)
    return result


@dataclass
class AnsweredGate:
    task_id: str
    question: int | None
    """Number of a review question (fix rounds, sign-offs); None for the run's other gates."""
    user: str
    option: str


def drive_run(
    api: AirflowClient,
    dag_id: str,
    run_id: str,
    policy: GatePolicy | None = None,
    *,
    timeout: float = 900.0,
    on_answer: Callable[[AnsweredGate], None] | None = None,
    check: Callable[[], None] | None = None,
    stop_at: str | None = None,
) -> tuple[dict[str, Any], list[AnsweredGate]]:
    """Answer every gate of the run as it opens until the run ends; returns (run, answers given).

    `check` is called between polls and may raise to give up early (e.g. when Airflow's scheduler died).
    With `stop_at` (a gate's task id, e.g. ``dev.customer_sign_off``) it returns, unanswered, as soon as
    that gate waits for input, leaving it to someone else (a person in the browser).
    """
    policy = policy or GatePolicy()
    answered: list[AnsweredGate] = []
    rounds: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while True:
        run = api.dag_run(dag_id, run_id)
        if run["state"] in TERMINAL_RUN_STATES:
            return run, answered
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"run {dag_id}/{run_id} still {run['state']} after {timeout:.0f} s; "
                f"task states: {api.task_states(dag_id, run_id)}"
            )
        pending = api.run_gates(dag_id, run_id)
        if not pending:
            time.sleep(1.0)
            continue
        if stop_at is not None and any(gate["gate"]["task_id"] == stop_at for gate in pending):
            return run, answered
        for stale in pending:
            task_id = stale["gate"]["task_id"]
            # Waits until the scheduler has parked the task: answering earlier can fail it (3.3.2).
            detail = api.wait_for_pending_hitl(dag_id, run_id, task_id, timeout=120)
            answer = policy.answer_for(detail, rounds.get(task_id, 0))
            user = answer.user or detail["assigned_users"][0]["id"]
            api.answer_gate(detail, [answer.option], params_input(detail, answer.values), user=user)
            rounds[task_id] = rounds.get(task_id, 0) + 1
            gate = AnsweredGate(task_id, detail["gate"]["question"], user, answer.option)
            answered.append(gate)
            if on_answer is not None:
                on_answer(gate)
