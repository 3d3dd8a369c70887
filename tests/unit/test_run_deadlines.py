"""Run-level deadline alerts: when each falls due, real and rehearsed, and how Airflow carries them.

The reference is evaluated the way Airflow evaluates it when a run is created: serialized with the
DAG, decoded through the plugin's registration, then ``evaluate_with(session=..., dag_id, run_id)``.
The metadata database is the one thing replaced: a session that answers the run's row.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import DAG, AsyncCallback

from managed_upgrade.config import load_customer_config
from managed_upgrade.sla.calendar import BusinessCalendar
from managed_upgrade.sla.deadlines import deadline_date, due_at, rehearsal_seconds
from managed_upgrade_airflow.run_deadlines import ManagedUpgradeDeadline, alert_run_deadline, run_deadlines

REPO = Path(__file__).resolve().parents[2]
MONDAY_9 = datetime(2027, 1, 11, 9, 0, tzinfo=UTC)
"""A run started Monday 2027-01-11 09:00 UTC; acme's deadline is Wednesday 2027-03-31."""


@pytest.fixture(scope="module")
def acme() -> Any:
    return load_customer_config(REPO / "include" / "customers" / "acme.yaml")


def references(config: Any) -> dict[str, ManagedUpgradeDeadline]:
    return {alert.reference.kind: alert.reference for alert in run_deadlines(config)}


# --------------------------------------------------------------------------- the alerts of a DAG


def test_a_dag_gets_three_alerts_calling_the_async_callback_with_flat_kwargs(acme):
    alerts = run_deadlines(acme)

    assert [alert.name for alert in alerts] == ["deadline_warning", "deadline_missed", "timeline_ceiling"]
    for alert in alerts:
        assert isinstance(alert.callback, AsyncCallback)
        assert alert.callback.path == f"{alert_run_deadline.__module__}.alert_run_deadline"
        assert alert.callback.kwargs == {"kind": alert.name, "customer_id": "acme"}
        assert alert.interval == timedelta(0)
        assert alert.reference.default_deadline == "2027-03-31"
    assert len(set(alerts)) == 3  # distinct alerts, and hashable as Airflow needs them


def test_the_reference_survives_dag_serialization_and_decodes_through_the_plugin(acme, monkeypatch):
    from airflow import plugins_manager, settings
    from airflow.serialization.decoders import decode_deadline_reference
    from airflow.serialization.serialized_objects import DagSerialization

    monkeypatch.setattr(settings, "PLUGINS_FOLDER", str(REPO / "plugins"))
    for cached in (plugins_manager._get_plugins, plugins_manager.get_deadline_references_plugins):
        cached.cache_clear()
    try:
        with DAG("managed_upgrade__acme", schedule=None, deadline=run_deadlines(acme)) as dag:
            pass
        serialized = DagSerialization.to_dict(dag)["dag"]["deadline"]
        decoded = [decode_deadline_reference(alert["reference"]) for alert in serialized]
    finally:
        for cached in (plugins_manager._get_plugins, plugins_manager.get_deadline_references_plugins):
            cached.cache_clear()

    assert [ref.inner_ref for ref in decoded] == list(references(acme).values())
    assert (
        serialized[0]["reference"]["__class_path"]
        == "managed_upgrade_airflow.run_deadlines.ManagedUpgradeDeadline"
    )


# ------------------------------------------------------------------------------ real calendar


def test_real_run_warning_deadline_and_ceiling_in_business_days(acme):
    refs = references(acme)
    conf = {"deadline": "2027-03-31"}

    # five business days before the end of Wednesday 31 March: Thursday 25, Fri 26, Mon 29, Tue 30, Wed 31
    assert refs["deadline_warning"].instant(conf, MONDAY_9) == datetime(2027, 3, 25, tzinfo=UTC)
    assert refs["deadline_missed"].instant(conf, MONDAY_9) == datetime(2027, 4, 1, tzinfo=UTC)
    # 50 business days = 10 weeks
    assert refs["timeline_ceiling"].instant(conf, MONDAY_9) == datetime(2027, 3, 22, 9, tzinfo=UTC)


def test_the_deadline_ends_at_midnight_in_the_customer_zone_and_holidays_count(acme):
    berlin = acme.model_copy(
        update={
            "calendar": acme.calendar.model_copy(
                update={"timezone": "Europe/Berlin", "holidays": (date(2027, 3, 29),)}
            )
        }
    )
    refs = references(berlin)
    conf = {"deadline": "2027-03-31"}

    assert refs["deadline_missed"].instant(conf, MONDAY_9) == datetime(
        2027, 3, 31, 22, tzinfo=UTC
    )  # 24:00 CEST
    # the holiday on Monday 29 March moves the warning a business day earlier: Wed 24, 00:00 CET
    assert refs["deadline_warning"].instant(conf, MONDAY_9) == datetime(2027, 3, 23, 23, tzinfo=UTC)


