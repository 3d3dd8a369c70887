"""The activity listener writes the ledger events the SLA clock reads, and never breaks a task.

The hooks are called the way the task runner calls them: through the Task SDK's listener manager
(pluggy), with a real ``RuntimeTaskInstance`` whose run context comes from the server, against a
real ledger database.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
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
from managed_upgrade_airflow import activity_listener, ledger_access

pytestmark = pytest.mark.integration

CUSTOMER_DAG = "managed_upgrade__acme"
REVIEW_DAG = "managed_upgrade_review__acme"
"""The customer's own review DAG: its runs are the review questions of CUSTOMER_DAG's runs."""
RUN_STARTED = datetime(2027, 1, 11, 9, tzinfo=UTC)
NOW = RUN_STARTED + timedelta(days=2, hours=3, minutes=25)
"""The listener's clock in these tests (its ``_now``): events it stamps "now" carry this instant."""


@pytest.fixture(autouse=True)
def listener_clock(monkeypatch: pytest.MonkeyPatch) -> datetime:
    monkeypatch.setattr(activity_listener, "_now", lambda: NOW)
    return NOW


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
        start_date=NOW,
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
    hooks.on_task_instance_running(
        previous_state="queued", task_instance=runtime_ti("initiation.create_request_case")
    )

    assert events(ledger) == [
        ("initiation.create_request_case", "ready", 1),
        ("initiation.create_request_case", "started", 1),
    ]
    assert event_at(ledger, "initiation.create_request_case", "ready") == RUN_STARTED
    assert event_at(ledger, "initiation.create_request_case", "started") == NOW


def test_an_activity_is_ready_when_its_upstream_activity_finished_and_finishes_on_success(hooks, ledger):
    upstream_done = RUN_STARTED + timedelta(hours=3)
    ledger.record_event(CUSTOMER_DAG, "manual__2027-01-11", "initiation.create_request_case", "finished",
                        at=upstream_done)  # fmt: skip
    ti = runtime_ti("initiation.respond_to_request")

    hooks.on_task_instance_running(previous_state="queued", task_instance=ti)
    ti.state = "success"
    hooks.on_task_instance_success(previous_state="running", task_instance=ti)

    assert event_at(ledger, "initiation.respond_to_request", "ready") == upstream_done
    assert event_at(ledger, "initiation.respond_to_request", "finished") == NOW
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


def review_ti(
    *, customer_wait: bool, question: int = 2, state: str = "running", dag_id: str = REVIEW_DAG
) -> RuntimeTaskInstance:
    conf = {
        "for": {"dag_id": CUSTOMER_DAG, "run_id": "manual__2027-01-11", "task_id": "dev.customer_sign_off"},
        "customer_wait": customer_wait,
        "question": question,
    }
    return runtime_ti("question", dag_id=dag_id, run_id=f"q{question}", conf=conf, state=state)


def test_an_open_customer_question_pauses_the_activity_until_answered(hooks, ledger):
    ti = review_ti(customer_wait=True, question=2)
    hooks.on_task_instance_running(previous_state="queued", task_instance=ti)
    ti.state = "success"
    hooks.on_task_instance_success(previous_state="running", task_instance=ti)

    assert events(ledger) == [
        ("dev.customer_sign_off", "waiting_on_customer", 2),
        ("dev.customer_sign_off", "resumed", 2),
    ]
    assert events(ledger, "q2", REVIEW_DAG) == []


def test_a_question_in_another_customers_review_dag_pauses_nothing(hooks, ledger):
    """Only acme's review DAG asks for acme's runs: a run of globex's carrying acme's run is ignored."""
    ti = review_ti(customer_wait=True, question=2, dag_id="managed_upgrade_review__globex")
    hooks.on_task_instance_running(previous_state="queued", task_instance=ti)
    assert events(ledger) == []


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
    monkeypatch.setattr(ledger_access, "LEDGER_OUTAGE_SECONDS", 0.5)
    monkeypatch.setattr(ledger_access, "OUTAGE_PAUSE_SECONDS", 0.0)
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


