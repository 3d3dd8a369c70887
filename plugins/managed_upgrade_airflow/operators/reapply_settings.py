"""<Environment> > Re-apply settings: every customer setting the installer reset is put back.

The snapshot was captured by the upgrade task just before the installer ran and lives in the backup
directory (:func:`managed_upgrade.operations.settings_snapshot.snapshot_path`); the work is
:func:`managed_upgrade.operations.settings_snapshot.reapply_settings`, a three-way merge whose common ancestor
is the default settings of the release the snapshot was taken on, read from the release repository
(:mod:`managed_upgrade.operations.release_defaults`). When that release cannot be read, every differing value
is restored and the report asks for a review rather than the task failing: the upgrade has already
happened, and restoring the customer's values is the safe direction. The report (restored, new
defaults kept, conflicts, vanished-but-kept, added by the release) is written beside the snapshot,
pushed to XCom and shown in the customer sign-off gate.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from managed_upgrade.errors import OperationError
from managed_upgrade.operations.release_defaults import ReleaseDefaults, read_release_defaults
from managed_upgrade.operations.release_source import DirectoryReleaseSource
from managed_upgrade.operations.settings_snapshot import load_snapshot, reapply_settings, snapshot_path
from managed_upgrade.transport.path_policy import confine
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
    :param release_conn_id: / :param product: the release repository (an ``fs`` connection) holding
        the release the snapshot was taken on, whose defaults are the merge's common ancestor
    :param cache_root: worker-side release cache (as for staging)
    :param allowed_roots: the environment's allowed roots: settings files and the report are only
        written below one (``None``: only the always-refused paths are refused)
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
        release_conn_id: str,
        product: str,
        cache_root: str | None = None,
        allowed_roots: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.allowed_roots = None if allowed_roots is None else list(allowed_roots)
        self.release_conn_id = release_conn_id
        self.product = product
        self.cache_root = cache_root
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
            release_conn_id=config.release_source.conn_id,
            product=config.release_source.product,
            allowed_roots=env.allowed_roots,
            **kwargs,
        )

    def release_defaults(self, version: str | None) -> tuple[ReleaseDefaults | None, str | None]:
        """The defaults of release ``version``, or None and why they cannot be had."""
        if version is None:
            return None, "the snapshot does not record the version it was taken on"
        from airflow.providers.standard.hooks.filesystem import FSHook

        try:
            root = FSHook(fs_conn_id=self.release_conn_id).get_path()
            source = DirectoryReleaseSource(root, self.product, version)
            cache = Path(self.cache_root) if self.cache_root else None
            return read_release_defaults(source, self.product, version, cache), None
        except (OperationError, OSError, ValueError) as error:
            self.log.warning("%s: defaults of release %s unavailable: %s", self.environment, version, error)
            return None, f"the defaults of release {version} could not be read ({error})"

    def execute(self, context: Context) -> dict[str, Any]:
        path = snapshot_path(self.backup_path, self.backup_id)
        with CrmEnvironmentHook(self.ssh_conn_id, self.db_conn_id, label=self.environment) as hook:
            host = hook.get_conn()
            snapshot = load_snapshot(host, path)
            base, problem = self.release_defaults(snapshot.version)
            report = reapply_settings(
                host, self.install_path, hook.db_target(), snapshot, base, problem, self.allowed_roots
            )
            summary = report.summary()
            summary["snapshot"] = path
            summary["report"] = posixpath.join(posixpath.dirname(path), REPORT_NAME)
            confine(host, summary["report"], self.allowed_roots, action="write the re-apply report to")
            host.write_json(summary["report"], summary)
        self.log.info(
            "%s: %d settings restored (%d also changed by the release: review), %d new defaults kept, "
            "%d unchanged, %d vanished in the new version (kept; review them); compared against %s",
            self.environment,
            len(summary["restored"]),
            len(summary["conflicts"]),
            len(summary["new_defaults_kept"]),
            summary["unchanged"],
            len(summary["vanished_kept"]),
            summary["base"] or f"nothing ({summary['base_problem']})",
        )
        return summary
