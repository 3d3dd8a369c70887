"""Smallest DAG proving the local Airflow can do what the product needs end to end.

A few plain tasks (to time the per-task overhead), a human-in-the-loop approval assigned to one
user whose request is announced by email through the SMTP provider's notifier, and a task that
emails after the approval. Used only by tests/e2e/test_harness.py.
"""

from __future__ import annotations

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.providers.smtp.operators.smtp import EmailOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, chain, task

DAG_ID = "harness_smoke"
ASSIGNED_USER = "smoke_consultant"
RECIPIENT = "consultant@example.com"
TICKS = 4

with DAG(dag_id=DAG_ID, schedule=None, catchup=False, tags=["e2e"], doc_md=__doc__):

    @task
    def tick(number: int) -> int:
        """Do nothing but exist: the time between ticks is Airflow's own per-task overhead."""
        return number

    ticks = [tick.override(task_id=f"tick_{number}")(number) for number in range(TICKS)]

    approve_release = ApprovalOperator(
        task_id="approve_release",
        subject="Approve smoke run {{ run_id }}",
        body="Only the assigned consultant may answer.",
        assigned_users=[{"id": ASSIGNED_USER, "name": ASSIGNED_USER}],
        notifiers=[
            SmtpNotifier(
                to=RECIPIENT,
                subject="Action required: {{ ti.task_id }} of {{ run_id }}",
                html_content="Please answer {{ ti.task_id }} in Airflow.",
            )
        ],
    )

    announce_approval = EmailOperator(
        task_id="announce_approval",
        to=RECIPIENT,
        subject="Approved: {{ run_id }}",
        html_content="The smoke run was approved.",
    )

    chain(*ticks, approve_release, announce_approval)
