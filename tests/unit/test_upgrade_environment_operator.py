"""The upgrade task waits, deferred, for its environment's window; records and shows the wait; re-checks."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import pytest
from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
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
from managed_upgrade_airflow.operators import upgrade_window
from managed_upgrade_airflow.operators.upgrade_environment import (
    WINDOW_XCOM_KEY,
    UpgradeEnvironmentOperator,
)

TASK_ID = "prod.upgrade_environment"


@pytest.fixture
def harness(monkeypatch):
    """A globex prod upgrade task with a fake clock, ledger and run settings; ``_upgrade`` stubbed."""
    monkeypatch.setattr(UpgradeEnvironmentOperator, "_upgrade", lambda self, context: {"upgraded": True})
    config = globex()
    task = UpgradeEnvironmentOperator.for_environment(config, "prod", backup_id="b1", task_id=TASK_ID)
    return install(monkeypatch, Harness(task, FakeTi(TASK_ID), FakeLedger(), config))


def test_outside_the_window_it_defers_until_the_opening_and_records_a_scheduled_wait(harness):
    with pytest.raises(TaskDeferred) as deferred:
        harness.task.execute(harness.context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, DateTimeTrigger)
    assert trigger.moment == FRIDAY_22
    assert deferred.value.method_name == "execute_after_window"
    assert deferred.value.kwargs == {"awaited": FRIDAY_22.astimezone(UTC).isoformat()}
    shown = harness.ti.xcom[WINDOW_XCOM_KEY]
    assert shown["waiting_for"] == "window" and shown["opens_at"] == FRIDAY_22.astimezone(UTC).isoformat()
    assert shown["message"] == "the upgrade waits until Fri 2027-01-08 22:00 CET: outside the upgrade windows"
    (row,) = harness.ledger.rows
    assert (row["event"], row["try_number"], row["at"]) == ("waiting_for_window", 1, WEDNESDAY_NOON)
    assert row["detail"]["until"] == FRIDAY_22.astimezone(UTC).isoformat()


def test_a_retry_waiting_for_the_same_opening_records_nothing_more(harness):
    for _ in range(2):
        with pytest.raises(TaskDeferred):
            harness.task.execute(harness.context)
    assert len(harness.ledger.rows) == 1


def test_on_resume_at_the_opening_it_upgrades(harness):
    harness.now = FRIDAY_22 + timedelta(seconds=2)
    result = harness.task.execute_after_window(
        harness.context, event={}, awaited=FRIDAY_22.astimezone(UTC).isoformat()
    )
    assert result == {"upgraded": True}
    assert harness.ti.xcom[WINDOW_XCOM_KEY]["waiting_for"] == "nothing"


def test_on_resume_a_freeze_declared_in_the_file_meanwhile_makes_it_wait_again(harness):
    audit = ChangeFreeze(start=date(2027, 1, 8), end=date(2027, 1, 10), reason="Audit")
    edited = harness.config.model_copy(update={"change_freezes": (*harness.config.change_freezes, audit)})
    harness.task.config = edited  # the file as the worker parsed it now ...
    harness.task.use_run_config(harness.config)  # ... and the run's snapshot from before the edit
    harness.ledger.rows.append(
        {"activity_key": TASK_ID, "event": "waiting_for_window", "try_number": 1, "at": WEDNESDAY_NOON,
         "detail": {"until": FRIDAY_22.astimezone(UTC).isoformat()}}
    )  # fmt: skip
    harness.now = FRIDAY_22 + timedelta(seconds=2)
    with pytest.raises(TaskDeferred) as deferred:
        harness.task.execute_after_window(harness.context, awaited=FRIDAY_22.astimezone(UTC).isoformat())
    assert deferred.value.trigger.moment == NEXT_FRIDAY_22
    assert "change freeze 'Audit'" in harness.ti.xcom[WINDOW_XCOM_KEY]["reason"]
    assert [row["try_number"] for row in harness.ledger.rows] == [1, 2]


def test_inside_a_window_it_upgrades_at_once(harness):
    harness.now = FRIDAY_22 + timedelta(hours=1)
    assert harness.task.execute(harness.context) == {"upgraded": True}
    assert harness.ledger.rows == []


def test_a_rehearsal_ignores_windows_unless_the_run_asks(harness):
    harness.settings = settings(2.0)
    assert harness.task.execute(harness.context) == {"upgraded": True}
    harness.settings = settings(2.0, rehearse_windows=True)
    harness.now = RUN_START + timedelta(seconds=1)
    with pytest.raises(TaskDeferred) as deferred:
        harness.task.execute(harness.context)
    # Monday 10:00 Berlin to Friday 22:00 = 4.5 schedule days = 9 s of a 2 s rehearsal day
    assert deferred.value.trigger.moment - RUN_START == pytest.approx(
        timedelta(seconds=9), abs=timedelta(seconds=0.01)
    )


def test_no_opening_within_a_year_fails_the_task_with_the_reason(harness):
    year = (
        ChangeFreeze(start=date(2027, 1, 1), end=date(2027, 12, 31), reason="Migration year"),
        ChangeFreeze(start=date(2028, 1, 1), end=date(2028, 6, 30), reason="Migration year, extended"),
    )
    harness.task.config = harness.task.file_config = harness.config.model_copy(
        update={"change_freezes": year}
    )
    with pytest.raises(AirflowFailException, match="prod: no upgrade window opens within 366 days"):
        harness.task.execute(harness.context)


def test_a_ledger_that_is_down_does_not_hold_the_wait_back(harness, monkeypatch):
    @contextmanager
    def broken(*_args):
        raise ConnectionError("ledger down")
        yield

    monkeypatch.setattr(upgrade_window, "open_ledger", broken)
    with pytest.raises(TaskDeferred):
        harness.task.execute(harness.context)


# --- the upgrade follows its backup in the same window --------------------------------------------


def _backup_started(harness: Harness, at: datetime) -> None:
    """The backup's XCom: it started in its window at ``at``."""
    shown = {"waiting_for": "nothing", "opens_at": at.astimezone(UTC).isoformat()}
    harness.ti.upstream[("prod.backup_environment", WINDOW_XCOM_KEY)] = shown


