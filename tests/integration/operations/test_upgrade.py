"""Upgrading a real estate environment: deferred installer runs, verification, and rollback when it fails.

The deferrable path is driven the way Airflow drives it: ``execute`` raises ``TaskDeferred``, the
provider's ``SSHRemoteJobTrigger`` runs to its event (here in the test's own event loop instead of a
triggerer), and ``execute_complete`` judges the run.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from crm_estate import Estate, Installation
from crm_estate.installation import customer_db_settings, customer_file_settings
from managed_upgrade.errors import RollbackFailedError, UpgradeRolledBackError
from managed_upgrade.operations.backup import BackupTarget, create_backup
from managed_upgrade.operations.release_source import DirectoryReleaseSource, fetch_release
from managed_upgrade.operations.settings_files import parse_properties
from managed_upgrade.operations.settings_snapshot import read_db_settings
from managed_upgrade.operations.staging import StagingTarget, stage_release
from managed_upgrade.operations.upgrade import UpgradePlan, upgrade_environment
from managed_upgrade.transport.database import DbTarget, table_contents
from managed_upgrade_airflow.operators.upgrade_environment import (
    UpgradeAndRollbackFailed,
    UpgradeEnvironmentOperator,
    UpgradeRolledBack,
)

pytestmark = pytest.mark.integration

TARGET = "11.0.0"


@dataclass
class Prepared:
    installation: Installation
    db: DbTarget
    backup_id: str
    ssh_conn_id: str
    db_conn_id: str
    host: Any

    def operator(self, **kwargs: Any) -> UpgradeEnvironmentOperator:
        return UpgradeEnvironmentOperator(
            task_id="upgrade_environment",
            environment="dev",
            ssh_conn_id=self.ssh_conn_id,
            db_conn_id=self.db_conn_id,
            install_path=str(self.installation.install_path),
            staging_path=str(self.installation.staging_path),
            backup_path=str(self.installation.backup_path),
            backup_id=self.backup_id,
            target_version=TARGET,
            poll_interval=1,
            **kwargs,
        )

    def plan(self) -> UpgradePlan:
        i = self.installation
        return UpgradePlan(
            str(i.install_path), str(i.staging_path), str(i.backup_path), self.backup_id, TARGET
        )

    def version(self) -> str:
        return (self.installation.install_path / "VERSION").read_text().strip()


@pytest.fixture
def prepared(estate: Estate, fresh_installation, remote_host, db_target, airflow_connections, tmp_path: Path):
    """A 10.2.0 environment with release 11.0.0 staged and a fresh backup (what the DAG does first)."""
    installation = fresh_installation("dev", "10.2.0")
    host = remote_host("dev")
    db = db_target(installation.db_name)
    estate.ensure_release(TARGET)
    release = fetch_release(
        DirectoryReleaseSource(estate.releases_dir, "aurea-crm", TARGET),
        "aurea-crm",
        TARGET,
        tmp_path / "cache",
    )
    stage_release(release, [StagingTarget("dev", host, str(installation.staging_path))])
    backup = create_backup(
        BackupTarget(
            installation.customer_id,
            "dev",
            host,
            str(installation.install_path),
            str(installation.backup_path),
            db,
        )
    )
    ssh_conn_id, db_conn_id = airflow_connections.add_installation(installation)
    return Prepared(installation, db, backup.backup_id, ssh_conn_id, db_conn_id, host)


def context() -> dict[str, Any]:
    return {
        "ti": SimpleNamespace(
            dag_id="managed_upgrade__test", task_id="dev.upgrade_environment", run_id="r1", try_number=1
        )
    }


def run_deferred(operator: UpgradeEnvironmentOperator) -> dict[str, Any]:
    """execute -> trigger -> execute_complete, as the scheduler and triggerer would."""
    operator.quick_finish_seconds = 0  # defer at once, however fast the fake installer is
    try:
        operator.execute(context())  # type: ignore[arg-type]
    except TaskDeferred as deferred:
        pending = deferred
    else:
        raise AssertionError("the upgrade should have deferred")
    while True:

        async def first_event(trigger=pending.trigger) -> dict[str, Any]:
            async for event in trigger.run():
                return event.payload
            raise AssertionError("trigger ended without an event")

        event = asyncio.run(first_event())
        try:
            return getattr(operator, pending.method_name)(context(), event=event, **(pending.kwargs or {}))
        except TaskDeferred as again:
            pending = again


def test_a_quick_installer_is_judged_without_deferring(prepared: Prepared) -> None:
    # Airflow 3.3.2 can fail a task resumed before its deferral was processed (apache/airflow#72716)
    summary = prepared.operator(quick_finish_seconds=30).execute(context())  # type: ignore[arg-type]
    assert summary["from_version"] == "10.2.0"
    assert summary["to_version"] == TARGET
    assert summary["ran_installer"] is True
    assert prepared.version() == TARGET


def test_a_deferred_upgrade_runs_the_installer_detached_and_verifies_the_result(prepared: Prepared) -> None:
    summary = run_deferred(prepared.operator())

    assert summary["from_version"] == "10.2.0"
    assert summary["to_version"] == TARGET
    assert summary["crm_status_ok"] is True
    assert summary["ran_installer"] is True
    assert prepared.version() == TARGET
    log = Path(summary["installer_log"])
    assert log.parent.name == prepared.backup_id  # kept beside the backup
    assert "upgrade to 11.0.0 complete; crm status ok" in log.read_text()
    snapshot = json.loads((log.parent / "settings.snapshot.json").read_text())
    assert snapshot["files"]["system.properties"]["session.timeout.minutes"] == "90"


def test_an_upgrade_that_already_happened_is_not_run_again(prepared: Prepared) -> None:
    first = prepared.operator(deferrable=False).execute(context())  # type: ignore[arg-type]
    assert first["ran_installer"] is True
    again = prepared.operator(deferrable=False).execute(context())  # type: ignore[arg-type]
    assert again["ran_installer"] is False
    assert again["to_version"] == TARGET


@pytest.mark.parametrize("step", ["unpack", "migrate_db", "reset_settings", "write_version"])
def test_a_failed_upgrade_is_rolled_back_and_the_task_fails_saying_so(
    estate: Estate, prepared: Prepared, step: str
) -> None:
    tree_before = prepared.host.run_agent("tree", str(prepared.installation.install_path))["entries"]
    db_before = table_contents(prepared.db)
    estate.set_fault(prepared.installation.install_path, step)

    with pytest.raises(UpgradeRolledBack) as error:
        run_deferred(prepared.operator())

    message = str(error.value)
    assert f"failed at step {step!r} (exit code 3)" in message
    assert f"[{step}] FAILED (exit 3): injected fault at step {step}" in message  # the log's last lines
    assert f"RESTORE SUCCEEDED: dev was restored from backup {prepared.backup_id}" in message
    assert "runs version 10.2.0 again" in message
    assert isinstance(error.value, AirflowFailException)  # no retry of a rolled-back upgrade
    assert prepared.version() == "10.2.0"
    code, status = estate.crm_status(prepared.installation.install_path)
    assert code == 0
    assert status["ok"] is True
    assert status["version"] == "10.2.0"
    assert status["schema_version"] == "10.2.0"
    tree_after = prepared.host.run_agent("tree", str(prepared.installation.install_path))["entries"]
    assert tree_after == tree_before  # the fault file was not in the backup either
    assert table_contents(prepared.db) == db_before
    settings = parse_properties(
        (prepared.installation.install_path / "settings" / "mail.properties").read_text()
    )
    assert (
        settings["mail.sender"]
        == customer_file_settings(prepared.installation.customer_id)["mail.properties"]["mail.sender"]
    )
    assert read_db_settings(prepared.db)["report.row_limit"] == customer_db_settings()["report.row_limit"]


def test_when_the_restore_fails_too_the_task_says_so_loudly(estate: Estate, prepared: Prepared) -> None:
    dump = prepared.installation.backup_path / prepared.backup_id / "config-db.dump"
    dump.unlink()  # the backup is damaged after it was taken
    estate.set_fault(prepared.installation.install_path, "migrate_db")

    with pytest.raises(UpgradeAndRollbackFailed) as error:
        prepared.operator(deferrable=False).execute(context())  # type: ignore[arg-type]

    message = str(error.value)
    assert message.startswith("!!! UPGRADE FAILED AND RESTORE FAILED on dev")
    assert "failed at step 'migrate_db' (exit code 3)" in message
    assert f"backup file {dump} is missing; nothing was changed" in message
    assert not isinstance(error.value, UpgradeRolledBack)


def test_the_blocking_upgrade_rolls_back_too(estate: Estate, prepared: Prepared) -> None:
    estate.set_fault(prepared.installation.install_path, "write_version")
    with pytest.raises(UpgradeRolledBackError) as error:
        upgrade_environment(prepared.host, prepared.plan(), prepared.db)
    assert error.value.failure.step == "write_version"
    assert error.value.version == "10.2.0"
    assert prepared.version() == "10.2.0"


def test_rollback_failure_is_a_distinct_error_type(estate: Estate, prepared: Prepared) -> None:
    archive = prepared.installation.backup_path / prepared.backup_id / "install.tar.zst"
    archive.write_bytes(b"not an archive any more")
    estate.set_fault(prepared.installation.install_path, "unpack")
    with pytest.raises(RollbackFailedError) as error:
        upgrade_environment(prepared.host, prepared.plan(), prepared.db)
    assert "install.tar.zst is corrupt" in str(error.value)
    assert not isinstance(error.value, UpgradeRolledBackError)


# --- crashes: a retry follows the installer an earlier try started; never two at once -------------


def deferred_try(operator: UpgradeEnvironmentOperator, try_number: int) -> TaskDeferred:
    """One try's ``execute`` up to its deferral (what a worker does before it may be killed)."""
    operator.quick_finish_seconds = 0
    ti = SimpleNamespace(
        dag_id="managed_upgrade__test", task_id="dev.upgrade_environment", run_id="r1", try_number=try_number
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"ti": ti})  # type: ignore[arg-type]
    return deferred.value


