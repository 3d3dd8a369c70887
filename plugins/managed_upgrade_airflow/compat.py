"""Every Airflow internal the managed upgrade relies on, in one place, with the version and the reason.

Written against **Apache Airflow 3.3.2** (task SDK 1.3.2, standard provider 1.21, SMTP provider 3.2).
Nothing here is part of Airflow's public interface (``airflow.sdk`` exports, the providers' documented
hooks, operators and triggers, ``AirflowPlugin``, listener ``hookimpl`` and the REST API are). Each use
is an entry of :data:`INTERNALS` -- what it uses, what it works around, why nothing public does the job,
the upstream issue -- and ``tests/unit/test_compat.py`` checks every entry against the installed Airflow,
naming the entry that broke. Nothing else in ``plugins/`` or ``dags/`` imports a non-public Airflow
module (checked by the same tests). On an upgrade: run those tests, then re-read the entries they name.

The callers:

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
* **the review questions** (a task asks by creating a run of the review DAG and waiting deferred:
  :func:`trigger_dag_run_and_wait`; the review DAG's HITL task takes its form from the run's conf:
  :class:`AcceptAnyParamsInput`), **the run deadline reference** (Airflow calls its ``_evaluate_with``:
  :func:`dag_run_conf_and_start`) and **the customer e-mail sender** (:func:`smtp_client_of`).

Why the listener closes questions at all -- upstream behaviour of 3.3.2: marking a run failed (``PATCH
/api/v2/dags/{dag}/dagRuns/{run}`` with ``state=failed``, ``services/public/dag_run.py
patch_dag_run_state`` -> ``api/common/mark_tasks.py set_dag_run_state_to_failed``) fails the task
instances waiting in ``awaiting_input`` but leaves their ``hitl_detail`` rows unanswered; a task instance
marked failed/success/skipped by hand keeps its pending detail the same way. Upstream issue
apache/airflow#55053 ("Required actions showing in pending even if we have marked tasks as failed or
success") was closed by filtering the UI's per-DAG pending count on the task state
(``core_api/routes/ui/dags.py``); the public list ``GET .../hitlDetails?response_received=false`` still
returns those details in 3.3.2. Worse for us, a stopped run's questions asked through the customer's
review DAG (``managed_upgrade_review__<customer_id>``) are other runs, still running, whose task
really waits: stopping the customer run does not touch them at all. The REST API cannot close a
detail either: ``PATCH .../hitlDetails`` accepts only an assigned user (403 even for admin) and only
one of the question's options, and it would *resume* the task with that answer.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import smtplib

AIRFLOW_VERSION = "3.3.2"
"""The Airflow release every entry below was written and verified against."""


@dataclass(frozen=True)
class Internal:
    """One Airflow internal the managed upgrade uses.

    ``symbols`` are ``"module:qualified.name"`` paths that must resolve in the installed Airflow;
    ``functions`` are the functions (or classes) of this module through which the rest of the code
    uses it; ``upstream`` is an apache/airflow issue or PR, or says that none was found.
    """

    name: str
    uses: str
    works_around: str
    why_not_public: str
    upstream: str
    symbols: tuple[str, ...]
    functions: tuple[str, ...]
    airflow_version: str = AIRFLOW_VERSION


INTERNALS: tuple[Internal, ...] = (
    Internal(
        name="supervisor_queries",
        uses="RuntimeTaskInstance.get_ti_count / get_dagrun_state (static methods) and the module global "
        "SUPERVISOR_COMMS of airflow.sdk.execution_time.task_runner, called from a trigger",
        works_around="a trigger has no context['ti'] to ask whether its task still waits or its run ended",
        why_not_public="the task SDK exposes these queries only on the task's own context['ti']; triggers "
        "get no equivalent (Airflow's own DagStateTrigger calls the same static methods)",
        upstream="no upstream issue found (related: apache/airflow#51085, a closed PR for async versions "
        "of these calls for triggers)",
        symbols=(
            "airflow.sdk.execution_time.task_runner:RuntimeTaskInstance.get_ti_count",
            "airflow.sdk.execution_time.task_runner:RuntimeTaskInstance.get_dagrun_state",
        ),
        functions=("count_task_instances", "dag_run_state", "AirflowUnreachable"),
    ),
    Internal(
        name="listener_task_instance",
        uses="what a listener hook receives: an ORM TaskInstance/DagRun attached to the session of the "
        "ongoing state change (TaskInstance.dag_run relationship) in the api-server and scheduler, a "
        "RuntimeTaskInstance (get_template_context()['dag_run']) in the task runner",
        works_around="the hooks get no session and no run; the listener needs the run's conf and state, and "
        "must change rows in the same transaction as the state change",
        why_not_public="the listener spec types the argument as TaskInstance | RuntimeTaskInstance without "
        "promising its attributes or its session",
        upstream="no upstream issue found",
        symbols=(
            "airflow.models.taskinstance:TaskInstance.dag_run",
            "airflow.sdk.execution_time.task_runner:RuntimeTaskInstance.get_template_context",
        ),
        functions=("orm_session_of", "savepoint", "run_state_of", "dag_run_of"),
    ),
    Internal(
        name="manual_state_message",
        uses="the msg text the api-server passes to on_dag_run_failed/on_dag_run_success "
        "(patch_dag_run_state: 'Dag Run's state was manually set to ...')",
        works_around="a run a user stopped must be told from one the scheduler ended",
        why_not_public="the hooks carry no 'who' or 'why' besides this free text",
        upstream="apache/airflow#21252 (closed feature request to tell a user's mark from the scheduler's)",
        symbols=("airflow.api_fastapi.core_api.services.public.dag_run:patch_dag_run_state",),
        functions=("is_manual_state_change", "MANUAL_STATE_MESSAGE"),
    ),
    Internal(
        name="dag_run_orm",
        uses="ORM DagRun (columns dag_id, run_id, state, conf, queued_at, start_date, run_after) and "
        "airflow.utils.state.DagRunState, queried in the caller's session",
        works_around="the listener lists a customer run's open review runs; the deadline reference reads "
        "the conf and start of the run being created",
        why_not_public="both run inside Airflow's own transaction (listener, run creation) where the REST "
        "API would deadlock on the caller's locks or not see the uncommitted run",
        upstream="no upstream issue found",
        symbols=(
            "airflow.models.dagrun:DagRun.dag_id",
            "airflow.models.dagrun:DagRun.run_id",
            "airflow.models.dagrun:DagRun.state",
            "airflow.models.dagrun:DagRun.conf",
            "airflow.models.dagrun:DagRun.queued_at",
            "airflow.models.dagrun:DagRun.start_date",
            "airflow.models.dagrun:DagRun.run_after",
            "airflow.utils.state:DagRunState.QUEUED",
            "airflow.utils.state:DagRunState.RUNNING",
        ),
        functions=("open_run_ids", "dag_run_conf_and_start"),
    ),
    Internal(
        name="fail_dag_run",
        uses="airflow.api.common.mark_tasks.set_dag_run_state_to_failed on the run's serialized DAG "
        "(airflow.models.dagbag.DBDagBag.get_dag_for_run)",
        works_around="a stopped customer run leaves its review runs running (see the module docstring)",
        why_not_public="PATCH .../dagRuns/{run} state=failed does this, but from a listener it would be a "
        "second transaction waiting on the one that fired the hook, and it would fire the hooks again",
        upstream="no upstream issue found (the pending questions it leads to: apache/airflow#55053)",
        symbols=(
            "airflow.api.common.mark_tasks:set_dag_run_state_to_failed",
            "airflow.models.dagbag:DBDagBag.get_dag_for_run",
        ),
        functions=("fail_dag_run",),
    ),
    Internal(
        name="hitl_detail_orm",
        uses="ORM HITLDetail (ti_id, responded_at, responded_by, chosen_options, params_input) joined to "
        "TaskInstance (id, dag_id, run_id, task_id)",
        works_around="questions of a stopped run stay pending in Required Actions (module docstring)",
        why_not_public="PATCH .../hitlDetails answers only as an assigned user with one of the options, "
        "and resumes the task with that answer",
        upstream="apache/airflow#55053 (closed by filtering the UI's pending count only)",
        symbols=(
            "airflow.models.hitl:HITLDetail.ti_id",
            "airflow.models.hitl:HITLDetail.responded_at",
            "airflow.models.hitl:HITLDetail.responded_by",
            "airflow.models.hitl:HITLDetail.chosen_options",
            "airflow.models.hitl:HITLDetail.params_input",
            "airflow.models.taskinstance:TaskInstance.id",
            "airflow.models.taskinstance:TaskInstance.task_id",
        ),
        functions=("close_pending_hitl", "pending_hitl_run_ids", "CLOSED_BY", "ClosedQuestion"),
    ),
    Internal(
        name="dag_run_trigger",
        uses="raising airflow.sdk.exceptions.DagRunTriggerException from a task (the task runner creates "
        "the run and defers the task on DagStateTrigger, resuming execute_complete with its event)",
        works_around="each review question must be a fresh task instance (a run of the review DAG) asked "
        "from inside a running loop task, without a worker slot while it waits",
        why_not_public="TriggerDagRunOperator is the public face, but it is a whole task and cannot be "
        "called from another operator's execute; a task has no public 'trigger a run' call, and "
        "DagRunTriggerException is not exported by airflow.sdk",
        upstream="apache/airflow#47882 (introduced the exception for TriggerDagRunOperator as a stop-gap "
        "until tasks can call the API with their own identity)",
        symbols=(
            "airflow.sdk.exceptions:DagRunTriggerException",
            "airflow.sdk.execution_time.task_runner:_handle_trigger_dag_run",
            "airflow.providers.standard.triggers.external_task:DagStateTrigger",
        ),
        functions=("trigger_dag_run_and_wait", "triggered_run_outcome"),
    ),
    Internal(
        name="hitl_params_input",
        uses="overriding HITLOperator.validate_params_input, which execute_complete calls with the form "
        "input before returning the answer",
        works_around="the review DAG's one task asks a different form every run (from the run's conf); "
        "an input the form's schema rejects would fail the question instead of letting the asking "
        "task refuse it and ask again",
        why_not_public="HITLOperator has no option to keep unvalidated input; the method is public but "
        "that execute_complete routes the input through it is not documented",
        upstream="no upstream issue found (the input check itself came with apache/airflow#57547)",
        symbols=(
            "airflow.providers.standard.operators.hitl:HITLOperator.validate_params_input",
            "airflow.providers.standard.operators.hitl:HITLOperator.execute_complete",
        ),
        functions=("AcceptAnyParamsInput",),
    ),
    Internal(
        name="deadline_reference_evaluate_with",
        uses="the method _evaluate_with(self, *, session, **kwargs) of a custom deadline reference, "
        "called by SerializedReferenceModels.SerializedCustomReference.evaluate_with with the "
        "reference's required_kwargs and an ORM session",
        works_around="the run deadlines depend on the run's conf (deadline, rehearsal speed)",
        why_not_public="it is the documented extension point of airflow.sdk.BaseDeadlineReference, but "
        "private by name and not declared on the SDK class; there is no public alternative",
        upstream="apache/airflow#57222 (documents _evaluate_with as the method custom references implement)",
        symbols=(
            "airflow.serialization.definitions.deadline:SerializedReferenceModels.SerializedCustomReference"
            ".evaluate_with",
            "airflow.serialization.definitions.deadline:SerializedReferenceModels.SerializedBaseDeadlineReference"
            "._evaluate_with",
        ),
        functions=("EVALUATE_WITH", "dag_run_conf_and_start"),
    ),
    Internal(
        name="smtp_client",
        uses="SmtpHook._smtp_client, the smtplib client SmtpHook.get_conn (the hook's __enter__) logs in",
        works_around="SmtpHook.send_email_smtp sends an HTML-only body; customer mail must be "
        "multipart/alternative (text + HTML)",
        why_not_public="the hook exposes no client and no 'send this EmailMessage' method, and "
        "get_conn returns the hook itself",
        upstream="no upstream issue found",
        symbols=("airflow.providers.smtp.hooks.smtp:SmtpHook.get_conn",),
        functions=("smtp_client_of",),
    ),
    Internal(
        name="ssh_remote_job_wrapper",
        uses="airflow.providers.ssh.utils.remote_job: generate_job_id, RemoteJobPaths and "
        "build_posix_wrapper_command, the helpers SSHRemoteJobOperator starts its detached job with",
        works_around="the installer must run detached on the host (it outlives a lost worker) in the job "
        "layout SSHRemoteJobTrigger polls; SSHRemoteJobOperator itself cannot confine the job directory "
        "to the environment's allowed roots first, nor resume an already started job",
        why_not_public="the provider's public faces are the operator and the trigger; the utils module "
        "is not listed among its documented modules",
        upstream="no upstream issue found",
        symbols=(
            "airflow.providers.ssh.utils.remote_job:generate_job_id",
            "airflow.providers.ssh.utils.remote_job:RemoteJobPaths",
            "airflow.providers.ssh.utils.remote_job:build_posix_wrapper_command",
        ),
        functions=("detached_job",),
    ),
    Internal(
        name="fab_security_manager",
        uses="airflow.providers.fab.auth_manager.cli_commands.utils.get_application_builder (the FAB CLI's "
        "app context) and its security manager's find_role/add_role/get_permission/create_permission/"
        "add_permission_to_role/find_user/add_user/update_user",
        works_around="the per-customer roles (from the customer configs) must exist before the "
        "dag-processor syncs a DAG's access_control, i.e. before the api-server serves the FAB REST API",
        why_not_public="the FAB provider's public faces are its CLI (one process per role or user, seconds "
        "each) and its REST API (needs a running api-server); the CLI commands use this same helper",
        upstream="no upstream issue found",
        symbols=(
            "airflow.providers.fab.auth_manager.cli_commands.utils:get_application_builder",
            "airflow.providers.fab.auth_manager.security_manager.override:"
            "FabAirflowSecurityManagerOverride.add_role",
            "airflow.providers.fab.auth_manager.security_manager.override:"
            "FabAirflowSecurityManagerOverride.add_permission_to_role",
            "airflow.providers.fab.auth_manager.security_manager.override:"
            "FabAirflowSecurityManagerOverride.add_user",
        ),
        functions=("fab_security_manager",),
    ),
    Internal(
        name="plugin_app_auth",
        uses="the auth manager of the api-server (airflow.api_fastapi.app.get_auth_manager), its "
        "get_user_from_token / filter_authorized_dag_ids / is_authorized_dag with DagDetails, and the "
        "UI's JWT cookie name COOKIE_NAME_JWT_TOKEN",
        works_around="Airflow mounts a plugin's FastAPI app without any authentication: the managers' "
        "views must identify the caller from the UI's token and show only the DAGs they may read",
        why_not_public="the core API's get_user/requires_access_dag dependencies are api-server internals; "
        "the auth manager interface is documented for auth manager authors, not exported to plugins",
        upstream="apache/airflow#72655 (documents that plugin apps must authenticate themselves)",
        symbols=(
            "airflow.api_fastapi.app:get_auth_manager",
            "airflow.api_fastapi.auth.managers.base_auth_manager:COOKIE_NAME_JWT_TOKEN",
            "airflow.api_fastapi.auth.managers.base_auth_manager:BaseAuthManager.get_user_from_token",
            "airflow.api_fastapi.auth.managers.base_auth_manager:BaseAuthManager.filter_authorized_dag_ids",
            "airflow.api_fastapi.auth.managers.base_auth_manager:BaseAuthManager.is_authorized_dag",
            "airflow.api_fastapi.auth.managers.models.resource_details:DagDetails",
        ),
        functions=("JWT_COOKIE", "auth_manager", "user_from_token", "readable_dag_ids", "can_read_dag"),
    ),
    Internal(
        name="views_metadata_reads",
        uses="ORM DagModel (dag_id, is_stale) and HITLDetail joined to TaskInstance (dag_id, run_id, "
        "task_id, map_index) and DagRun (conf), read in airflow.utils.session.create_session",
        works_around="the portfolio lists every customer DAG (also those never run) and 'my open actions' "
        "lists the unanswered questions with the conf of the run holding them (a review run names its "
        "customer run there)",
        why_not_public="the REST API serves both, but a plugin app has no in-process client for it and "
        "calling the api-server over HTTP from itself needs its external address; the routes behind "
        "GET /api/v2/dags and .../hitlDetails run these same queries",
        upstream="no upstream issue found",
        symbols=(
            "airflow.models.dag:DagModel.dag_id",
            "airflow.models.dag:DagModel.is_stale",
            "airflow.models.hitl:HITLDetail.subject",
            "airflow.models.hitl:HITLDetail.assignees",
            "airflow.models.hitl:HITLDetail.created_at",
            "airflow.models.taskinstance:TaskInstance.map_index",
            "airflow.utils.session:create_session",
        ),
        functions=("dag_ids_with_prefix", "pending_questions", "PendingQuestion"),
    ),
    Internal(
        name="fab_auth_manager_hitl_users",
        uses="subclassing airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager to override "
        "BaseAuthManager.is_authorized_hitl_task(assigned_users=..., user=...)",
        works_around="Airflow 3.3.2 checks a HITL answer with user.get_id() in assigned_users; a FAB user's "
        "id is its numeric database id, while the gates assign users by name (the configs know names, "
        "never FAB's ids), so an assigned consultant got 403",
        why_not_public="the method is the documented hook for auth managers, but the FAB auth manager "
        "class lives in the provider's auth_manager package, not a documented extension point",
        upstream="no upstream issue found",
        symbols=(
            "airflow.providers.fab.auth_manager.fab_auth_manager:FabAuthManager",
            "airflow.api_fastapi.auth.managers.base_auth_manager:BaseAuthManager.is_authorized_hitl_task",
        ),
        functions=("fab_auth_manager_base",),
    ),
)
"""The registry ``tests/unit/test_compat.py`` iterates: one entry per internal, by name."""

CLOSED_BY = {"id": "managed_upgrade", "name": "managed_upgrade (question closed, run stopped)"}
"""``responded_by`` of a question the listener closed: shown as the responder in Required Actions."""

MANUAL_STATE_MESSAGE = "manually set"
"""In 3.3.2 the api-server calls ``on_dag_run_failed``/``on_dag_run_success`` with
``msg="Dag Run's state was manually set to `failed`."`` (``services/public/dag_run.py``); the
scheduler passes ``task_failure``, ``success``, ``all_tasks_deadlocked`` (``models/dagrun.py``)."""

EVALUATE_WITH = "_evaluate_with"
"""The method Airflow calls on a custom deadline reference (entry ``deadline_reference_evaluate_with``).