# --- a stopped run is quiet: stops and closed questions ------------------------------------------------
# In the api-server and the scheduler the hooks get ORM objects attached to the session of the state
# change; ``compat`` does the ORM work there (checked end to end in tests/e2e/test_stopped_run.py).
# Here the ORM side is a recording double, so what the listener decides -- which questions to close,
# which runs to fail, which stops and reasons to record -- is checked against a real ledger.

RUN = "manual__2027-01-11"
MANUAL = "Dag Run's state was manually set to `failed`."
ANALYSIS = "initiation.analyse_questionnaire_and_system"


@pytest.fixture
def server_hooks() -> Any:
    """The listener as the api-server and the scheduler register it: task-instance and dag-run hooks."""
    from airflow.listeners.spec import dagrun as dagrun_spec

    manager = ListenerManager()
    manager.add_hookspecs(taskinstance_spec)
    manager.add_hookspecs(dagrun_spec)
    manager.add_listener(activity_listener)
    return manager.hook


class FakeSession:
    """Stands for the caller's SQLAlchemy session (only its savepoints are used directly)."""

    def begin_nested(self) -> Any:
        import contextlib

        return contextlib.nullcontext()


@dataclass
class Airflow:
    """The metadata DB as ``compat`` sees it: pending HITL details per (dag, run), open review runs."""

    pending: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    open_runs: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)
    closed: list[tuple[str, str, str, str]] = field(default_factory=list)


@pytest.fixture
def airflow_db(monkeypatch: pytest.MonkeyPatch) -> Airflow:
    from managed_upgrade_airflow import compat

    db = Airflow()
    session = FakeSession()

    def orm_session_of(instance: Any) -> Any:
        return session if getattr(instance, "orm", False) else None

    def close_pending_hitl(_session, *, dag_id, run_id, reason, at, task_ids=None):
        tasks = db.pending.get((dag_id, run_id), [])
        closing = [task for task in tasks if task_ids is None or task in task_ids]
        db.pending[(dag_id, run_id)] = [task for task in tasks if task not in closing]
        db.closed += [(dag_id, run_id, task, reason) for task in closing]
        return [compat.ClosedQuestion(dag_id, run_id, task) for task in closing]

    def open_run_ids(_session, dag_id, suffix):
        return [run for run in db.open_runs if run.endswith(suffix) and dag_id == REVIEW_DAG]

    def pending_hitl_run_ids(_session, dag_id, suffix):
        return [
            run
            for (dag, run), tasks in db.pending.items()
            if dag == dag_id and tasks and run.endswith(suffix)
        ]

    def fail_dag_run(_session, dag_id, run_id):
        assert dag_id == REVIEW_DAG, dag_id
        db.failed_runs.append(run_id)
        db.open_runs.remove(run_id)

    monkeypatch.setattr(compat, "orm_session_of", orm_session_of)
    monkeypatch.setattr(compat, "close_pending_hitl", close_pending_hitl)
    monkeypatch.setattr(compat, "open_run_ids", open_run_ids)
    monkeypatch.setattr(compat, "pending_hitl_run_ids", pending_hitl_run_ids)
    monkeypatch.setattr(compat, "fail_dag_run", fail_dag_run)
    return db


def orm_run(dag_id: str = CUSTOMER_DAG, run_id: str = RUN, state: str = "failed", conf=None) -> Any:
    return SimpleNamespace(orm=True, dag_id=dag_id, run_id=run_id, state=state, conf=conf or {},
                           start_date=RUN_STARTED)  # fmt: skip


def orm_ti(task_id: str, *, state: str, run_state: str = "running", dag_id: str = CUSTOMER_DAG,
           run_id: str = RUN, conf=None) -> Any:  # fmt: skip
    return SimpleNamespace(
        orm=True, dag_id=dag_id, run_id=run_id, task_id=task_id, state=state, try_number=1, max_tries=0,
        dag_run=orm_run(dag_id, run_id, run_state, conf),
    )  # fmt: skip


def review_run(task_id: str, number: int, run_id: str = RUN) -> str:
    from managed_upgrade.review.review_runs import review_run_id

    return review_run_id(CUSTOMER_DAG, run_id, task_id, number)


