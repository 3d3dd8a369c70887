"""Every Airflow internal the managed upgrade relies on, in one place, with the version and the reason.

Written against **Apache Airflow 3.3.2** (task SDK 1.3.2). Nothing here is part of Airflow's public
interface (``airflow.sdk`` and the REST API are); each function says what it uses, why nothing public
does the job, and what to check on an upgrade. Callers never import these Airflow modules themselves.

Two kinds of callers:

* **the SLA watch trigger** (in the triggerer) asks Airflow for states through the triggerer's process
  supervisor -- the same requests a task's ``context["ti"].get_dagrun_state(...)`` sends. A trigger has
  no ``ti`` of that kind, so the static methods of ``RuntimeTaskInstance`` are called directly, as
  Airflow's own standard-provider triggers do (``DagStateTrigger``, ``WorkflowTrigger`` in
  ``airflow/providers/standard/triggers/external_task.py``). Outside a triggerer (tests, a one-off
  check) there is no supervisor: :class:`AirflowUnreachable`.
* **the activity listener** in the api-server (a user marks a run or task instance) and the scheduler.
  There the listener hooks receive ORM objects attached to the caller's database session, and
  :func:`close_pending_hitl` / :func:`fail_dag_run` change rows in that same session (in a
  :func:`savepoint`), i.e. in the same transaction as the state change that fired the hook (committed
  with it, rolled back with it). Never from a task: tasks cannot use the ORM in Airflow 3
  (``create_session()`` raises there), and these functions are only reached with ORM objects, which a
  task runner never hands to a listener.

Why the listener closes questions at all -- upstream behaviour of 3.3.2: marking a run failed (``PATCH
/api/v2/dags/{dag}/dagRuns/{run}`` with ``state=failed``, ``services/public/dag_run.py
patch_dag_run_state`` -> ``api/common/mark_tasks.py set_dag_run_state_to_failed``) fails the task
instances waiting in ``awaiting_input`` but leaves their ``hitl_detail`` rows unanswered; a task instance
marked failed/success/skipped by hand keeps its pending detail the same way. Upstream issue
apache/airflow#55053 ("Required actions showing in pending even if we have marked tasks as failed or
success") was closed by filtering the UI's per-DAG pending count on the task state
(``core_api/routes/ui/dags.py``); the public list ``GET .../hitlDetails?response_received=false`` still
returns those details in 3.3.2. Worse for us, a stopped run's questions asked through the review DAG
(``managed_upgrade_review``) are other runs, still running, whose task really waits: stopping the
customer run does not touch them at all. The REST API cannot close a detail either: ``PATCH
.../hitlDetails`` accepts only an assigned user (403 even for admin) and only one of the question's
options, and it would *resume* the task with that answer.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

AIRFLOW_VERSION = "3.3.2"
"""The Airflow release every function below was written and verified against."""

CLOSED_BY = {"id": "managed_upgrade", "name": "managed_upgrade (question closed, run stopped)"}
"""``responded_by`` of a question the listener closed: shown as the responder in Required Actions."""

MANUAL_STATE_MESSAGE = "manually set"
"""In 3.3.2 the api-server calls ``on_dag_run_failed``/``on_dag_run_success`` with
``msg="Dag Run's state was manually set to `failed`."`` (``services/public/dag_run.py``); the
scheduler passes ``task_failure``, ``success``, ``all_tasks_deadlocked`` (``models/dagrun.py``)."""


class AirflowUnreachable(RuntimeError):
    """No process supervisor to ask (not running in a triggerer or task runner)."""


# --------------------------------------------------------------------------------- triggerer side


def _runtime_task_instance() -> Any:
    try:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
    except ImportError as error:  # pragma: no cover - the task SDK ships with Airflow 3
        raise AirflowUnreachable(str(error)) from error
    return RuntimeTaskInstance


def _ask(method: str, **query: Any) -> Any:
    """Call ``RuntimeTaskInstance.<method>(**query)``: a request to the process supervisor.

    In 3.3.2 ``SUPERVISOR_COMMS`` (``airflow.sdk.execution_time.task_runner``) is only assigned inside a
    task runner or triggerer; elsewhere the name is unbound (``NameError``) or ``None``
    (``AttributeError``). Both mean nobody can answer here. The triggerer serves ``GetTICount``,
    ``GetTaskStates`` and ``GetDagRunState`` (``jobs/triggerer_job_runner.py``
    ``TriggerRunnerSupervisor._handle_request``); a call from a worker thread is bridged to the
    trigger event loop by ``TriggerCommsDecoder.send``.
    """
    try:
        return getattr(_runtime_task_instance(), method)(**query)
    except (NameError, AttributeError) as error:
        raise AirflowUnreachable(f"no Airflow supervisor to ask ({error})") from error


def count_task_instances(dag_id: str, run_id: str, task_ids: list[str], states: list[str]) -> int:
    """How many of ``task_ids`` in the run are in one of ``states`` (``RuntimeTaskInstance.get_ti_count``)."""
    return int(_ask("get_ti_count", dag_id=dag_id, task_ids=task_ids, run_ids=[run_id], states=states))


def dag_run_state(dag_id: str, run_id: str) -> str:
    """The run's state (``RuntimeTaskInstance.get_dagrun_state``), e.g. ``running`` or ``failed``."""
    state = _ask("get_dagrun_state", dag_id=dag_id, run_id=run_id)
    return str(getattr(state, "value", state))