``ManagedUpgradeDeadline`` must define a method of this very name, keyword-only ``session`` plus the
reference's ``required_kwargs``: in 3.3.2 ``SerializedCustomReference.evaluate_with`` (in
``airflow/serialization/definitions/deadline.py``) calls ``inner_ref._evaluate_with(session=session,
**filtered_kwargs)`` once while the run is created, and adds the alert's interval to the result (no
alert when it returns ``None``)."""


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


def dag_run_of(task_instance: Any) -> Any | None:
    """The run of a task instance a listener hook received, or ``None``.

    An ORM ``TaskInstance`` (scheduler, api-server) has the ``dag_run`` relationship; the task runner's
    ``RuntimeTaskInstance`` has none, but its ``get_template_context()`` (built once and cached by the
    runner in 3.3.2) holds the run as ``dag_run``, with ``conf`` and ``start_date``.
    """
    dag_run = getattr(task_instance, "dag_run", None)
    if dag_run is None and hasattr(task_instance, "get_template_context"):
        dag_run = task_instance.get_template_context().get("dag_run")
    return dag_run


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


@dataclass(frozen=True)
class RunConfAndStart:
    """What a run deadline is computed from: the run's conf and when it started (``None``: not yet)."""

    conf: Mapping[str, Any] | None
    started: Any