def test_a_run_marked_failed_by_ops_is_recorded_and_all_its_questions_are_closed(
    server_hooks, ledger, airflow_db
) -> None:
    asked = review_run(ANALYSIS, 2)
    answered_before = review_run(ANALYSIS, 1)
    other_run = review_run(ANALYSIS, 1, run_id="manual__other")
    airflow_db.pending = {
        (CUSTOMER_DAG, RUN): ["initiation.respond_to_request"],
        (REVIEW_DAG, asked): ["question"],
        (REVIEW_DAG, other_run): ["question"],
    }
    airflow_db.open_runs = [asked, other_run]
    # what patch_dag_run_state does: the killed task instances first (the run is already failed), then the run
    server_hooks.on_task_instance_failed(
        previous_state=None, task_instance=orm_ti(ANALYSIS, state="failed", run_state="failed"), error=MANUAL
    )
    server_hooks.on_dag_run_failed(dag_run=orm_run(), msg=MANUAL)

    (stop,) = ledger.run_stops(CUSTOMER_DAG, RUN)
    assert (stop["task_id"], stop["how"]) == (None, "run_marked_failed")
    assert stop["reason"].startswith(f"run {CUSTOMER_DAG}/{RUN} was stopped by ops at ")
    assert airflow_db.failed_runs == [asked]  # the other customer run's question stays open
    assert answered_before not in airflow_db.failed_runs
    closed = ledger.closed_questions(CUSTOMER_DAG, RUN)
    assert [(row["task_id"], row["question"], row["hitl_dag_id"], row["hitl_run_id"]) for row in closed] == [
        ("initiation.respond_to_request", 0, CUSTOMER_DAG, RUN),
        (ANALYSIS, 2, REVIEW_DAG, asked),
    ]
    assert {row["reason"] for row in closed} == {stop["reason"]}
    assert {reason for *_, reason in airflow_db.closed} == {stop["reason"]}
    assert airflow_db.pending[(REVIEW_DAG, other_run)] == ["question"]
    # the killed activity's own event, as before
    assert events(ledger)[-1] == (ANALYSIS, "failed", 1)


def test_a_run_the_scheduler_fails_ends_its_watch_and_a_run_that_succeeds_stops_nothing(
    server_hooks, ledger, airflow_db
) -> None:
    server_hooks.on_dag_run_success(dag_run=orm_run(state="success"), msg="success")
    assert ledger.run_stops(CUSTOMER_DAG, RUN) == []

    server_hooks.on_dag_run_failed(dag_run=orm_run(), msg="task_failure")
    (stop,) = ledger.run_stops(CUSTOMER_DAG, RUN)
    assert stop["how"] == "run_failed" and stop["reason"].endswith("(task_failure)")

    server_hooks.on_dag_run_success(
        dag_run=orm_run(run_id="manual__b", state="success"), msg=MANUAL.replace("failed", "success")
    )
    (marked,) = ledger.run_stops(CUSTOMER_DAG, "manual__b")
    assert marked["how"] == "run_marked_success" and "was marked success by ops at" in marked["reason"]


def test_a_run_stop_without_an_orm_session_is_still_recorded(server_hooks, ledger, airflow_db) -> None:
    detached = orm_run()
    detached.orm = False  # e.g. an object detached from its session: no questions can be closed here
    server_hooks.on_dag_run_failed(dag_run=detached, msg=MANUAL)
    assert [row["how"] for row in ledger.run_stops(CUSTOMER_DAG, RUN)] == ["run_marked_failed"]
    assert ledger.closed_questions(CUSTOMER_DAG, RUN) == []


