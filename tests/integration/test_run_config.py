"""A run keeps the config it started with: stored once in a real ledger, read by every later task,
the deadline callbacks and the failure alerts, whatever happens to the YAML file meanwhile."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg2
import pytest
import yaml

from managed_upgrade.config import load_customer_config, parse_customer_config
from managed_upgrade.config.snapshot import ConfigSnapshot
from managed_upgrade.ledger import Ledger
from managed_upgrade_airflow.dag_factory import before_execute, build_dag
from managed_upgrade_airflow.notifiers.failure_notifier import ActivityFailureNotifier
from managed_upgrade_airflow.run_config import (
    RunConfigError,
    adopt_run_config,
    stored_run_config,
)
from managed_upgrade_airflow.run_deadlines import alert_run_deadline

pytestmark = pytest.mark.integration

CUSTOMERS = Path(__file__).resolve().parents[2] / "include" / "customers"
DAG_ID = "managed_upgrade__acme"
RUN_ID = "manual__2027-01-11T09:00:00+00:00"


@pytest.fixture
def ledger(ledger_dsn: str) -> Iterator[Ledger]:
    connection = psycopg2.connect(ledger_dsn)
    yield Ledger(connection)
    connection.close()


def acme_data() -> dict[str, Any]:
    return yaml.safe_load((CUSTOMERS / "acme.yaml").read_text())


def edited_acme(**changes: Any) -> Any:
    """acme as ops might edit its file during the run."""
    data = acme_data()
    data.update(changes)
    return parse_customer_config(data, str(CUSTOMERS / "acme.yaml"), file_stem="acme")


def context_for(task: Any, run_id: str = RUN_ID) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id=DAG_ID, run_id=run_id, task_id=task.task_id, start_date=None, map_index=-1)
    return {"task": task, "ti": ti, "dag_run": SimpleNamespace(conf={}, start_date=None)}


def task_of(dag: Any, suffix: str) -> Any:
    (task,) = [task for task in dag.tasks if task.task_id.endswith(suffix)]
    return task


def test_every_task_of_a_customer_dag_adopts_the_run_config_before_it_executes():
    dag = build_dag(load_customer_config(CUSTOMERS / "acme.yaml"))

    # Airflow keeps the ``pre_execute`` argument here (a mapped task: in its partial arguments, which
    # each mapped instance is built with) and calls it before execute and before a resume
    hooks = {
        task.task_id: task.partial_kwargs.get("pre_execute")
        if hasattr(task, "partial_kwargs")
        else task._pre_execute_hook
        for task in dag.tasks
    }

    assert set(hooks.values()) == {before_execute}, hooks


def test_the_first_task_stores_the_config_and_a_later_task_keeps_it_though_the_file_changed(ledger, caplog):
    started_with = load_customer_config(CUSTOMERS / "acme.yaml")
    first = task_of(build_dag(started_with), "create_request_case")
    adopt_run_config(context_for(first))

    stored = ledger.run_config(DAG_ID, RUN_ID)
    assert stored is not None
    assert (stored["customer_id"], stored["taken_by"]) == ("acme", first.task_id)
    assert stored["digest"] == ConfigSnapshot.of(started_with).digest
    assert first.config is started_with  # the first task works with the file it was built from

    # weeks later ops rename the customer and lower the fix rounds; the DAG file is parsed again
    edited = edited_acme(name="ACME Holding", fix_loop={"max_rounds": 1})
    later = task_of(build_dag(edited), "sla_watch")
    with caplog.at_level(logging.WARNING, logger="managed_upgrade_airflow.run_config"):
        adopt_run_config(context_for(later))

    assert later.config.name == started_with.name
    assert later.config.fix_loop.max_rounds == started_with.fix_loop.max_rounds
    assert later.config.model_dump(mode="json") == started_with.model_dump(mode="json")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "changed since run" in warning and "fields: fix_loop, name" in warning
    assert ledger.run_config(DAG_ID, RUN_ID)["digest"] == stored["digest"]  # not replaced

    # the SLA watch hands its trigger the run's config, not the file's
    _, kwargs = later.make_trigger(context_for(later)).serialize()
    assert kwargs["config"]["name"] == started_with.name


def test_another_run_takes_its_own_snapshot(ledger):
    adopt_run_config(
        context_for(task_of(build_dag(load_customer_config(CUSTOMERS / "acme.yaml")), "sla_watch"))
    )
    edited = edited_acme(name="ACME Holding")
    task = task_of(build_dag(edited), "sla_watch")

    adopt_run_config(context_for(task, run_id="manual__2027-02-01T09:00:00+00:00"))

    assert task.config is edited
    assert (
        ledger.run_config(DAG_ID, "manual__2027-02-01T09:00:00+00:00")["digest"]
        == ConfigSnapshot.of(edited).digest
    )


def test_gates_ask_the_people_and_rounds_of_the_run_config_not_of_the_edited_file(ledger):
    started_with = load_customer_config(CUSTOMERS / "acme.yaml")
    adopt_run_config(context_for(task_of(build_dag(started_with), "create_request_case")))
    data = acme_data()
    users = data["users"]
    # mid-run, ops edit the file: another consultant and project manager, one fix round, a new name
    edited = edited_acme(
        name="ACME Holding",
        fix_loop={"max_rounds": 1},
        users={**users, "consultant": ["zoe"], "project_manager": ["yann"]},
        contacts={
            **data["contacts"],
            "consultant": [{"name": "Zoe Consultant", "email": "zoe@platinum.example", "user": "zoe"}],
            "project_manager": [{"name": "Yann Manager", "email": "yann@platinum.example", "user": "yann"}],
        },
    )
    dag = build_dag(edited)
    respond = task_of(dag, "respond_to_request")
    acknowledge = task_of(dag, "acknowledge_request_formally")
    fix_loop = task_of(dag, "dev.fix_and_retest")
    assert [user["id"] for user in respond.assigned_users] == ["zoe"]  # as built from the file
    assert fix_loop.max_rounds == 1

    for task in (respond, acknowledge, fix_loop):
        adopt_run_config(context_for(task))

    assert respond.assigned_users == [{"id": name, "name": name} for name in users["consultant"]]
    assert acknowledge.assigned_users == [{"id": name, "name": name} for name in users["project_manager"]]
    assert respond.subject == f"Respond to the Managed Upgrade request of {started_with.name}"
    assert fix_loop.assigned_users == tuple(users["consultant"])
    assert fix_loop.max_rounds == started_with.fix_loop.max_rounds != 1


def test_a_gate_subject_or_assignees_set_in_the_dag_stay_as_set(ledger):
    started_with = load_customer_config(CUSTOMERS / "acme.yaml")
    adopt_run_config(context_for(task_of(build_dag(started_with), "create_request_case")))
    respond = task_of(build_dag(edited_acme(name="ACME Holding")), "respond_to_request")
    respond.subject = "Call ACME first"
    respond.assigned_users = [{"id": "ops", "name": "ops"}]

    adopt_run_config(context_for(respond))

    assert (respond.subject, respond.assigned_users) == ("Call ACME first", [{"id": "ops", "name": "ops"}])
    assert respond.config.name == started_with.name


def test_a_snapshot_that_no_longer_validates_fails_the_task_naming_the_run(ledger):
    snapshot = ConfigSnapshot.of(load_customer_config(CUSTOMERS / "acme.yaml"))
    row = {
        **snapshot.as_row(),
        "document": {**snapshot.document, "platinum_support": "maybe"},
        "digest": "0" * 64,
    }
    ledger.keep_run_config(DAG_ID, RUN_ID, row, taken_by="create_request_case")
    task = task_of(build_dag(load_customer_config(CUSTOMERS / "acme.yaml")), "sla_watch")

    with pytest.raises(RunConfigError) as caught:
        adopt_run_config(context_for(task))

    assert f"run {DAG_ID}/{RUN_ID}" in str(caught.value)
    assert "platinum_support" in str(caught.value)
    assert stored_run_config(DAG_ID, RUN_ID) is None  # callbacks fall back to the file instead


def test_the_deadline_callback_alerts_with_the_run_config(ledger, smtp_sink):
    started_with = load_customer_config(CUSTOMERS / "acme.yaml")
    ledger.keep_run_config(
        DAG_ID, RUN_ID, ConfigSnapshot.of(edited_acme(name="ACME as started")).as_row(), taken_by="t"
    )
    due = datetime(2027, 4, 1, tzinfo=UTC)
    context = {
        "dag_run": {
            "dag_id": DAG_ID,
            "dag_run_id": RUN_ID,
            "queued_at": "2027-01-11T09:00:00Z",
            "conf": {},
            "state": "running",
        },
        "deadline": {"id": "0197a1b2-0000-7000-8000-000000000001", "deadline_time": due},
    }

    result = json.loads(
        asyncio.run(alert_run_deadline("deadline_missed", "acme", context, now=due + timedelta(seconds=2)))
    )

    assert result["sent"] is True
    (message,) = smtp_sink.messages
    assert "ACME as started" in message["Subject"]
    assert started_with.name not in message["Subject"]


def test_the_failure_alert_names_the_customer_as_the_run_started(ledger, smtp_sink):
    ledger.keep_run_config(
        DAG_ID, RUN_ID, ConfigSnapshot.of(edited_acme(name="ACME as started")).as_row(), taken_by="t"
    )
    config = load_customer_config(CUSTOMERS / "acme.yaml")
    notifier = ActivityFailureNotifier(config, config.process_model())
    ti = SimpleNamespace(
        dag_id=DAG_ID, run_id=RUN_ID, task_id="create_request_case", start_date=None, map_index=-1
    )

    notifier.notify({"ti": ti, "task": None, "exception": RuntimeError("boom")})

    assert smtp_sink.messages, "no failure alert was sent"
    assert all("ACME as started" in message["Subject"] for message in smtp_sink.messages)


def test_without_a_snapshot_callbacks_use_the_file(ledger):
    assert stored_run_config(DAG_ID, "manual__never-started") is None
