"""The run's settings as its first task ("Create Request Case") accepted them, read back from its XCom.

Every later task reads them here instead of re-parsing the run's conf; operators and gates alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk.exceptions import AirflowFailException

from managed_upgrade.config.run_settings import RunSettings, settings_from_conf

if TYPE_CHECKING:
    from airflow.sdk import Context

REQUEST_CASE_TASK_ID = "initiation.create_request_case"
"""Task id (inside the ``initiation`` group) whose XCom holds the run's settings."""


def run_settings_from_xcom(context: Context, task_id: str = REQUEST_CASE_TASK_ID) -> RunSettings:
    """The settings ``create_request_case`` accepted, read back from its XCom."""
    data = context["ti"].xcom_pull(task_ids=task_id)
    if not data:
        raise AirflowFailException(f"no run settings in the XCom of {task_id}; did that task run?")
    settings, problems = settings_from_conf(data)
    if settings is None:
        raise AirflowFailException(
            f"run settings in the XCom of {task_id} are invalid: {'; '.join(problems)}"
        )
    return settings
