"""The activity listener writes the ledger events the SLA clock reads, and never breaks a task.

The hooks are called the way the task runner calls them: through the Task SDK's listener manager
(pluggy), with a real ``RuntimeTaskInstance`` whose run context comes from the server, against a
real ledger database.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from airflow.sdk._shared.listeners.listener import ListenerManager
from airflow.sdk._shared.listeners.spec import taskinstance as taskinstance_spec
from airflow.sdk.api.datamodels._generated import DagRun, TIRunContext
from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

from managed_upgrade.ledger import Ledger
from managed_upgrade_airflow import activity_listener

pytestmark = pytest.mark.integration

CUSTOMER_DAG = "managed_upgrade__acme"
RUN_STARTED = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


@pytest.fixture
def hooks() -> Any:
    """The listener registered as the plugin registers it, in a fresh Task SDK listener manager."""
    manager = ListenerManager()
    manager.add_hookspecs(taskinstance_spec)
    manager.add_listener(activity_listener)
    return manager.hook


@pytest.fixture
def ledger(ledger_dsn: str) -> Any:
    connection = psycopg2.connect(ledger_dsn)
    yield Ledger(connection)
    connection.close()


def runtime_ti(
    task_id: str,
    *,
    dag_id: str = CUSTOMER_DAG,
    run_id: str = "manual__2027-01-11",
    try_number: int = 1,
    max_tries: int = 0,
    state: str = "running",
    conf: dict[str, Any] | None = None,
) -> RuntimeTaskInstance:
    """A task instance as the task runner holds it: its task, its run's context from the server."""
    with DAG(dag_id, schedule=None):
        task = EmptyOperator(task_id=task_id)
    dag_run = DagRun(
        dag_id=dag_id,
        run_id=run_id,
        logical_date=None,
        data_interval_start=None,
        data_interval_end=None,
        run_after=RUN_STARTED,
        start_date=RUN_STARTED,
        end_date=None,
        run_type="manual",
        state="running",
        conf=conf or {},
        consumed_asset_events=[],
        partition_key=None,
    )
    return RuntimeTaskInstance.model_construct(
        id=uuid.uuid4(),
        task_id=task_id,
        dag_id=dag_id,
        run_id=run_id,
        try_number=try_number,
        dag_version_id=uuid.uuid4(),
        map_index=-1,
        task=task,
        start_date=datetime.now(UTC),
        max_tries=max_tries,
        state=state,
        _ti_context_from_server=TIRunContext(dag_run=dag_run, max_tries=max_tries),
    )


def events(ledger: Ledger, run_id: str = "manual__2027-01-11", dag_id: str = CUSTOMER_DAG) -> list[tuple]:
    return [(e["activity_key"], e["event"], e["try_number"]) for e in ledger.events(dag_id, run_id)]


def event_at(ledger: Ledger, activity_key: str, event: str) -> datetime:
    return next(
        e["at"] for e in ledger.events(CUSTOMER_DAG, "manual__2027-01-11")
        if e["activity_key"] == activity_key and e["event"] == event
    )  # fmt: skip


def test_first_activity_is_ready_at_the_run_start_and_started_now(hooks, ledger):
    before = datetime.now(UTC)
    hooks.on_task_instance_running(
        previous_state="queued", task_instance=runtime_ti("initiation.create_request_case")
    )

    assert events(ledger) == [
        ("initiation.create_request_case", "ready", 1),
        ("initiation.create_request_case", "started", 1),
    ]
    assert event_at(ledger, "initiation.create_request_case", "ready") == RUN_STARTED
    assert event_at(ledger, "initiation.create_request_case", "started") >= before


def test_an_activity_is_ready_when_its_upstream_activity_finished_and_finishes_on_success(hooks, ledger):
    upstream_done = RUN_STARTED + timedelta(hours=3)
    ledger.record_event(CUSTOMER_DAG, "manual__2027-01-11", "initiation.create_request_case", "finished",
                        at=upstream_done)  # fmt: skip
    ti = runtime_ti("initiation.respond_to_request")

    hooks.on_task_instance_running(previous_state="queued", task_instance=ti)
    ti.state = "success"
    hooks.on_task_instance_success(previous_state="running", task_instance=ti)

    assert event_at(ledger, "initiation.respond_to_request", "ready") == upstream_done
    assert events(ledger)[1:] == [
        ("initiation.respond_to_request", "ready", 1),
        ("initiation.respond_to_request", "started", 1),
        ("initiation.respond_to_request", "finished", 1),
    ]