# ------------------------------------------------------------------------ api-server / scheduler side


def orm_session_of(instance: Any) -> Any | None:
    """The database session an ORM ``TaskInstance``/``DagRun`` handed to a listener belongs to.

    ``None`` for anything else: the task runner's ``RuntimeTaskInstance`` (a pydantic model), a test
    double, or an ORM object detached from its session -- then there is nothing to change in this
    transaction. SQLAlchemy's ``object_session`` is public; that Airflow hands its listeners objects
    attached to the session of the ongoing state change is 3.3.2 behaviour (``patch_dag_run_state``,
    ``_emit_state_listener_hooks``, ``TaskInstance.handle_failure``, ``DagRun.update_state``), and it is
    what makes the changes below atomic with that state change. It also avoids opening a second session
    while the caller's transaction holds its write locks, which on SQLite would wait on itself.
    """
    try:
        from sqlalchemy.orm import object_session
        from sqlalchemy.orm.exc import UnmappedInstanceError
    except ImportError:  # pragma: no cover - SQLAlchemy ships with Airflow
        return None
    try:
        return object_session(instance)
    except UnmappedInstanceError:
        return None


@contextmanager
def savepoint(session: Any) -> Iterator[None]:
    """Run the block in a SAVEPOINT of the caller's transaction (``Session.begin_nested``).

    A listener must never break the state change that fired it: if closing questions fails, only the
    savepoint is rolled back and the user's "mark failed" still commits. Airflow 3.3.2 itself uses
    ``begin_nested`` on every backend it supports (``assets/manager.py``, ``models/backfill.py``).
    """
    with session.begin_nested():
        yield


def run_state_of(task_instance: Any) -> str | None:
    """The state of an ORM task instance's run as its session sees it (``TaskInstance.dag_run``, joined)."""
    dag_run = getattr(task_instance, "dag_run", None)
    state = getattr(dag_run, "state", None)
    return None if state is None else str(getattr(state, "value", state))


def is_manual_state_change(msg: str | None) -> bool:
    """Whether an ``on_dag_run_*`` hook was fired by a user setting the run's state (see the constant)."""
    return MANUAL_STATE_MESSAGE in (msg or "")


@dataclass(frozen=True)
class ClosedQuestion:
    """One HITL detail the listener answered on nobody's behalf: where it was and for which task."""

    dag_id: str
    run_id: str
    task_id: str


