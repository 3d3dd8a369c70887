"""What the views need from Airflow's metadata: the customer DAGs and the unanswered questions.

A protocol, so the web app's tests hand in a fixed set of facts; :class:`MetadataReads` reads the
api-server's metadata database (through ``compat``, the one home of Airflow internals).
"""

from __future__ import annotations

from typing import Protocol

from managed_upgrade.dag_ids import DAG_ID_PREFIX
from managed_upgrade.review.review_runs import REVIEW_DAG_ID
from managed_upgrade.views.open_actions import OpenQuestion
from managed_upgrade_airflow import compat


class AirflowReads(Protocol):
    """The Airflow facts of the views."""

    def customer_dag_ids(self) -> set[str]:
        """Every customer DAG Airflow knows (``managed_upgrade__*``), run or not."""
        ...

    def open_questions(self) -> list[OpenQuestion]:
        """Every unanswered HITL detail of the customer and review DAGs, oldest first."""
        ...


class MetadataReads:
    """:class:`AirflowReads` from the metadata database of the api-server the app runs in."""

    def customer_dag_ids(self) -> set[str]:
        return compat.dag_ids_with_prefix(DAG_ID_PREFIX)

    def open_questions(self) -> list[OpenQuestion]:
        return [
            OpenQuestion(
                dag_id=row.dag_id,
                run_id=row.run_id,
                task_id=row.task_id,
                map_index=row.map_index,
                subject=row.subject,
                assignees=row.assignee_ids,
                created_at=row.created_at,
                run_conf=row.run_conf,
            )
            for row in compat.pending_questions((DAG_ID_PREFIX, REVIEW_DAG_ID))
        ]