def dag_run_conf_and_start(session: Any, dag_id: str, run_id: str) -> RunConfAndStart | None:
    """The conf and start of run ``dag_id``/``run_id`` in ``session``, ``None`` if there is no such run.

    Called from a deadline reference's ``_evaluate_with`` (see :data:`EVALUATE_WITH`) while Airflow
    creates the run, in that transaction. The start is the first of ``queued_at``, ``start_date``,
    ``run_after`` that is set (3.3.2 columns of ``airflow.models.dagrun.DagRun``): a new run is queued,
    a run created by the scheduler may already carry its start.
    """
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    row = session.execute(
        select(DagRun.conf, DagRun.queued_at, DagRun.start_date, DagRun.run_after).where(
            DagRun.dag_id == dag_id, DagRun.run_id == run_id
        )
    ).one_or_none()
    if row is None:
        return None
    return RunConfAndStart(conf=row.conf, started=row.queued_at or row.start_date or row.run_after)


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


# ------------------------------------------------------------------------------------- task side


def trigger_dag_run_and_wait(
    *, dag_id: str, run_id: str, conf: dict[str, Any], note: str | None, poll_seconds: int
) -> Exception:
    """What a task raises to create run ``run_id`` of ``dag_id`` and wait for it, deferred.

    ``TriggerDagRunOperator``'s mechanism in 3.3.2: the task runner catches
    ``airflow.sdk.exceptions.DagRunTriggerException`` (``task_runner._handle_trigger_dag_run``), asks the
    API server to create the run -- reset (cleared) if it already exists, so asking the same question
    again re-opens it -- and defers the task on ``DagStateTrigger`` until the run is ``success`` or
    ``failed``. The task resumes in ``execute_complete`` with the trigger's event
    (:func:`triggered_run_outcome`).
    """
    from airflow.sdk.exceptions import DagRunTriggerException

    return DagRunTriggerException(
        trigger_dag_id=dag_id,
        dag_run_id=run_id,
        conf=conf,
        reset_dag_run=True,
        skip_when_already_exists=False,
        wait_for_completion=True,
        allowed_states=["success"],
        failed_states=["failed"],
        poke_interval=poll_seconds,
        deferrable=True,
        note=note,
    )