def test_the_upgrade_follows_its_backup_even_when_a_compressed_window_closed_meanwhile(harness):
    harness.settings = settings(2.0, rehearse_windows=True)
    opening = RUN_START + timedelta(seconds=9)  # Friday 22:00 on the 2 s rehearsal clock
    harness.now = opening + timedelta(seconds=10)  # schedule reads Wednesday 22:00: closed
    with pytest.raises(TaskDeferred):
        harness.task.execute(harness.context)  # no backup in the window: it waits
    _backup_started(harness, opening)
    assert harness.task.execute(harness.context) == {"upgraded": True}
    assert harness.ti.xcom[WINDOW_XCOM_KEY]["opens_at"] == opening.isoformat()


def test_the_upgrade_asks_again_on_its_own_a_freeze_declared_since_the_backup_holds_it_back(harness):
    _backup_started(harness, FRIDAY_22)
    harness.now = FRIDAY_22 + timedelta(seconds=30)
    assert harness.task.execute(harness.context) == {"upgraded": True}
    audit = ChangeFreeze(start=date(2027, 1, 8), end=date(2027, 1, 10), reason="Audit")
    harness.task.config = harness.task.file_config = harness.config.model_copy(
        update={"change_freezes": (*harness.config.change_freezes, audit)}
    )
    with pytest.raises(TaskDeferred) as deferred:
        harness.task.execute(harness.context)
    assert deferred.value.trigger.moment == NEXT_FRIDAY_22
    assert "change freeze 'Audit'" in harness.ti.xcom[WINDOW_XCOM_KEY]["reason"]


def test_the_dag_factory_upgrade_follows_the_backup_of_its_environment():
    task = UpgradeEnvironmentOperator.for_environment(globex(), "uat", backup_id="b", task_id="u")
    assert task.window_follows == "uat.backup_environment"


def test_without_a_schedule_the_upgrade_does_not_ask_for_its_backups_window(harness, monkeypatch):
    pulls: list[tuple[str, str]] = []
    monkeypatch.setattr(
        harness.ti, "xcom_pull", lambda task_ids, key="return_value": pulls.append((task_ids, key))
    )
    harness.settings = settings(2.0)  # a rehearsal that ignores windows
    assert harness.task.execute(harness.context) == {"upgraded": True}
    assert pulls == []
