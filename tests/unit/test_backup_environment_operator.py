"""The backup before an upgrade waits, deferred, for its environment's window like the upgrade; one backup."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, date, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk.exceptions import TaskDeferred
from window_waits import (
    FRIDAY_22,
    NEXT_FRIDAY_22,
    RUN_START,
    WEDNESDAY_NOON,
    FakeLedger,
    FakeTi,
    Harness,
    globex,
    install,
    settings,
)

from managed_upgrade.config import ChangeFreeze
from managed_upgrade_airflow.operators import backup_environment as module
from managed_upgrade_airflow.operators.backup_environment import BackupEnvironmentOperator
from managed_upgrade_airflow.operators.upgrade_window import WINDOW_XCOM_KEY, WindowedEnvironmentOperator

TASK_ID = "prod.backup_environment"
AWAITED = FRIDAY_22.astimezone(UTC).isoformat()


class FakeHook:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> FakeHook:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def get_conn(self) -> object:
        return SimpleNamespace(label="prod")

    def db_target(self) -> object:
        return object()


@pytest.fixture
def harness(monkeypatch):
    """A globex prod backup task: fake clock, ledger, run settings and host; backups are counted."""
    taken: list[Any] = []

    def create_backup(target):
        taken.append(target)
        number = len(taken)
        descriptor = {"backup_id": f"b{number}", "version": "10.2.0"}
        summary = {"backup_id": f"b{number}", "version": "10.2.0", "pruned": []}
        return SimpleNamespace(
            backup_id=f"b{number}",
            descriptor=descriptor,
            directory=f"/srv/backups/b{number}",
            seconds=1.0,
            summary=lambda: summary,
        )

    monkeypatch.setattr(module, "create_backup", create_backup)
    monkeypatch.setattr(module, "CrmEnvironmentHook", FakeHook)
    config = globex()
    task = BackupEnvironmentOperator.for_environment(config, "prod", task_id=TASK_ID)
    harness = install(monkeypatch, Harness(task, FakeTi(TASK_ID), FakeLedger(), config), module)
    harness.taken = taken  # type: ignore[attr-defined]
    return harness


def test_both_operators_share_one_window_logic():
    from managed_upgrade_airflow.operators.upgrade_environment import UpgradeEnvironmentOperator

    assert issubclass(BackupEnvironmentOperator, WindowedEnvironmentOperator)
    assert issubclass(UpgradeEnvironmentOperator, WindowedEnvironmentOperator)
    for name in ("execute", "execute_after_window", "_wait_for_window", "_record_wait"):
        assert name not in vars(BackupEnvironmentOperator) and name not in vars(UpgradeEnvironmentOperator)


def test_outside_the_window_it_defers_before_touching_the_host_and_records_a_scheduled_wait(harness):
    with pytest.raises(TaskDeferred) as deferred:
        harness.task.execute(harness.context)
    assert isinstance(deferred.value.trigger, DateTimeTrigger)
    assert deferred.value.trigger.moment == FRIDAY_22
    assert deferred.value.method_name == "execute_after_window"
    assert deferred.value.kwargs == {"awaited": AWAITED}
    assert harness.taken == [] and harness.ledger.backups == []
    shown = harness.ti.xcom[WINDOW_XCOM_KEY]
    assert shown["waiting_for"] == "window" and shown["opens_at"] == AWAITED
    assert shown["message"] == "the backup waits until Fri 2027-01-08 22:00 CET: outside the upgrade windows"
    (row,) = harness.wait_rows()
    assert (row["activity_key"], row["try_number"], row["at"]) == (TASK_ID, 1, WEDNESDAY_NOON)
    assert row["detail"]["until"] == AWAITED and row["detail"]["reason"] == "outside the upgrade windows"


def test_on_resume_it_takes_one_backup_and_records_it_once(harness):
    for _ in range(2):  # a retry before the opening waits for the same one: nothing more recorded
        with pytest.raises(TaskDeferred):
            harness.task.execute(harness.context)
    harness.now = FRIDAY_22 + timedelta(seconds=3)
    result = harness.task.execute_after_window(harness.context, event={}, awaited=AWAITED)

    assert result["backup_id"] == "b1" and len(harness.taken) == 1
    assert [row["backup_id"] for row in harness.ledger.backups] == ["b1"]
    assert len(harness.wait_rows()) == 1
    assert harness.ti.xcom[WINDOW_XCOM_KEY]["waiting_for"] == "nothing"
    assert harness.ti.xcom[WINDOW_XCOM_KEY]["message"].startswith(
        "the backup may start now (Fri 2027-01-08 22:00"
    )


def test_resumed_just_after_a_short_window_closed_it_still_backs_up_once(harness):
    harness.settings = settings(2.0, rehearse_windows=True)
    harness.now = RUN_START + timedelta(seconds=1)
    with pytest.raises(TaskDeferred) as deferred:
        harness.task.execute(harness.context)
    opening = deferred.value.trigger.moment
    harness.now = opening + timedelta(seconds=5)  # the compressed window (0.7 s) has closed
    harness.task.execute_after_window(harness.context, awaited=opening.isoformat())
    assert len(harness.taken) == 1
    # the XCom names the opening it started in: the upgrade after it counts that as its own
    assert harness.ti.xcom[WINDOW_XCOM_KEY]["opens_at"] == opening.isoformat()


def test_on_resume_a_freeze_declared_in_the_file_meanwhile_makes_it_wait_again_without_a_backup(harness):
    with pytest.raises(TaskDeferred) as first:
        harness.task.execute(harness.context)
    assert first.value.trigger.moment == FRIDAY_22
    audit = ChangeFreeze(start=date(2027, 1, 8), end=date(2027, 1, 10), reason="Audit")
    harness.task.config = harness.config.model_copy(  # the file as the resuming worker parsed it ...
        update={"change_freezes": (*harness.config.change_freezes, audit)}
    )
    harness.task.use_run_config(harness.config)  # ... and the run's snapshot from before the edit
    harness.now = FRIDAY_22 + timedelta(seconds=2)
    with pytest.raises(TaskDeferred) as again:
        harness.task.execute_after_window(harness.context, awaited=AWAITED)
    assert again.value.trigger.moment == NEXT_FRIDAY_22
    assert "change freeze 'Audit'" in harness.ti.xcom[WINDOW_XCOM_KEY]["reason"]
    assert [row["try_number"] for row in harness.wait_rows()] == [1, 2]
    assert harness.taken == [] and harness.ledger.backups == []


def test_inside_a_window_it_backs_up_at_once(harness):
    harness.now = FRIDAY_22 + timedelta(hours=2)
    assert harness.task.execute(harness.context)["backup_id"] == "b1"
    assert harness.wait_rows() == [] and harness.ti.xcom[WINDOW_XCOM_KEY]["waiting_for"] == "nothing"


def test_a_rehearsal_ignores_windows_unless_the_run_asks_and_then_compresses_them(harness):
    harness.settings = settings(2.0)
    assert harness.task.execute(harness.context)["backup_id"] == "b1"
    assert WINDOW_XCOM_KEY not in harness.ti.xcom
    harness.settings = settings(2.0, rehearse_windows=True)
    harness.now = RUN_START + timedelta(seconds=1)
    with pytest.raises(TaskDeferred) as deferred:
        harness.task.execute(harness.context)
    # Monday 10:00 Berlin to Friday 22:00 = 4.5 schedule days = 9 s of a 2 s rehearsal day
    assert deferred.value.trigger.moment - RUN_START == pytest.approx(
        timedelta(seconds=9), abs=timedelta(seconds=0.01)
    )
    assert len(harness.taken) == 1


def test_an_environment_without_windows_or_freezes_backs_up_without_reading_the_run_settings(
    harness, monkeypatch
):
    from managed_upgrade_airflow.operators import upgrade_window

    def no_settings(context):
        raise AssertionError("the run settings are read only for an environment with a schedule")

    monkeypatch.setattr(upgrade_window, "run_settings_from_xcom", no_settings)
    free = harness.config.model_copy(update={"change_freezes": ()})
    task = BackupEnvironmentOperator.for_environment(free, "dev", task_id="dev.backup_environment")
    assert task.execute(harness.context)["backup_id"] == "b1"


def test_a_backup_without_a_config_runs_at_once(harness):
    env = harness.config.environment("prod")
    task = BackupEnvironmentOperator(
        task_id="preparation.backup_configuration_files",
        customer_id="globex",
        environment="prod",
        ssh_conn_id=env.ssh_conn_id,
        db_conn_id=env.db_conn_id,
        install_path=env.install_path,
        backup_path=env.backup_path,
    )
    assert task.config is None
    assert task.execute(harness.context)["backup_id"] == "b1"


def test_without_a_ledger_the_wait_is_only_logged(harness):
    task = BackupEnvironmentOperator.for_environment(
        harness.config, "prod", task_id=TASK_ID, ledger_conn_id=None
    )
    with pytest.raises(TaskDeferred):
        task.execute(harness.context)
    assert harness.opened_ledgers == [] and harness.ledger.rows == []


def test_a_ledger_that_is_down_does_not_hold_the_wait_back(harness, monkeypatch):
    from managed_upgrade_airflow.operators import upgrade_window

    @contextmanager
    def broken(*_args):
        raise ConnectionError("ledger down")
        yield

    monkeypatch.setattr(upgrade_window, "open_ledger", broken)
    with pytest.raises(TaskDeferred):
        harness.task.execute(harness.context)