def test_the_trigger_forms_deadline_wins_over_the_config_and_a_missing_one_falls_back(acme):
    refs = references(acme)
    assert refs["deadline_missed"].instant({"deadline": "2027-02-26"}, MONDAY_9) == datetime(
        2027, 2, 27, tzinfo=UTC
    )
    assert refs["deadline_missed"].instant({}, MONDAY_9) == datetime(2027, 4, 1, tzinfo=UTC)
    assert deadline_date({"deadline": "not a date"}, date(2027, 3, 31)) == date(2027, 3, 31)


# ---------------------------------------------------------------------------------- rehearsal


def test_rehearsal_compresses_the_business_days_to_each_target(acme):
    refs = references(acme)
    conf = {"deadline": "2027-03-31", "seconds_per_business_day": 10}
    calendar = BusinessCalendar()
    # from Monday 09:00: 0.625 of that day, then every business day up to and including 31 March
    days_to_deadline = 0.625 + calendar.count_business_days(date(2027, 1, 12), date(2027, 4, 1))

    missed = refs["deadline_missed"].instant(conf, MONDAY_9)
    assert missed == MONDAY_9 + timedelta(seconds=days_to_deadline * 10)
    assert refs["deadline_warning"].instant(conf, MONDAY_9) == missed - timedelta(seconds=5 * 10)
    assert refs["timeline_ceiling"].instant(conf, MONDAY_9) == MONDAY_9 + timedelta(seconds=50 * 10)


def test_no_or_invalid_rehearsal_seconds_mean_a_real_run():
    assert rehearsal_seconds({"seconds_per_business_day": None}) is None
    assert rehearsal_seconds({"seconds_per_business_day": 0}) is None
    assert rehearsal_seconds({"seconds_per_business_day": "fast"}) is None
    assert rehearsal_seconds({"seconds_per_business_day": True}) is None
    assert rehearsal_seconds({"seconds_per_business_day": "2.5"}) == 2.5


# ------------------------------------------------------------------------ deadline in the past


@pytest.mark.parametrize("seconds", [None, 10])
def test_a_deadline_already_past_at_trigger_time_is_due_at_once(acme, seconds):
    refs = references(acme)
    conf = {"deadline": "2027-01-08", "seconds_per_business_day": seconds}  # the Friday before the start

    assert refs["deadline_missed"].instant(conf, MONDAY_9) <= MONDAY_9
    assert refs["deadline_warning"].instant(conf, MONDAY_9) < MONDAY_9
    assert refs["timeline_ceiling"].instant(conf, MONDAY_9) > MONDAY_9


def test_due_at_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown run deadline kind 'soon'"):
        due_at("soon", deadline=date(2027, 3, 31), run_start=MONDAY_9, calendar=BusinessCalendar())  # type: ignore[arg-type]


# ---------------------------------------------------------------- evaluation as Airflow runs it


class RunRowSession:
    """Answers the reference's one query (the run's conf and times) as the metadata DB would."""

    def __init__(self, row: Any) -> None:
        self.row = row
        self.statements: list[Any] = []

    def execute(self, statement: Any) -> Any:
        self.statements.append(statement)
        return SimpleNamespace(one_or_none=lambda: self.row)


def run_row(conf: dict[str, Any], queued_at: datetime | None = MONDAY_9) -> Any:
    return SimpleNamespace(conf=conf, queued_at=queued_at, start_date=None, run_after=MONDAY_9)


def test_airflow_evaluates_the_reference_from_the_runs_row(acme):
    from airflow.serialization.definitions.deadline import SerializedReferenceModels

    wrapped = SerializedReferenceModels.SerializedCustomReference(references(acme)["timeline_ceiling"])
    session = RunRowSession(run_row({"seconds_per_business_day": 2}))

    due = wrapped.evaluate_with(
        session=session,
        interval=timedelta(0),
        dag_id="managed_upgrade__acme",
        run_id="manual__1",
        logical_date=None,
    )

    assert due == MONDAY_9 + timedelta(seconds=100)
    assert "dag_run.run_id" in str(session.statements[0])


def test_a_run_that_cannot_be_evaluated_gets_no_alert_instead_of_failing_the_trigger(acme, caplog):
    reference = references(acme)["timeline_ceiling"]
    broken = RunRowSession(run_row({"deadline": "2027-03-31"}, queued_at=None))
    broken.row.run_after = "not a datetime"

    assert reference._evaluate_with(session=broken, dag_id="managed_upgrade__acme", run_id="r") is None
    assert (
        reference._evaluate_with(session=RunRowSession(None), dag_id="managed_upgrade__acme", run_id="r")
        is None
    )
    assert "could not be computed; no alert set" in caplog.text
