"""<Environment> > Re-apply settings: every customer setting the installer reset is put back.

The snapshot was captured by the upgrade task just before the installer ran and lives in the backup
directory (:func:`managed_upgrade.settings_snapshot.snapshot_path`); the work is
:func:`managed_upgrade.settings_snapshot.reapply_settings`. The report (restored, unchanged,
vanished-but-kept, added by the release) is written beside the snapshot and pushed to XCom.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from managed_upgrade.settings_snapshot import load_snapshot, reapply_settings, snapshot_path
from managed_upgrade_airflow.hooks.crm_environment import CrmEnvironmentHook

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig

REPORT_NAME = "settings.reapplied.json"


class ReapplySettingsOperator(BaseOperator):
    """Restore the customer settings of one environment from the snapshot kept in backup ``backup_id``.

    :param ssh_conn_id: / :param db_conn_id: the environment's host and configuration database
    :param install_path: the installation whose settings are restored
    :param backup_path: / :param backup_id: the backup holding the snapshot (``backup_id`` templated)
    """

    template_fields: Sequence[str] = ("backup_id",)
    ui_color = "#f3e8fd"

    def __init__(
        self,
        *,
        environment: str,
        ssh_conn_id: str,
        db_conn_id: str,
        install_path: str,
        backup_path: str,
        backup_id: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.environment = environment
        self.ssh_conn_id = ssh_conn_id
        self.db_conn_id = db_conn_id
        self.install_path = install_path
        self.backup_path = backup_path
        self.backup_id = backup_id

    @classmethod
    def for_environment(
        cls, config: CustomerConfig, environment: str, backup_id: str, **kwargs: Any
    ) -> ReapplySettingsOperator:
        env = config.environment(environment)
        return cls(
            environment=environment,
            ssh_conn_id=env.ssh_conn_id,
            db_conn_id=env.db_conn_id,
            install_path=env.install_path,
            backup_path=env.backup_path,
            backup_id=backup_id,
            **kwargs,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        path = snapshot_path(self.backup_path, self.backup_id)
        with CrmEnvironmentHook(self.ssh_conn_id, self.db_conn_id, label=self.environment) as hook:
            host = hook.get_conn()
            snapshot = load_snapshot(host, path)
            report = reapply_settings(host, self.install_path, hook.db_target(), snapshot)
            summary = report.summary()
            summary["snapshot"] = path
            summary["report"] = posixpath.join(posixpath.dirname(path), REPORT_NAME)
            host.write_json(summary["report"], summary)
        self.log.info(
            "%s: %d settings restored, %d unchanged, %d vanished in the new version (kept; review them)",
            self.environment,
            len(summary["restored"]),
            summary["unchanged"],
            len(summary["vanished_kept"]),
        )
        return summary
