"""The upgrade task waits, deferred, for its environment's window; records and shows the wait; re-checks."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from managed_upgrade.config import ChangeFreeze, load_customer_config
from managed_upgrade.config.run_settings import RunSettings
from managed_upgrade_airflow.operators import upgrade_environment as module
from managed_upgrade_airflow.operators.upgrade_environment import (
    WINDOW_XCOM_KEY,
    UpgradeEnvironmentOperator,
)

CUSTOMERS = Path(__file__).resolve().parents[2] / "include" / "customers"
BERLIN = ZoneInfo("Europe/Berlin")
WEDNESDAY_NOON = datetime(2027, 1, 6, 12, tzinfo=BERLIN)
FRIDAY_22 = datetime(2027, 1, 8, 22, tzinfo=BERLIN)  # globex prod: fri/sat 22:00-06:00, sun 08:00-18:00
RUN_START = datetime(2027, 1, 4, 9, tzinfo=UTC)


class FakeTi:
    dag_id, run_id, task_id, try_number = "managed_upgrade__globex", "run1", "prod.upgrade_environment", 1

    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


class FakeLedger:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def events(self, dag_id: str, run_id: str) -> list[dict]:
        return list(self.rows)

    def record_event(self, dag_id, run_id, activity_key, event, *, at, try_number=1, detail=None) -> bool:
        self.rows.append(
            {
                "activity_key": activity_key,
                "event": event,
                "try_number": try_number,
                "at": at,
                "detail": detail,
            }
        )
        return True


@pytest.fixture
def harness(monkeypatch):
    """A globex prod upgrade task with a fake clock, ledger and run settings; ``_upgrade`` stubbed."""
    ledger = FakeLedger()
    clock = SimpleNamespace(now=WEDNESDAY_NOON, settings=RunSettings(
        "GLX-1", date(2027, 1, 4), date(2027, 1, 11), date(2027, 3, 31), "Reason", "11.0.0"
    ))  # fmt: skip

    @contextmanager
    def open_ledger(*_args):
        yield ledger

    monkeypatch.setattr(module, "_now", lambda: clock.now.astimezone(UTC))
    monkeypatch.setattr(module, "open_ledger", open_ledger)
    monkeypatch.setattr(module, "run_settings_from_xcom", lambda context: clock.settings)
    monkeypatch.setattr(UpgradeEnvironmentOperator, "_upgrade", lambda self, context: {"upgraded": True})
    config = load_customer_config(CUSTOMERS / "globex.yaml")
    task = UpgradeEnvironmentOperator.for_environment(
        config, "prod", backup_id="b1", task_id="prod.upgrade_environment"
    )
    ti = FakeTi()
    context = {"ti": ti, "dag_run": SimpleNamespace(start_date=RUN_START)}
    return SimpleNamespace(task=task, ti=ti, context=context, ledger=ledger, clock=clock, config=config)


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
    harness.clock.now = FRIDAY_22 + timedelta(seconds=2)
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
        {"activity_key": FakeTi.task_id, "event": "waiting_for_window", "try_number": 1, "at": WEDNESDAY_NOON,
         "detail": {"until": FRIDAY_22.astimezone(UTC).isoformat()}}
    )  # fmt: skip
    harness.clock.now = FRIDAY_22 + timedelta(seconds=2)
    with pytest.raises(TaskDeferred) as deferred:
        harness.task.execute_after_window(harness.context, awaited=FRIDAY_22.astimezone(UTC).isoformat())
    assert deferred.value.trigger.moment == datetime(2027, 1, 15, 22, tzinfo=BERLIN)
    assert "change freeze 'Audit'" in harness.ti.xcom[WINDOW_XCOM_KEY]["reason"]
    assert [row["try_number"] for row in harness.ledger.rows] == [1, 2]


def test_inside_a_window_it_upgrades_at_once(harness):
    harness.clock.now = FRIDAY_22 + timedelta(hours=1)
    assert harness.task.execute(harness.context) == {"upgraded": True}
    assert harness.ledger.rows == []


def test_a_rehearsal_ignores_windows_unless_the_run_asks(harness):
    harness.clock.settings = RunSettings(
        "GLX-1", date(2027, 1, 4), date(2027, 1, 11), date(2027, 3, 31), "R", "11.0.0", 2.0
    )
    assert harness.task.execute(harness.context) == {"upgraded": True}
    harness.clock.settings = RunSettings(
        "GLX-1", date(2027, 1, 4), date(2027, 1, 11), date(2027, 3, 31), "R", "11.0.0", 2.0, True
    )
    harness.clock.now = RUN_START + timedelta(seconds=1)
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

    monkeypatch.setattr(module, "open_ledger", broken)
    with pytest.raises(TaskDeferred):
        harness.task.execute(harness.context)
