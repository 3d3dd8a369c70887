"""Registers the managed upgrade's listener, run-deadline reference and views with every Airflow component.

Airflow loads this file in the api-server, scheduler, triggerer, dag-processor and each task runner
(``plugins/.airflowignore`` hides the package ``managed_upgrade_airflow/`` from the plugin loader; it
is imported as a normal package from here). The imports are cheap: the listener defers its work to
the first relevant call, the reference module holds only small classes and functions, and the views'
web app is built on its first request in the api-server (``LazyApp``), never elsewhere.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from managed_upgrade_airflow import activity_listener
from managed_upgrade_airflow.run_deadlines import ManagedUpgradeDeadline
from managed_upgrade_airflow.views.lazy_app import LazyApp

VIEWS_PREFIX = "/managed-upgrade"
"""Where the api-server mounts the views (``managed_upgrade_airflow.views.app.URL_PREFIX``)."""


class ManagedUpgradePlugin(AirflowPlugin):
    """Activity events into the ledger (listener), the run-level deadline reference and the views."""

    name = "managed_upgrade"
    listeners = [activity_listener]  # noqa: RUF012 - Airflow reads these class attributes
    deadline_references = [ManagedUpgradeDeadline]  # noqa: RUF012
    fastapi_apps = [  # noqa: RUF012
        {
            "name": "Managed upgrade views",
            "app": LazyApp("managed_upgrade_airflow.views.app:create_app"),
            "url_prefix": VIEWS_PREFIX,
        }
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Planned vs actual",
            "href": f"{VIEWS_PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "planned-vs-actual",
        },
        {
            "name": "Upgrade portfolio",
            "href": f"{VIEWS_PREFIX}/portfolio",
            "destination": "nav",
            "url_route": "upgrade-portfolio",
        },
        {
            "name": "My open actions",
            "href": f"{VIEWS_PREFIX}/my-actions",
            "destination": "nav",
            "url_route": "my-open-actions",
        },
    ]
