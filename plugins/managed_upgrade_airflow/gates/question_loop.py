"""A task whose single try asks question after question, each as a run of its customer's review DAG.

The analysis (with its customer follow-ups), "Fix Issues and Retest" and "Customer Sign-off" are
such loops: ask (:func:`~managed_upgrade_airflow.gates.questions.ask`, deferred, no worker slot),
resume when the question's run ends, find the answer in the ledger, refuse one that an unassigned
user gave, carry it out, ask the next. The loop's state is the ledger's answers to the task, so a
cleared task continues where it stood. Subclasses say which question comes next and what an answer
does; this class owns the asking and the resuming.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from managed_upgrade.dag_ids import review_dag_id_for
from managed_upgrade_airflow.gates.questions import (
    ReviewQuestion,
    answer_poll_seconds,
    ask,
    ended_review_run,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig
    from managed_upgrade.review.review_loop import GateAnswer


class QuestionLoopOperator(BaseOperator):
    """Base of the question loops (see the module docstring); the consultants answer.

    :param config: the customer config (its consultants are the users who may answer)
    :param answer_poll_seconds: how often the deferred task looks whether its question was answered
        (default: 1 s in a rehearsal run, 30 s otherwise)
    """

    template_fields: Sequence[str] = ()

    def __init__(
        self, *, config: CustomerConfig, answer_poll_seconds: int | None = None, **kwargs: Any
    ) -> None:
        # A retry would start the loop again in a new try; the ledger already lets a cleared one go on.
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.config = config
        self.answer_poll_seconds = answer_poll_seconds

    @property
    def assigned_users(self) -> tuple[str, ...]:
        """The consultants of the config the task works with (the run's snapshot once it started)."""
        return tuple(self.config.users.consultant)

    # --- what subclasses say --------------------------------------------------------------------

    def next_question(self, context: Context, refusal: str | None = None) -> Any:
        """Ask the next question (raise :meth:`ask_question`) or end the task with its result.

        ``refusal`` says why the previous answer could not be carried out, for the next question to show.
        """
        raise NotImplementedError

    def answer_to(self, context: Context, number: int) -> GateAnswer | None:
        """The ledger's answer to question ``number`` of this task, if it has one."""
        raise NotImplementedError

    def carry_out(self, context: Context, answer: GateAnswer) -> Any:
        """Do what an assigned user's answer asks; usually ends with :meth:`next_question`."""
        raise NotImplementedError

    # --- the loop -------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        return self.next_question(context)

    def question(self, context: Context, number: int, **asked: Any) -> ReviewQuestion:
        """Question ``number`` of this task instance, answerable by the assigned users."""
        ti = context["ti"]
        return ReviewQuestion(
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            try_number=ti.try_number,
            number=number,
            customer_id=self.config.customer_id,
            assigned_users=self.assigned_users,
            **asked,
        )

    def ask_question(self, context: Context, question: ReviewQuestion) -> Exception:
        """What to raise to ask ``question`` and wait for it deferred."""
        self.log.info(
            "Asking question %d: %s -- answer it in run %s of %s",
            question.number,
            question.subject,
            question.review_run_id,
            question.review_dag_id,
        )
        poll = self.answer_poll_seconds
        return ask(question, poll_seconds=poll if poll is not None else answer_poll_seconds(context))

    def execute_complete(self, context: Context, event: Any) -> Any:
        """The question's review run ended: carry out its answer, then go on."""
        review_run_id, number, state = ended_review_run(event)
        given = self.answer_to(context, number)
        if given is None:
            review_dag_id = review_dag_id_for(self.config.customer_id)
            raise AirflowFailException(
                f"{self.task_id}: question {number} (run {review_run_id} of {review_dag_id}) ended {state} "
                "without an answer in the ledger. Clear this task to ask it again."
            )
        if given.responded_by not in self.assigned_users:
            self.log.warning(
                "Question %d was answered by %s, who is not one of %s: asking again",
                number,
                given.responded_by,
                ", ".join(self.assigned_users),
            )
            return self.next_question(context)
        return self.carry_out(context, given)