def test_a_retry_after_a_lost_worker_follows_the_running_installer_instead_of_starting_another(
    estate: Estate, prepared: Prepared
) -> None:
    estate.set_fault(prepared.installation.install_path, None, slow_seconds=4)
    first = deferred_try(prepared.operator(), try_number=1)
    # the worker dies here: the trigger is never run; Airflow retries the task
    second = deferred_try(prepared.operator(), try_number=2)

    assert second.trigger.job_id == first.trigger.job_id  # type: ignore[attr-defined]
    summary = run_deferred(prepared.operator())  # a third try, after the installer ended: judges it
    assert summary["to_version"] == TARGET
    assert prepared.version() == TARGET
    jobs = list(Path(prepared.plan().job_base_dir).iterdir())
    assert len(jobs) == 1, jobs  # one installer run, whatever the tries


def test_an_installer_that_ended_unobserved_is_judged_and_rolled_back_on_failure(
    estate: Estate, prepared: Prepared
) -> None:
    estate.set_fault(prepared.installation.install_path, "migrate_db")
    deferred_try(prepared.operator(), try_number=1)
    jobs = Path(prepared.plan().job_base_dir)
    for _ in range(100):  # the worker is gone; the detached installer fails on its own
        if list(jobs.glob("*/exit_code")):
            break
        time.sleep(0.1)
    assert list(jobs.glob("*/exit_code")), list(jobs.iterdir())

    with pytest.raises(UpgradeRolledBack, match="migrate_db"):
        prepared.operator().execute(context())  # type: ignore[arg-type]
    assert prepared.version() == "10.2.0"  # restored from the backup, not run again
    assert len(list(Path(prepared.plan().job_base_dir).iterdir())) == 1


def test_a_second_installer_on_the_same_installation_does_not_start(
    estate: Estate, prepared: Prepared
) -> None:
    import subprocess

    from managed_upgrade.operations.upgrade import installer_lock_path

    lock = installer_lock_path(prepared.plan())
    holder = subprocess.Popen(["flock", lock, "sleep", "30"])
    try:
        for _ in range(50):
            if subprocess.run(["flock", "--nonblock", lock, "true"], check=False).returncode != 0:
                break
            time.sleep(0.1)
        with pytest.raises(AirflowFailException, match=r"another installer runs on .*nothing was changed"):
            prepared.operator(deferrable=False).execute(context())  # type: ignore[arg-type]
    finally:
        holder.kill()
        holder.wait()
    assert prepared.version() == "10.2.0"
    assert not Path(prepared.plan().log_path).exists()  # the vendor installer never started
