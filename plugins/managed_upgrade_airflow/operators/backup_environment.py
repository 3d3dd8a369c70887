"""<Environment> > Backup: install folder and config DB of one environment, verified, kept with retention.

The work is :func:`managed_upgrade.operations.backup.create_backup`; this operator adds the Airflow side: the
connections, the ledger record (every backup and every pruned one is recorded, so managers can see
what exists where) and a compact XCom (backup id, version, location, checksums) that the upgrade
task takes as the backup protecting it.

**Upgrade windows and change freezes.** The backup protecting an upgrade is taken in the same window,
just before it: built with the customer config, the task waits deferred for the environment's next
opening like the upgrade (:mod:`.upgrade_window`: ledger event, XCom ``upgrade_window``, no worker
held, rehearsals alike), so a restore loses nothing done between backup and upgrade. It waits before
anything touches the host: a resumed task takes one backup and records it once. Without a config
(the preparation's backups of every environment) it runs at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from managed_upgrade.operations.backup import BackupTarget, create_backup
from managed_upgrade.sla.windows import BACKUP_ACTIVITY_ID, WINDOW_ACTIVITIES
from managed_upgrade_airflow.hooks.crm_environment import CrmEnvironmentHook
from managed_upgrade_airflow.ledger_access import LEDGER_CONN_ID, again_after_outage, open_ledger
from managed_upgrade_airflow.operators.upgrade_window import WindowedEnvironmentOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig


def backup_id_template(backup_task_id: str) -> str:
    """Jinja for the ``backup_id`` the backup task ``backup_task_id`` pushed (for templated fields)."""
    return "{{ ti.xcom_pull(task_ids='" + backup_task_id + "')['backup_id'] }}"


class BackupEnvironmentOperator(WindowedEnvironmentOperator):
    """Back up one environment before anything touches it.

    :param customer_id: recorded in the descriptor and the ledger
    :param environment: ``dev``, ``uat`` or ``prod`` (names the backup)
    :param ssh_conn_id: the environment's host
    :param db_conn_id: its configuration database
    :param install_path: the install folder to archive
    :param backup_path: where backups live on the host (``<backup_path>/<backup_id>/``)
    :param retention: how many verified backups of this environment to keep
    :param allowed_roots: the environment's allowed roots: the install folder read and every folder
        written or deleted must lie below one (``None``: only the always-refused paths are refused)
    :param ledger_conn_id: the project's ledger (``None``: do not record; tests only)
    :param config: the customer config whose upgrade windows and change freezes apply (the run's
        snapshot replaces it before execution); ``None``: back up at any time
    """

    template_fields: Sequence[str] = ()
    ui_color = "#fef7e0"
    window_subject = WINDOW_ACTIVITIES[BACKUP_ACTIVITY_ID]

    def __init__(
        self,
        *,
        customer_id: str,
        environment: str,
        ssh_conn_id: str,
        db_conn_id: str,
        install_path: str,
        backup_path: str,
        retention: int = 3,
        allowed_roots: Sequence[str] | None = None,
        ledger_conn_id: str | None = LEDGER_CONN_ID,
        config: CustomerConfig | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(environment=environment, config=config, **kwargs)
        self.customer_id = customer_id
        self.ssh_conn_id = ssh_conn_id
        self.db_conn_id = db_conn_id
        self.install_path = install_path
        self.backup_path = backup_path
        self.retention = retention
        self.allowed_roots = None if allowed_roots is None else list(allowed_roots)
        self.ledger_conn_id = ledger_conn_id

    @classmethod
    def for_environment(
        cls, config: CustomerConfig, environment: str, **kwargs: Any
    ) -> BackupEnvironmentOperator:
        env = config.environment(environment)
        return cls(
            customer_id=config.customer_id,
            environment=environment,
            ssh_conn_id=env.ssh_conn_id,
            db_conn_id=env.db_conn_id,
            install_path=env.install_path,
            backup_path=env.backup_path,
            retention=env.backup_retention,
            allowed_roots=env.allowed_roots,
            config=config,
            **kwargs,
        )

    def window_ledger_conn_id(self) -> str | None:
        return self.ledger_conn_id

    def execute_in_window(self, context: Context) -> dict[str, Any]:
        with CrmEnvironmentHook(self.ssh_conn_id, self.db_conn_id, label=self.environment) as hook:
            target = BackupTarget(
                customer_id=self.customer_id,
                environment=self.environment,
                host=hook.get_conn(),
                install_path=self.install_path,
                backup_path=self.backup_path,
                database=hook.db_target(),
                retention=self.retention,
                allowed_roots=self.allowed_roots,
            )
            result = create_backup(target)
        summary = result.summary()
        self.log.info(
            "backup %s of %s (version %s) verified at %s in %.1fs; retention removed %s",
            result.backup_id,
            self.install_path,
            summary["version"],
            result.directory,
            result.seconds,
            summary["pruned"] or "nothing",
        )
        if self.ledger_conn_id:
            self._record(context, result.descriptor, result.directory, summary["pruned"])
        return summary

    def _record(self, context: Context, descriptor: dict[str, Any], location: str, pruned: list[str]) -> None:
        # Called again if the ledger restarts under it (both writes are idempotent): a failed task
        # here would be retried and take a second backup.
        again_after_outage(self._write_record, context, descriptor, location, pruned)

    def _write_record(
        self, context: Context, descriptor: dict[str, Any], location: str, pruned: list[str]
    ) -> None:
        ti = context["ti"]
        with open_ledger(self.ledger_conn_id or LEDGER_CONN_ID) as ledger:
            ledger.record_backup(
                backup_id=descriptor["backup_id"],
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                customer_id=self.customer_id,
                environment=self.environment,
                location=location,
                version=descriptor["version"],
                descriptor=descriptor,
            )
            ledger.mark_backups_pruned(pruned)
