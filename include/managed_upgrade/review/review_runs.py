"""How the review questions of a customer run are named, so tasks, the listener and clients agree.

Every question of a review loop (the analysis, "Fix Issues and Retest", "Customer Sign-off") is a run
of the customer's review DAG ``managed_upgrade_review__<customer_id>``
(:func:`managed_upgrade.dag_ids.review_dag_id_for`; see ``managed_upgrade_airflow.gates.questions`` for
why). Its run id says what is asked and ends with the customer run, so a list of review runs reads as
the loops' history and a client finds a customer run's open questions by that ending.
"""

from __future__ import annotations

REVIEW_DAG_ID = "managed_upgrade_review"
"""The one review DAG all customers shared before each customer got its own. No DAG has this id any
more; only runs created before the change carry it (see the README, "Answer gates")."""
QUESTION_TASK_ID = "question"


class ReviewRunIdError(ValueError):
    """A run id that :func:`review_run_id` did not make."""


def review_run_suffix(dag_id: str, run_id: str) -> str:
    """What every review run id of the customer run ``dag_id``/``run_id`` ends with."""
    return f"__{dag_id}__{run_id}"


def review_run_id(dag_id: str, run_id: str, task_id: str, number: int) -> str:
    """The run of the customer's review DAG asking question ``number`` of ``task_id`` in a customer run."""
    return f"{task_id}.q{number}{review_run_suffix(dag_id, run_id)}"


def parse_review_run_id(review_run_id: str, dag_id: str, run_id: str) -> tuple[str, int] | None:
    """``(task_id, question number)`` if ``review_run_id`` asks for the customer run, else ``None``."""
    suffix = review_run_suffix(dag_id, run_id)
    if not review_run_id.endswith(suffix):
        return None
    task_id, _, number = review_run_id[: -len(suffix)].rpartition(".q")
    return (task_id, int(number)) if task_id and number.isdigit() else None


def question_number_of(review_run_id: str) -> int:
    """The question number in a run id made by :func:`review_run_id`."""
    head = review_run_id.split("__", 1)[0]
    _, _, number = head.rpartition(".q")
    if not number.isdigit():
        raise ReviewRunIdError(f"{review_run_id!r} is not the run id of a review question")
    return int(number)
