"""<Environment> > Upgrade: run the vendor installer without holding a worker, verify, roll back on failure.

Deferrable by default, on the SSH provider's own machinery: the installer is started detached on the
host with the provider's POSIX job wrapper (``setsid``, output to a log, exit code written
atomically) and :class:`~airflow.providers.ssh.triggers.ssh_remote_job.SSHRemoteJobTrigger` polls it
from the triggerer (asyncssh, same pinned host key), streaming the installer's output into the task
log. When it ends, :func:`managed_upgrade.operations.upgrade.conclude_upgrade` checks exit code, ``VERSION``
and ``bin/crm status``; on failure the backup taken just before is restored and the task fails with
what failed and whether the restore worked. Neither failure is retried: the environment either
runs its old version again (a person decides what next) or needs a person now.

**Upgrade windows and change freezes.** Before it touches the host the task waits, deferred, for the
environment's window like the backup just before it (:mod:`.upgrade_window`): it asks again on its
own, so a freeze declared since the backup holds the upgrade back too, and counts the instant its
backup started in the window as the opening it waited for.

A crash is retried safely: a new try follows the installer run an earlier try started (still
running: it waits for it; ended unobserved: it judges it) instead of starting another, and the
installer holds a lock on the installation while it runs, so two never run at once.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk.exceptions import AirflowFailException

from managed_upgrade.errors import InstallerFailedError, RollbackFailedError, UpgradeRolledBackError
from managed_upgrade.operations.installation import crm_status
from managed_upgrade.operations.upgrade import (
    LOCKED_EXIT_CODE,
    InstallerJob,
    InstallerLockedError,
    UpgradePlan,
    UpgradeResult,
    conclude_upgrade,
    installer_argv,
    installer_jobs,
    prepare_upgrade,
    roll_back,
    run_installer,
)
from managed_upgrade.sla.windows import BACKUP_ACTIVITY_ID, UPGRADE_ACTIVITY_ID, WINDOW_ACTIVITIES
from managed_upgrade.transport.path_policy import confine
from managed_upgrade_airflow.hooks.crm_environment import CrmEnvironmentHook
from managed_upgrade_airflow.operators.upgrade_window import (
    WINDOW_WAIT_EVENT,
    WINDOW_XCOM_KEY,
    WindowedEnvironmentOperator,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig


__all__ = [
    "WINDOW_WAIT_EVENT",
    "WINDOW_XCOM_KEY",
    "UpgradeAndRollbackFailed",
    "UpgradeEnvironmentOperator",
    "UpgradeRolledBack",
]

_EXIT_CODE = re.compile(r"[0-9]{1,3}", re.ASCII)
"""An exit code file's content (ASCII digits only: ``str.isdigit`` takes any script's digits)."""

QUICK_FINISH_SECONDS = 15.0
"""How long the worker waits for a quick installer before deferring (see ``_wait_briefly``)."""


class UpgradeRolledBack(AirflowFailException):
    """The upgrade failed; the backup was restored and the old version runs (no retry)."""


class UpgradeAndRollbackFailed(AirflowFailException):
    """The upgrade failed AND the restore failed: the environment needs a person now (no retry)."""


class UpgradeEnvironmentOperator(WindowedEnvironmentOperator):
    """Upgrade one environment to ``target_version`` with the staged vendor installer.

    :param ssh_conn_id: / :param db_conn_id: the environment's host and configuration database
    :param install_path: the installation to upgrade
    :param staging_path: where the release was staged (``<staging_path>/<version>/installer.py``)
    :param backup_path: / :param backup_id: the backup taken just before (templated; see
        :func:`~managed_upgrade_airflow.operators.backup_environment.backup_id_template`); the settings
        snapshot and the installer log are kept in it, a failure restores it
    :param target_version: the version to install (templated)
    :param allowed_roots: the environment's allowed roots: the installation, the release and the backup
        directory (installer log, snapshot, job files) must really lie below one; a roll-back restores
        under them too (``None``: only the always-refused paths are refused)
    :param deferrable: wait in the triggerer (default) instead of holding a worker
    :param poll_interval: seconds between the trigger's polls of the remote job
    :param installer_timeout: give up waiting after this long (the installer is not killed, nothing
        is restored: its state is unknown and a person must look)
    :param config: the customer config whose upgrade windows and change freezes apply (the run's
        snapshot replaces it before execution); ``None``: upgrade at any time
    :param window_follows: the backup task whose window the upgrade shares (see :mod:`.upgrade_window`)
    """

    template_fields: Sequence[str] = ("target_version", "backup_id")
    ui_color = "#e6f4ea"
    window_subject = WINDOW_ACTIVITIES[UPGRADE_ACTIVITY_ID]

    def __init__(
        self,
        *,
        environment: str,
        ssh_conn_id: str,
        db_conn_id: str,
        install_path: str,
        staging_path: str,
        backup_path: str,
        backup_id: str,
        target_version: str,
        allowed_roots: Sequence[str] | None = None,
        deferrable: bool = True,
        poll_interval: int = 10,
        installer_timeout: timedelta | None = timedelta(hours=6),
        quick_finish_seconds: float = QUICK_FINISH_SECONDS,
        config: CustomerConfig | None = None,
        window_follows: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(environment=environment, config=config, window_follows=window_follows, **kwargs)
        self.quick_finish_seconds = quick_finish_seconds
        self.ssh_conn_id = ssh_conn_id
        self.db_conn_id = db_conn_id
        self.install_path = install_path
        self.staging_path = staging_path
        self.backup_path = backup_path
        self.backup_id = backup_id
        self.target_version = target_version
        self.allowed_roots = None if allowed_roots is None else list(allowed_roots)
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.installer_timeout = installer_timeout

    @classmethod
    def for_environment(
        cls,
        config: CustomerConfig,
        environment: str,
        backup_id: str,
        target_version: str | None = None,
        **kwargs: Any,
    ) -> UpgradeEnvironmentOperator:
        env = config.environment(environment)
        kwargs.setdefault("window_follows", f"{environment}.{BACKUP_ACTIVITY_ID}")
        return cls(
            environment=environment,
            ssh_conn_id=env.ssh_conn_id,
            db_conn_id=env.db_conn_id,
            install_path=env.install_path,
            staging_path=env.staging_path,
            backup_path=env.backup_path,
            backup_id=backup_id,
            target_version=target_version or config.versions.target,
            allowed_roots=env.allowed_roots,
            config=config,
            **kwargs,
        )

    def _plan(self) -> UpgradePlan:
        return UpgradePlan(
            self.install_path,
            self.staging_path,
            self.backup_path,
            self.backup_id,
            self.target_version,
            tuple(self.allowed_roots) if self.allowed_roots is not None else None,
        )

    def _hook(self) -> CrmEnvironmentHook:
        return CrmEnvironmentHook(self.ssh_conn_id, self.db_conn_id, label=self.environment)

    def execute_in_window(self, context: Context) -> dict[str, Any]:
        return self._upgrade(context)

    # -- the upgrade -------------------------------------------------------------------------------

    def _upgrade(self, context: Context) -> dict[str, Any]:
        plan = self._plan()
        with self._hook() as hook:
            host = hook.get_conn()
            preparation = prepare_upgrade(host, plan, hook.db_target())
            if preparation.already_upgraded:
                self.log.info(
                    "%s already runs %s with crm status ok; nothing to do",
                    self.install_path,
                    plan.target_version,
                )
                status = crm_status(host, plan.install_path)
                return UpgradeResult(
                    plan.target_version, plan.target_version, plan.log_path, (), status, ran_installer=False
                ).summary()
            self.log.info(
                "upgrading %s from %s to %s; settings snapshot %s (%s)",
                self.install_path,
                preparation.from_version,
                plan.target_version,
                plan.snapshot_path,
                "captured" if preparation.snapshot_written else "kept from an earlier try",
            )
            if not self.deferrable:
                return self._conclude(run_installer(host, plan), preparation.from_version)
            earlier = self._earlier_job(host, plan)
            if earlier is not None and earlier.running:
                self.log.warning(
                    "an earlier try started installer job %s, which still runs: following it, not "
                    "starting another",
                    earlier.job_id,
                )
                job = _job_files(earlier)
                exit_code = None
            elif earlier is not None:
                self.log.warning(
                    "installer job %s of an earlier try ended unobserved (exit code %s): judging it",
                    earlier.job_id,
                    earlier.exit_code,
                )
                return self._conclude(earlier.exit_code, preparation.from_version)
            else:
                job = self._submit(host, plan, context)
                exit_code = self._wait_briefly(host, job)
        if exit_code is not None:
            return self._conclude(exit_code, preparation.from_version)
        self._defer(job, log_offset=0, from_version=preparation.from_version)

    def _earlier_job(self, host: Any, plan: UpgradePlan) -> InstallerJob | None:
        """The installer run an earlier try of this upgrade started, if one did (see installer_jobs).

        Runs that never started because another installer held the lock do not count.
        """
        jobs = [job for job in installer_jobs(host, plan) if job.exit_code != LOCKED_EXIT_CODE]
        return jobs[-1] if jobs else None

    def _wait_briefly(self, host: Any, job: dict[str, str]) -> int | None:
        """The installer's exit code if it ends within ``quick_finish_seconds``, else None (then defer).

        A job that ends before its deferral is processed can make Airflow 3.3.2 fail the resumed
        task although the installer succeeded (apache/airflow#72716); quick installers are judged
        here, without a deferral, and only long ones leave the worker.
        """
        deadline = time.monotonic() + self.quick_finish_seconds
        while time.monotonic() < deadline:
            if host.exists(job["exit_code_file"]):
                text = host.read_text(job["exit_code_file"]).strip()
                if _EXIT_CODE.fullmatch(text):
                    return int(text)
            time.sleep(0.5)
        return None

    def _submit(self, host: Any, plan: UpgradePlan, context: Context) -> dict[str, str]:
        from managed_upgrade_airflow import compat

        ti = context["ti"]
        job = compat.detached_job(
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            try_number=ti.try_number,
            base_dir=plan.job_base_dir,
            command=shlex.join(installer_argv(plan)),
        )
        confine(host, job.job_dir, plan.allowed_roots, action="start the installer job in")
        result = host.run(["bash", "-c", job.start_command], timeout=60)
        if result.text.strip() != job.job_id:
            self.log.warning("job wrapper answered %r, expected %r", result.text.strip(), job.job_id)
        self.log.info("installer started detached on %s; job directory %s", self.environment, job.job_dir)
        return {
            "job_id": job.job_id,
            "job_dir": job.job_dir,
            "log_file": job.log_file,
            "exit_code_file": job.exit_code_file,
        }

    def _defer(self, job: dict[str, str], log_offset: int, from_version: str) -> NoReturn:
        from airflow.providers.ssh.triggers.ssh_remote_job import SSHRemoteJobTrigger

        self.defer(
            trigger=SSHRemoteJobTrigger(
                ssh_conn_id=self.ssh_conn_id,
                remote_host=None,
                job_id=job["job_id"],
                job_dir=job["job_dir"],
                log_file=job["log_file"],
                exit_code_file=job["exit_code_file"],
                remote_os="posix",
                poll_interval=self.poll_interval,
                log_offset=log_offset,
            ),
            method_name="execute_complete",
            kwargs={"from_version": from_version},
            timeout=self.installer_timeout,
        )

    def execute_complete(self, context: Context, event: dict[str, Any], from_version: str) -> dict[str, Any]:
        """Resume after the trigger: stream the output, re-defer while running, then judge the run."""
        for line in (event.get("log_chunk") or "").splitlines():
            self.log.info("[installer] %s", line)
        job = {key: event[key] for key in ("job_id", "job_dir", "log_file", "exit_code_file")}
        if not event.get("done"):
            self._defer(job, log_offset=int(event.get("log_offset", 0)), from_version=from_version)
        exit_code = event.get("exit_code")
        if exit_code is None:
            exit_code = self._read_exit_code(job)
        return self._conclude(exit_code, from_version)

    def _read_exit_code(self, job: dict[str, str]) -> int:
        """The trigger lost the job (connection trouble): ask the host once before judging anything."""
        with self._hook() as hook:
            host = hook.get_conn()
            text = host.read_text(job["exit_code_file"]).strip() if host.exists(job["exit_code_file"]) else ""
        if not _EXIT_CODE.fullmatch(text):
            raise AirflowFailException(
                f"lost track of the installer on {self.environment}: "
                f"no exit code in {job['exit_code_file']}. "
                f"It may still be running; nothing was restored. Look at {job['job_dir']} on the host."
            )
        return int(text)

    def _conclude(self, exit_code: int | None, from_version: str) -> dict[str, Any]:
        plan = self._plan()
        with self._hook() as hook:
            host = hook.get_conn()
            try:
                result = conclude_upgrade(host, plan, exit_code, from_version)
            except InstallerLockedError as locked:
                raise AirflowFailException(str(locked)) from locked
            except InstallerFailedError as failure:
                try:
                    roll_back(host, plan, hook.db_target(), failure)
                except UpgradeRolledBackError as rolled_back:
                    raise UpgradeRolledBack(str(rolled_back)) from rolled_back
                except RollbackFailedError as broken:
                    self.log.critical("%s", broken)
                    raise UpgradeAndRollbackFailed(str(broken)) from broken
        for line in result.log_tail:
            self.log.info("[installer log] %s", line)
        self.log.info(
            "%s upgraded %s -> %s; %s",
            self.environment,
            from_version,
            result.to_version,
            result.status.describe(),
        )
        return result.summary()


def _job_files(job: InstallerJob) -> dict[str, str]:
    return {
        "job_id": job.job_id,
        "job_dir": job.job_dir,
        "log_file": job.log_file,
        "exit_code_file": job.exit_code_file,
    }
