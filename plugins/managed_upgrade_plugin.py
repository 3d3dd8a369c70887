"""Registers the managed upgrade's listener and run-deadline reference with every Airflow component.

Airflow loads this file in the api-server, scheduler, triggerer, dag-processor and each task runner
(``plugins/.airflowignore`` hides the package ``managed_upgrade_airflow/`` from the plugin loader; it
is imported as a normal package from here). The imports are cheap: the listener defers its work to
the first relevant call, and the reference module holds only small classes and functions.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from managed_upgrade_airflow import activity_listener
from managed_upgrade_airflow.run_deadlines import ManagedUpgradeDeadline


class ManagedUpgradePlugin(AirflowPlugin):
    """Activity events into the ledger (listener) and the run-level deadline reference."""

    name = "managed_upgrade"
    listeners = [activity_listener]  # noqa: RUF012 - Airflow reads these class attributes
    deadline_references = [ManagedUpgradeDeadline]  # noqa: RUF012