def test_a_task_resumed_after_deferral_does_not_duplicate_its_events(hooks, ledger):
    ti = runtime_ti("dev.customer_sign_off")
    hooks.on_task_instance_running(previous_state="queued", task_instance=ti)
    hooks.on_task_instance_running(previous_state="queued", task_instance=ti)  # resumed from the trigger

    assert events(ledger) == [("dev.customer_sign_off", "ready", 1), ("dev.customer_sign_off", "started", 1)]


def test_a_failure_followed_by_a_retry_is_not_recorded_but_the_last_one_is(hooks, ledger):
    first = runtime_ti("dev.fix_and_retest", try_number=1, max_tries=1, state="up_for_retry")
    hooks.on_task_instance_failed(
        previous_state="running", task_instance=first, error=RuntimeError("round 1")
    )
    assert events(ledger) == []

    second = runtime_ti("dev.fix_and_retest", try_number=2, max_tries=1, state="failed")
    hooks.on_task_instance_running(previous_state="queued", task_instance=second)
    hooks.on_task_instance_failed(
        previous_state="running", task_instance=second, error=RuntimeError("sanity test failed:\n 3 of 7")
    )

    assert events(ledger) == [
        ("dev.fix_and_retest", "ready", 2),
        ("dev.fix_and_retest", "started", 2),
        ("dev.fix_and_retest", "failed", 2),
    ]
    failed = ledger.events(CUSTOMER_DAG, "manual__2027-01-11")[-1]
    assert failed["detail"] == {"terminal": True, "error": "RuntimeError: sanity test failed: 3 of 7"}


def test_terminal_failure_without_a_state_is_judged_by_tries_left():
    ti = runtime_ti("dev.sanity_test", try_number=1, max_tries=1, state="running")
    ti.state = None
    assert not activity_listener.is_terminal_failure(ti)
    ti.try_number = 2
    assert activity_listener.is_terminal_failure(ti)


def review_ti(*, customer_wait: bool, question: int = 2, state: str = "running") -> RuntimeTaskInstance:
    conf = {
        "for": {"dag_id": CUSTOMER_DAG, "run_id": "manual__2027-01-11", "task_id": "dev.customer_sign_off"},
        "customer_wait": customer_wait,
        "question": question,
    }
    return runtime_ti(
        "question", dag_id="managed_upgrade_review", run_id=f"q{question}", conf=conf, state=state
    )


def test_an_open_customer_question_pauses_the_activity_until_answered(hooks, ledger):
    ti = review_ti(customer_wait=True, question=2)
    hooks.on_task_instance_running(previous_state="queued", task_instance=ti)
    ti.state = "success"
    hooks.on_task_instance_success(previous_state="running", task_instance=ti)

    assert events(ledger) == [
        ("dev.customer_sign_off", "waiting_on_customer", 2),
        ("dev.customer_sign_off", "resumed", 2),
    ]
    assert events(ledger, "q2", "managed_upgrade_review") == []


def test_a_failed_customer_question_resumes_the_activity(hooks, ledger):
    ti = review_ti(customer_wait=True, question=1)
    hooks.on_task_instance_running(previous_state="queued", task_instance=ti)
    ti.state = "failed"
    hooks.on_task_instance_failed(previous_state="running", task_instance=ti, error="HITLTimeoutError")

    assert events(ledger) == [
        ("dev.customer_sign_off", "waiting_on_customer", 1),
        ("dev.customer_sign_off", "resumed", 1),
    ]


def test_a_question_to_the_consultant_does_not_pause_anything(hooks, ledger):
    ti = review_ti(customer_wait=False)
    hooks.on_task_instance_running(previous_state="queued", task_instance=ti)
    hooks.on_task_instance_success(previous_state="running", task_instance=ti)

    assert events(ledger) == []


def test_other_dags_and_tasks_that_are_no_activity_are_ignored(hooks, ledger):
    hooks.on_task_instance_running(previous_state="queued", task_instance=runtime_ti("extract", dag_id="etl"))
    hooks.on_task_instance_running(previous_state="queued", task_instance=runtime_ti("save_plan"))

    assert events(ledger) == []
    assert events(ledger, dag_id="etl") == []


def test_an_unreachable_ledger_is_logged_and_the_task_goes_on(hooks, monkeypatch, caplog):
    monkeypatch.setenv(
        "AIRFLOW_CONN_MANAGED_UPGRADE_LEDGER",
        json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": 9, "login": "postgres", "schema": "x"}
        ),
    )
    ti = runtime_ti("initiation.create_request_case")
    with caplog.at_level(logging.ERROR, logger=activity_listener.__name__):
        hooks.on_task_instance_running(previous_state="queued", task_instance=ti)
        hooks.on_task_instance_success(previous_state="running", task_instance=ti)

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "could not record the running event of managed_upgrade__acme" in messages[0]