@pytest.mark.parametrize(
    ("task_id", "hook", "how"),
    [
        (ANALYSIS, "failed", "task_marked_failed"),
        (ANALYSIS, "skipped", "task_marked_skipped"),
        (ANALYSIS, "success", None),
        ("sla_watch", "success", "watch_marked_success"),
    ],
)
def test_a_task_marked_by_hand_closes_its_own_questions_and_stops_the_watch_when_the_run_cannot_finish(
    server_hooks, ledger, airflow_db, task_id, hook, how
) -> None:
    mine, sibling = review_run(task_id, 3), review_run("dev.customer_sign_off", 1)
    airflow_db.pending = {(REVIEW_DAG, mine): ["question"]}
    airflow_db.open_runs = [mine, sibling]
    ti = orm_ti(task_id, state=hook)
    if hook == "failed":
        server_hooks.on_task_instance_failed(previous_state=None, task_instance=ti, error=MANUAL)
    elif hook == "skipped":
        server_hooks.on_task_instance_skipped(previous_state=None, task_instance=ti)
    else:
        server_hooks.on_task_instance_success(previous_state=None, task_instance=ti)

    stops = ledger.run_stops(CUSTOMER_DAG, RUN)
    assert [(row["task_id"], row["how"]) for row in stops] == ([(task_id, how)] if how else [])
    assert airflow_db.failed_runs == [mine] and airflow_db.open_runs == [sibling]
    (closed,) = ledger.closed_questions(CUSTOMER_DAG, RUN)
    assert (closed["task_id"], closed["question"], closed["hitl_run_id"]) == (task_id, 3, mine)
    assert closed["reason"].startswith(
        f"task {task_id} of run {CUSTOMER_DAG}/{RUN} was marked {hook} by hand at "
    )


def test_a_question_run_stopped_by_ops_is_closed_and_recorded_under_its_customer_run(
    server_hooks, ledger, airflow_db
) -> None:
    asked = review_run("dev.customer_sign_off", 2)
    conf = {"for": {"dag_id": CUSTOMER_DAG, "run_id": RUN, "task_id": "dev.customer_sign_off"}, "question": 2}
    airflow_db.pending = {(REVIEW_DAG, asked): ["question"]}
    server_hooks.on_dag_run_failed(dag_run=orm_run(REVIEW_DAG, asked, conf=conf), msg=MANUAL)

    (closed,) = ledger.closed_questions(CUSTOMER_DAG, RUN)
    assert (closed["task_id"], closed["question"], closed["hitl_run_id"]) == (
        "dev.customer_sign_off",
        2,
        asked,
    )
    assert closed["reason"].startswith(f"question run {REVIEW_DAG}/{asked} was stopped by ops at ")
    assert ledger.run_stops(CUSTOMER_DAG, RUN) == []  # the customer run goes on: its task asks again


def test_outcomes_of_tasks_that_ended_by_themselves_stop_nothing(hooks, server_hooks, ledger, airflow_db):
    """The task runner hands the hooks a RuntimeTaskInstance; so does a worker-side failure or skip."""
    ti = runtime_ti(ANALYSIS, state="failed")
    hooks.on_task_instance_failed(previous_state="running", task_instance=ti, error=RuntimeError("x"))
    hooks.on_task_instance_skipped(previous_state="running", task_instance=runtime_ti("dev.sanity_test"))
    # the scheduler failing a task (worker gone) is not "by hand": its questions close, the watch is
    # ended by the task's terminal failure event as before
    airflow_db.open_runs = [review_run("dev.fix_and_retest", 1)]
    server_hooks.on_task_instance_failed(
        previous_state="running", task_instance=orm_ti("dev.fix_and_retest", state="failed"), error="gone"
    )
    assert ledger.run_stops(CUSTOMER_DAG, RUN) == []
    assert airflow_db.failed_runs == [review_run("dev.fix_and_retest", 1)]


def test_questions_that_cannot_be_closed_still_let_the_stop_be_recorded(
    server_hooks, ledger, airflow_db, monkeypatch, caplog
) -> None:
    from managed_upgrade_airflow import compat

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("metadata DB hiccup")

    monkeypatch.setattr(compat, "fail_dag_run", broken)
    airflow_db.open_runs = [review_run(ANALYSIS, 1)]
    with caplog.at_level(logging.ERROR, logger=activity_listener.__name__):
        server_hooks.on_dag_run_failed(dag_run=orm_run(), msg=MANUAL)

    assert [row["how"] for row in ledger.run_stops(CUSTOMER_DAG, RUN)] == ["run_marked_failed"]
    assert ledger.closed_questions(CUSTOMER_DAG, RUN) == []
    assert any("could not close the open questions" in record.getMessage() for record in caplog.records)
