"""The FAB auth manager of a deployment, letting an assigned consultant answer their gates by user name.

The gates assign people by Airflow user name (the customer configs' ``users``); Airflow 3.3.2 checks a
HITL answer against the user's id, which under FAB is a database number. This auth manager is FAB's
(``apache-airflow-providers-fab``) with that one check extended to the user name; everything else --
logins, roles, per-DAG ``access_control`` -- is FAB's own. Configure it as
``[core] auth_manager = managed_upgrade_airflow.fab_auth_manager.FabAuthManager`` (the class keeps
FAB's name: Airflow's dag-processor syncs a DAG's ``access_control`` only when the configured class
path contains ``FabAuthManager``).
"""

from __future__ import annotations

from typing import Any

from managed_upgrade_airflow.compat import fab_auth_manager_base


class FabAuthManager(fab_auth_manager_base()):  # type: ignore[misc]
    """FAB's auth manager; a HITL answer is accepted from an assigned user by id or by user name."""

    def is_authorized_hitl_task(self, *, assigned_users: set[str], user: Any) -> bool:
        return bool(user.get_id() in assigned_users or user.get_name() in assigned_users)
