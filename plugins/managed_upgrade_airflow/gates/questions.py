"""Every question of a review loop is a run of the customer's review DAG, so Airflow shows it fresh.

Airflow 3.3.2 keeps one HITL detail per task instance and, when the task is retried or cleared, only
erases the answer: subject, body, options and form stay those of the first question. "Fix Issues and
Retest" and "Customer Sign-off" ask a different question every round (that round's report; "sign
off?" then "what did you fix?"), so each question needs a task instance of its own. A run of
``managed_upgrade_review__<customer_id>`` is exactly that, created by the review task when it asks (the
way ``TriggerDagRunOperator`` creates runs, deferred until the run ends, holding no worker slot), and it
adds no task to the customer's Grid. The review DAG's runs are also the loop's visible history: one
run per question, named after the customer's run, task and question number.

Each customer has its own review DAG, generated beside its customer DAG with the same
``access_control`` (:mod:`managed_upgrade_airflow.access_control`), so a consultant sees the questions
of their customers only; a review DAG's task refuses a question for another customer.

The question travels as the review run's conf. Only the assigned users can answer it (Airflow
enforces ``assigned_users``), the answer is recorded in the ledger under the customer run's task, and
the review task checks again that the answer came from an assigned user before carrying it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.sdk import Param, ParamsDict  # type: ignore[attr-defined]  # missing from airflow.sdk's stub in 3.3.2

from managed_upgrade.dag_ids import review_dag_id_for
from managed_upgrade.review.review_runs import (
    QUESTION_TASK_ID,
    question_number_of,
    review_run_id,
)
from managed_upgrade.sla.deadlines import rehearsal_seconds
from managed_upgrade_airflow.access_control import access_control_warning_silenced, customer_access_control
from managed_upgrade_airflow.compat import (
    AcceptAnyParamsInput,
    trigger_dag_run_and_wait,
    triggered_run_outcome,
)
from managed_upgrade_airflow.gates.base import FactsGate, hitl_users
from managed_upgrade_airflow.ledger_access import open_ledger

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig

OPEN_QUESTIONS_LIMIT = 100_000
"""Questions stay open for weeks (every run of the customer, every loop); Airflow's default of 16 runs
would queue them."""


class ReviewQuestionError(ValueError):
    """A review run's conf is not a question the review task wrote (e.g. a hand-made trigger)."""


def optional_text(title: str, description: str) -> Param:
    """A multi-line text field the person may leave empty.

    Typed ``["null", "string"]``: Airflow's form treats a field of a non-null type as required and keeps
    the answer buttons disabled while it is empty, so ``type="string"`` with an empty default would
    block every answer given in the UI (the REST API takes the empty string).
    """
    return Param(None, type=["null", "string"], title=title, description=description, format="multiline")


def form_field_specs(fields: Mapping[str, Param]) -> dict[str, dict[str, Any]]:
    """Form fields as JSON for the conf (default, description and JSON schema of each)."""
    specs: dict[str, dict[str, Any]] = {}
    for name, param in fields.items():
        specs[name] = {"default": param.value, "description": param.description, "schema": dict(param.schema)}
    return specs


def form_fields(specs: Mapping[str, Mapping[str, Any]]) -> ParamsDict:
    """The inverse of :func:`form_field_specs`: task-level Params the HITL form shows."""
    fields = ParamsDict()
    for name, spec in specs.items():
        schema = dict(spec.get("schema") or {})
        param = Param(spec.get("default"), description=spec.get("description"), **schema)
        param.source = "task"
        fields[name] = param
    return fields


@dataclass(frozen=True)
class ReviewQuestion:
    """One question of a review loop: whose it is, what it asks, who may answer, and whose ball it is.

    ``customer_wait`` marks a question the customer must answer first (the sign-off): the SLA clock of
    the consultant pauses while it is open.
    """

    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    number: int
    customer_id: str
    subject: str
    body: str
    options: tuple[str, ...]
    assigned_users: tuple[str, ...]
    customer_wait: bool = False
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def review_dag_id(self) -> str:
        """The customer's review DAG, where this question is a run."""
        return review_dag_id_for(self.customer_id)

    @property
    def review_run_id(self) -> str:
        return review_run_id(self.dag_id, self.run_id, self.task_id, self.number)

    def to_conf(self) -> dict[str, Any]:
        data = asdict(self)
        data["options"] = list(self.options)
        data["assigned_users"] = list(self.assigned_users)
        # what other components (the activity listener, clients) read without knowing this class
        data["for"] = {"dag_id": self.dag_id, "run_id": self.run_id, "task_id": self.task_id}
        data["question"] = self.number
        return data

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any] | None) -> ReviewQuestion:
        conf = dict(conf or {})
        names = [name for name in cls.__dataclass_fields__ if name not in ("customer_wait", "fields")]
        missing = [name for name in names if name not in conf]
        if missing:
            raise ReviewQuestionError(
                f"the run conf of a review DAG lacks {', '.join(missing)}: its runs are created by the "
                "review tasks of the customer DAGs (fix_and_retest, customer_sign_off), not by hand"
            )
        options = tuple(str(option) for option in conf["options"])
        users = tuple(str(user) for user in conf["assigned_users"])
        if not options or not users:
            raise ReviewQuestionError(f"a review question needs options and assigned users, got {conf!r}")
        return cls(
            dag_id=str(conf["dag_id"]),
            run_id=str(conf["run_id"]),
            task_id=str(conf["task_id"]),
            try_number=int(conf["try_number"]),
            number=int(conf["number"]),
            customer_id=str(conf["customer_id"]),
            subject=str(conf["subject"]),
            body=str(conf["body"]),
            options=options,
            assigned_users=users,
            customer_wait=bool(conf.get("customer_wait", False)),
            fields={str(name): dict(spec) for name, spec in (conf.get("fields") or {}).items()},
        )