def triggered_run_outcome(event: Any) -> tuple[str, str | None]:
    """``(run id, run state)`` from the event a task resumes with after :func:`trigger_dag_run_and_wait`.

    3.3.2's ``DagStateTrigger`` fires ``(classpath, data)``: its serialized kwargs (``run_ids``, ...)
    plus ``{run_id: state}`` for each run; a test may hand the ``data`` alone.
    """
    _, data = event if isinstance(event, (tuple, list)) else (None, event)
    (run_id,) = data["run_ids"]
    state = data.get(run_id)
    return run_id, None if state is None else str(getattr(state, "value", state))


class AcceptAnyParamsInput:
    """Mixin (listed before ``HITLOperator``) for a gate whose form is set at run time: keeps any input.

    In 3.3.2 (standard provider 1.21) ``HITLOperator.execute_complete`` passes the submitted form to
    ``validate_params_input``, which rejects keys the operator's ``params`` do not have and writes each
    value into ``params`` (schema check: ``ParamValidationError`` fails the task). A gate that judges
    the input itself, and asks again when it cannot use it, must not fail on it; the answer still
    carries ``params_input`` unchanged.
    """

    def validate_params_input(self, params_input: Mapping[str, Any]) -> None:
        """Keep the input as submitted: the task that asked the question judges it."""