def open_run_ids(session: Any, dag_id: str, run_id_suffix: str) -> list[str]:
    """Run ids of ``dag_id`` ending with ``run_id_suffix`` that are queued or running.

    ORM: ``airflow.models.dagrun.DagRun`` (3.3.2 columns ``dag_id``, ``run_id``, ``state``).
    """
    from airflow.models.dagrun import DagRun
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    query = select(DagRun.run_id).where(
        DagRun.dag_id == dag_id,
        DagRun.run_id.endswith(run_id_suffix, autoescape=True),
        DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING]),
    )
    return list(session.scalars(query).all())


def fail_dag_run(session: Any, dag_id: str, run_id: str) -> None:
    """Mark a run failed in ``session``, as ``PATCH .../dagRuns/{run}`` with ``state=failed`` does.

    3.3.2: ``airflow.api.common.mark_tasks.set_dag_run_state_to_failed`` -- the function behind that
    REST call -- fails the run's running, deferred and ``awaiting_input`` task instances, skips the ones
    not started and sets the run failed, on the serialized DAG of the run's version
    (``airflow.models.dagbag.DBDagBag.get_dag_for_run``). Unlike the REST call it fires no listener
    hooks, so closing a run's questions never recurses into the listener.
    """
    from airflow.api.common.mark_tasks import set_dag_run_state_to_failed
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    dag_run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if dag_run is None:
        return
    dag = DBDagBag(load_op_links=False).get_dag_for_run(dag_run, session=session)
    if dag is None:  # the DAG is gone from the metadata DB: its run cannot be resolved; leave it
        return
    set_dag_run_state_to_failed(dag=dag, run_id=run_id, commit=True, session=session)


def close_pending_hitl(
    session: Any,
    *,
    dag_id: str,
    run_id: str,
    reason: str,
    at: datetime,
    task_ids: Collection[str] | None = None,
) -> list[ClosedQuestion]:
    """Answer the run's unanswered HITL details (of ``task_ids``, or all) on nobody's behalf, saying why.

    ORM: ``airflow.models.hitl.HITLDetail`` joined to ``airflow.models.taskinstance.TaskInstance`` on
    ``ti_id`` (3.3.2). A detail counts as answered once ``responded_at`` is set (``response_received``),
    so it leaves Required Actions and a late ``PATCH .../hitlDetails`` gets 409. ``responded_by`` is
    :data:`CLOSED_BY`, ``chosen_options`` empty (no option was chosen) and ``params_input`` says why
    (``{"closed_because": reason}``). The task instance itself is not resumed -- unlike the REST answer,
    which would hand the answer to the task (``handle_event_submit``); callers fail it first.
    """
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    query = (
        select(HITLDetail, TaskInstance.task_id)
        .join(TaskInstance, HITLDetail.ti_id == TaskInstance.id)
        .where(
            TaskInstance.dag_id == dag_id,
            TaskInstance.run_id == run_id,
            HITLDetail.responded_at.is_(None),
        )
    )
    if task_ids is not None:
        query = query.where(TaskInstance.task_id.in_(list(task_ids)))
    closed = []
    for detail, task_id in session.execute(query).all():
        detail.responded_at = at
        detail.responded_by = dict(CLOSED_BY)
        detail.chosen_options = []
        detail.params_input = {"closed_because": reason}
        closed.append(ClosedQuestion(dag_id, run_id, task_id))
    if closed:
        session.flush()
    return closed


def pending_hitl_run_ids(session: Any, dag_id: str, run_id_suffix: str) -> Iterator[str]:
    """Runs of ``dag_id`` ending with ``run_id_suffix`` with an unanswered HITL detail, whatever their state.

    E.g. a review run ops marked failed by hand before this listener existed. ORM as in
    :func:`close_pending_hitl`.
    """
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    query = (
        select(TaskInstance.run_id)
        .join(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
        .where(
            TaskInstance.dag_id == dag_id,
            TaskInstance.run_id.endswith(run_id_suffix, autoescape=True),
            HITLDetail.responded_at.is_(None),
        )
        .distinct()
    )
    yield from session.scalars(query).all()