def ask(question: ReviewQuestion, *, poll_seconds: int) -> Exception:
    """What a task raises to ask ``question``: the review run is created and the task waits deferred.

    Airflow creates the run (the way ``TriggerDagRunOperator`` does; see
    :func:`~managed_upgrade_airflow.compat.trigger_dag_run_and_wait`) and defers the task on the run's
    state; the task resumes in ``execute_complete`` with :func:`ended_review_run`'s event. A question
    asked again (the task was cleared before it was answered) re-opens the same run.
    """
    return trigger_dag_run_and_wait(
        dag_id=question.review_dag_id,
        run_id=question.review_run_id,
        conf=question.to_conf(),
        note=question.subject,
        poll_seconds=poll_seconds,
    )


def ended_review_run(event: Any) -> tuple[str, int, str | None]:
    """``(review run id, question number, run state)`` from the event a waiting task resumes with."""
    run_id, state = triggered_run_outcome(event)
    return run_id, question_number_of(run_id), state


def answer_poll_seconds(context: Context) -> int:
    """How often a waiting task looks whether its question was answered: 1 s in rehearsal, else 30 s."""
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    return 1 if rehearsal_seconds(conf) else 30


class ReviewQuestionOperator(AcceptAnyParamsInput, FactsGate):
    """The one task of the review DAG: opens the question its run's conf holds and records the answer.

    Subject, body, options, form and assigned users come from the conf at run time; the values given
    at parse time only satisfy the HITL operator's checks. Any form input is kept
    (:class:`~managed_upgrade_airflow.compat.AcceptAnyParamsInput`): the review task judges it and asks
    again when it cannot be used. The answer is recorded in the ledger under the customer run's task
    and question number, where the waiting review task reads it.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Review question")
        kwargs.setdefault("options", ["Answer"])
        super().__init__(**kwargs)
        self._question: ReviewQuestion | None = None

    def question(self, context: Context) -> ReviewQuestion:
        if self._question is None:
            question = ReviewQuestion.from_conf(context["dag_run"].conf)
            if question.review_dag_id != self.dag_id:
                raise ReviewQuestionError(
                    f"{self.dag_id} asks only for its own customer; this run's question is for customer "
                    f"{question.customer_id!r} (its questions are runs of {question.review_dag_id})"
                )
            self._question = question
        return self._question

    def ask(self, context: Context) -> ReviewQuestion:
        """Take subject, body, options, form and assigned users from the run's conf.

        Called when the question opens and again when the answer arrives: that is a new process
        whose operator holds only the parse-time placeholders the answer would be checked against.
        """
        question = self.question(context)
        self.subject = question.subject
        self.body = question.body
        self.options = list(question.options)
        self.multiple = False
        self.params = form_fields(question.fields)
        self.assigned_users = hitl_users(list(question.assigned_users))
        return question

    def execute(self, context: Context) -> Any:
        question = self.ask(context)
        self.log.info(
            "Question %d of %s in %s/%s for %s: %s",
            question.number,
            question.task_id,
            question.dag_id,
            question.run_id,
            ", ".join(question.assigned_users),
            question.subject,
        )
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        self.ask(context)
        return super().execute_complete(context, event)

    def record_answer(self, context: Context, answer: dict[str, Any]) -> None:
        question = self.question(context)
        user = answer.get("responded_by_user") or {}
        with open_ledger() as ledger:
            ledger.record_gate_answer(
                question.dag_id,
                question.run_id,
                question.task_id,
                question.try_number,
                user.get("name") or user.get("id") or "unknown",
                answer["responded_at"],
                list(answer.get("chosen_options") or []),
                dict(answer.get("params_input") or {}),
                question=question.number,
            )


REVIEW_DAG_DOC = """# Review questions of {name}

The analysis, fix-and-retest and customer sign-off tasks of `{dag_id}` ask their questions as runs of
this DAG, one run per question, named after the question and the customer run (e.g.
`dev.customer_sign_off.q2__{dag_id}__<run id>`). Answer them under *Required actions*; the runs are
the loops' history. Do not trigger this DAG by hand: its task refuses a run it did not get from
`{dag_id}`.
"""


def build_review_dag(config: CustomerConfig) -> Any:
    """The customer's review DAG ``managed_upgrade_review__<customer_id>``: no schedule, any number of
    open questions, never paused (runs must start), the same access control as the customer's DAG."""
    from airflow.sdk import DAG

    with access_control_warning_silenced():
        dag = DAG(
            dag_id=review_dag_id_for(config.customer_id),
            description=f"Review questions of the managed upgrade of {config.name}: one run per question",
            schedule=None,
            catchup=False,
            max_active_runs=OPEN_QUESTIONS_LIMIT,
            max_active_tasks=OPEN_QUESTIONS_LIMIT,
            is_paused_upon_creation=False,
            doc_md=REVIEW_DAG_DOC.format(name=config.name, dag_id=config.dag_id),
            tags=["managed-upgrade", "review-questions", f"customer:{config.customer_id}"],
            default_args={"owner": "managed-upgrade", "retries": 0},
            params={},
            access_control=customer_access_control(config),
        )
    with dag:
        ReviewQuestionOperator(task_id=QUESTION_TASK_ID, task_display_name="Question")
    return dag