def smtp_client_of(hook: Any) -> smtplib.SMTP | smtplib.SMTP_SSL | None:
    """The logged-in ``smtplib`` client of an entered ``SmtpHook``, ``None`` if it is not connected.

    3.3.2 (SMTP provider 3.2): ``SmtpHook.get_conn`` -- what ``with SmtpHook(...) as hook`` calls --
    builds, STARTTLS-upgrades and logs in ``hook._smtp_client`` (with the connection's retries) and
    returns the hook; ``__exit__`` closes it and sets it back to ``None``.
    """
    return hook._smtp_client


@dataclass(frozen=True)
class DetachedJob:
    """Where a detached job keeps its files on the host, and the shell command that starts it."""

    job_id: str
    job_dir: str
    log_file: str
    exit_code_file: str
    start_command: str


def detached_job(
    *, dag_id: str, task_id: str, run_id: str, try_number: int, base_dir: str, command: str
) -> DetachedJob:
    """A job as ``SSHRemoteJobOperator`` starts it (SSH provider 7.0): its id, files and wrapper command.

    ``generate_job_id`` names the job after the task instance and try; ``RemoteJobPaths`` lays out
    ``<base_dir>/<job_id>/`` with ``stdout.log`` and ``exit_code``; ``build_posix_wrapper_command``
    returns a ``bash -c`` script that starts ``command`` with ``nohup`` and prints the job id. The
    provider's ``SSHRemoteJobTrigger`` polls exactly that layout.
    """
    from airflow.providers.ssh.utils.remote_job import (
        RemoteJobPaths,
        build_posix_wrapper_command,
        generate_job_id,
    )

    job_id = generate_job_id(dag_id, task_id, run_id, try_number)
    paths = RemoteJobPaths(job_id=job_id, remote_os="posix", base_dir=base_dir)
    return DetachedJob(
        job_id=job_id,
        job_dir=paths.job_dir,
        log_file=paths.log_file,
        exit_code_file=paths.exit_code_file,
        start_command=build_posix_wrapper_command(command=command, paths=paths),
    )


