"""Drives a task that asks questions through its customer's review DAG as Airflow does, without Airflow.

The task asks by raising the request for a run of the customer's review DAG (which the task runner
would create before deferring the task); the answer is recorded by the review DAG's own operator, as
when a consultant answers; ``execute_complete`` then gets the event the deferred task resumes with --
each call on a fresh operator, as each resumption is a new process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import DagRunTriggerException

from managed_upgrade.dag_ids import review_dag_id_for
from managed_upgrade.review.review_runs import QUESTION_TASK_ID
from managed_upgrade_airflow.gates.questions import ReviewQuestion, ReviewQuestionOperator


def review_operator(customer_id: str) -> ReviewQuestionOperator:
    """The question task of the customer's review DAG (it opens questions for that customer only)."""
    with DAG(review_dag_id_for(customer_id), schedule=None):
        return ReviewQuestionOperator(task_id=QUESTION_TASK_ID)


@dataclass
class ReviewTask:
    """One review task: it asks by requesting a review run, and resumes when that run has ended."""

    make: Callable[[], Any]
    task_id: str
    run_id: str
    task_context: Callable[..., dict[str, Any]]
    xcoms: dict[str, Any] = field(default_factory=dict)
    try_number: int = 1
    open: ReviewQuestion | None = None

    def context(self) -> dict[str, Any]:
        context = self.task_context(self.task_id, run_id=self.run_id, **self.xcoms)
        context["ti"].try_number = self.try_number
        return context

    def opened(self, request: DagRunTriggerException) -> ReviewQuestion:
        question = ReviewQuestion.from_conf(request.conf)
        assert request.trigger_dag_id == review_dag_id_for(question.customer_id) == question.review_dag_id
        assert request.trigger_dag_id == f"managed_upgrade_review__{question.customer_id}"
        assert (request.wait_for_completion, request.deferrable, request.reset_dag_run) == (True, True, True)
        assert request.dag_run_id == question.review_run_id
        assert (question.run_id, question.task_id) == (self.run_id, self.task_id)
        self.open = question
        return question

    def ask(self) -> ReviewQuestion:
        """Start a try (``execute``); it must ask a question. Returns it."""
        with pytest.raises(DagRunTriggerException) as asked:
            self.make().execute(self.context())
        return self.opened(asked.value)

    def execute(self) -> Any:
        """Start a try expecting it to finish without asking."""
        return self.make().execute(self.context())

    def answer(self, option: str, user: str = "carla", **params: Any) -> Any:
        """Answer the open question through the review DAG's operator, then resume the task."""
        question, self.open = self.open, None
        assert question is not None, "no question is open"
        answered = {
            "chosen_options": [option],
            "params_input": params,
            "responded_at": datetime(2027, 2, 1, 9, 0, tzinfo=UTC) + timedelta(hours=question.number),
            "responded_by_user": {"id": user, "name": user},
        }
        # A new process resumes the review run's question: its operator knows the question only from
        # the conf, and Airflow checks the chosen option against the operator's options.
        review_context = {"dag_run": SimpleNamespace(conf=question.to_conf())}
        recorded = review_operator(question.customer_id).execute_complete(review_context, answered)
        assert recorded["chosen_options"] == [option]
        ended = {"run_ids": [question.review_run_id], question.review_run_id: "success"}
        event = ("airflow.providers.standard.triggers.external_task.DagStateTrigger", ended)
        return self.make().execute_complete(self.context(), event)

    def answer_and_ask_again(self, option: str, user: str = "carla", **params: Any) -> ReviewQuestion:
        """Answer; the task must go on with another question. Returns it."""
        with pytest.raises(DagRunTriggerException) as asked:
            self.answer(option, user, **params)
        return self.opened(asked.value)