@contextmanager
def fab_security_manager() -> Iterator[Any]:
    """The FAB auth manager's security manager in an app context, as the FAB CLI commands get it.

    FAB provider 3.10.2: ``get_application_builder()`` builds a Flask app on the metadata database
    (creating FAB's built-in roles and resources on first use) and yields its ``AirflowAppBuilder``;
    ``.sm`` is the ``FabAirflowSecurityManagerOverride`` whose methods commit as they go.
    """
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        yield appbuilder.sm


# ------------------------------------------------------------------- api-server side: plugin views

JWT_COOKIE = "_token"
"""The cookie the UI keeps its JWT in (3.3.2 ``base_auth_manager.COOKIE_NAME_JWT_TOKEN``; entry
``plugin_app_auth`` checks the two agree)."""


def auth_manager() -> Any:
    """The api-server's auth manager (``airflow.api_fastapi.app.get_auth_manager``), set up at its start."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


async def user_from_token(manager: Any, token: str) -> Any | None:
    """The user a UI/API JWT stands for, ``None`` if it is invalid, expired or revoked.

    3.3.2: ``BaseAuthManager.get_user_from_token`` validates signature, audience and expiry (the
    api-server's signing settings), checks the revoked-token table and deserializes the user; it
    raises ``jwt.InvalidTokenError`` (``ExpiredSignatureError`` is one) for any bad token. This is what
    the core API's ``get_user`` dependency does with a Bearer header or the ``_token`` cookie.
    """
    from jwt import InvalidTokenError

    try:
        return await manager.get_user_from_token(token)
    except InvalidTokenError:
        return None


def readable_dag_ids(manager: Any, user: Any, dag_ids: Collection[str]) -> set[str]:
    """Those of ``dag_ids`` ``user`` may read (``filter_authorized_dag_ids``, method GET), as the
    REST API's DAG list filters them; FAB answers from the user's roles in one pass."""
    return set(manager.filter_authorized_dag_ids(dag_ids=set(dag_ids), user=user, method="GET"))


def can_read_dag(manager: Any, user: Any, dag_id: str) -> bool:
    """Whether ``user`` may read DAG ``dag_id`` (``is_authorized_dag(method="GET", details=DagDetails)``)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    return bool(manager.is_authorized_dag(method="GET", details=DagDetails(id=dag_id), user=user))


def dag_ids_with_prefix(prefix: str) -> set[str]:
    """Ids of the DAGs in the metadata DB starting with ``prefix`` that are not stale (3.3.2 ``DagModel``)."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(DagModel.dag_id).where(
            DagModel.dag_id.startswith(prefix, autoescape=True), DagModel.is_stale.is_(False)
        )
        return set(session.scalars(query).all())


@dataclass(frozen=True)
class PendingQuestion:
    """An unanswered HITL detail with where it is and the conf of its run."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    subject: str
    assignee_ids: tuple[str, ...]
    created_at: datetime
    run_conf: Mapping[str, Any] | None


def pending_questions(dag_id_prefixes: Collection[str]) -> list[PendingQuestion]:
    """Unanswered HITL details of DAGs whose id starts with one of ``dag_id_prefixes``, oldest first.

    ORM (3.3.2): ``HITLDetail`` (``responded_at`` NULL = pending; ``assignees`` a list of ``{"id",
    "name"}``) joined to ``TaskInstance`` on ``ti_id`` and to ``DagRun`` on ``(dag_id, run_id)``.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import and_, or_, select

    query = (
        select(
            TaskInstance.dag_id,
            TaskInstance.run_id,
            TaskInstance.task_id,
            TaskInstance.map_index,
            HITLDetail.subject,
            HITLDetail.assignees,
            HITLDetail.created_at,
            DagRun.conf,
        )
        .join(TaskInstance, HITLDetail.ti_id == TaskInstance.id)
        .join(DagRun, and_(DagRun.dag_id == TaskInstance.dag_id, DagRun.run_id == TaskInstance.run_id))
        .where(
            HITLDetail.responded_at.is_(None),
            or_(*(TaskInstance.dag_id.startswith(prefix, autoescape=True) for prefix in dag_id_prefixes)),
        )
        .order_by(HITLDetail.created_at)
    )
    with create_session() as session:
        rows = session.execute(query).all()
    return [
        PendingQuestion(
            dag_id=row.dag_id,
            run_id=row.run_id,
            task_id=row.task_id,
            map_index=int(row.map_index),
            subject=row.subject,
            assignee_ids=tuple(
                str(user.get("id")) for user in (row.assignees or []) if isinstance(user, dict)
            ),
            created_at=row.created_at,
            run_conf=row.conf,
        )
        for row in rows
    ]


def fab_auth_manager_base() -> type:
    """The FAB provider's auth manager class, for ``managed_upgrade_airflow.fab_auth_manager`` to extend.

    Imported only there (the components load the configured auth manager), never from the listener or
    the tasks: the FAB provider is heavy to import.
    """
    from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager

    return FabAuthManager
