"""Writes the ledger's activity events from Airflow's task-instance listener hooks, so SLA clocks read facts.

Registered by ``plugins/managed_upgrade_plugin.py``. Airflow calls these hooks in every component that
changes a task instance's state:

* the task runner in the worker (``airflow.sdk.execution_time.task_runner``): ``running`` after the
  task is prepared, ``success`` / ``failed`` in ``finalize`` with a ``RuntimeTaskInstance`` whose
  ``state`` is already the outcome (``failed``, or ``up_for_retry`` when a retry follows);
* the scheduler (``TaskInstance.handle_failure``, e.g. a task whose worker died): ``failed`` with the
  ORM task instance, ``state`` set the same way;
* the api-server when a user marks a task instance success or failed (``previous_state=None``).

Events (``managed_upgrade.ledger``), only for activity tasks of ``managed_upgrade__<customer>`` DAGs:

* running: ``ready`` at the latest ``finished`` of the activity's upstream activities (the run's start
  when none) and ``started`` now, both with the try number;
* success: ``finished``; failure: ``failed`` only when no retry follows (``{"terminal": true, "error"}``).

For ``managed_upgrade_review`` (one run per open question of a review loop; conf ``{"for": {dag_id,
run_id, task_id}, "customer_wait", "question"}``): its ``question`` task running with
``customer_wait`` records ``waiting_on_customer`` on the customer run's activity (try number = the
question number), and its success or failure records ``resumed``.

A listener must never break a task: every ledger error is logged and swallowed (the ledger may be
down), other DAGs cost one string comparison, and imports are deferred to the first relevant call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from airflow.listeners import hookimpl

from managed_upgrade.review_runs import QUESTION_TASK_ID, REVIEW_DAG_ID

log = logging.getLogger(__name__)

DAG_ID_PREFIX = "managed_upgrade__"
"""Customer DAG ids (``managed_upgrade.config.DAG_ID_PREFIX``, repeated to keep this import cheap)."""


ERROR_MAX_CHARS = 500


# ------------------------------------------------------------------------------------- hooks


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    _guarded("running", _on_running, task_instance)


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    _guarded("success", _on_success, task_instance)


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    _guarded("failed", _on_failed, task_instance, error)


# ----------------------------------------------------------------------------------- helpers


def _guarded(hook: str, handler: Any, task_instance: Any, *args: Any) -> None:
    dag_id = getattr(task_instance, "dag_id", "") or ""
    if not (dag_id.startswith(DAG_ID_PREFIX) or dag_id == REVIEW_DAG_ID):
        return
    try:
        handler(task_instance, *args)
    except Exception:
        log.exception(
            "activity listener: could not record the %s event of %s/%s/%s in the ledger; the task is "
            "unaffected, the SLA clock misses this event (check the ledger connection)",
            hook,
            dag_id,
            getattr(task_instance, "run_id", "?"),
            getattr(task_instance, "task_id", "?"),
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _activity(task_id: str) -> Any:
    """The process model's activity for ``task_id``, or ``None`` for other tasks."""
    from managed_upgrade.process import load_process_model  # cached after the first call

    return load_process_model().activities_by_key.get(task_id)


def _dag_run(task_instance: Any) -> Any:
    """The task instance's run: the ORM relationship (scheduler, api-server) or the runner's context."""
    dag_run = getattr(task_instance, "dag_run", None)
    if dag_run is None and hasattr(task_instance, "get_template_context"):
        dag_run = task_instance.get_template_context().get("dag_run")  # cached by the task runner
    return dag_run


def _conf(task_instance: Any) -> Mapping[str, Any]:
    conf = getattr(_dag_run(task_instance), "conf", None)
    return conf if isinstance(conf, Mapping) else {}


def _try_number(task_instance: Any) -> int:
    return int(getattr(task_instance, "try_number", None) or 1)


def is_terminal_failure(task_instance: Any) -> bool:
    """Whether a failed task instance stays failed (no retry follows).

    Every caller of ``on_task_instance_failed`` in Airflow 3.3.2 sets the outcome before calling: the
    task runner's ``run()`` sets ``ti.state`` to ``failed`` or ``up_for_retry`` (the server's
    ``should_retry``) before ``finalize()`` calls the hook, ``TaskInstance.handle_failure`` does the same,
    and the api-server's "mark failed" is ``failed``. Without a state, tries left decide.
    """
    state = getattr(task_instance, "state", None)
    if state is not None:
        return str(getattr(state, "value", state)) == "failed"
    max_tries = getattr(task_instance, "max_tries", None)
    return max_tries is None or _try_number(task_instance) > int(max_tries)


def _short_error(error: Any) -> str:
    from managed_upgrade.errors import describe_error

    text = " ".join((describe_error(error) or "unknown error").split())
    return text if len(text) <= ERROR_MAX_CHARS else text[: ERROR_MAX_CHARS - 1] + "…"


def _record(dag_id: str, run_id: str, activity_key: str, event: str, **kwargs: Any) -> bool:
    from managed_upgrade_airflow.ledger_access import open_ledger

    with open_ledger() as ledger:
        return ledger.record_event(dag_id, run_id, activity_key, event, **kwargs)


# ---------------------------------------------------------------------------------- handlers


def _on_running(ti: Any) -> None:
    if ti.dag_id == REVIEW_DAG_ID:
        _review_question_event(ti, "waiting_on_customer")
        return
    activity = _activity(ti.task_id)
    if activity is None:
        return
    from managed_upgrade_airflow.ledger_access import open_ledger

    now = _now()
    try_number = _try_number(ti)
    with open_ledger() as ledger:
        upstream = set(activity.after)
        finished = [
            event["at"]
            for event in ledger.events(ti.dag_id, ti.run_id)
            if event["event"] == "finished" and event["activity_key"] in upstream
        ]
        ready_at = max(finished) if finished else _run_start(ti, now)
        ledger.record_event(ti.dag_id, ti.run_id, activity.key, "ready", at=ready_at, try_number=try_number)
        ledger.record_event(ti.dag_id, ti.run_id, activity.key, "started", at=now, try_number=try_number)


def _run_start(ti: Any, default: datetime) -> datetime:
    started = getattr(_dag_run(ti), "start_date", None)
    return started if isinstance(started, datetime) and started.tzinfo else default


def _on_success(ti: Any) -> None:
    if ti.dag_id == REVIEW_DAG_ID:
        _review_question_event(ti, "resumed")
        return
    if _activity(ti.task_id) is None:
        return
    _record(ti.dag_id, ti.run_id, ti.task_id, "finished", at=_now(), try_number=_try_number(ti))


def _on_failed(ti: Any, error: Any) -> None:
    if ti.dag_id == REVIEW_DAG_ID:
        if is_terminal_failure(ti):
            _review_question_event(ti, "resumed")
        return
    if _activity(ti.task_id) is None or not is_terminal_failure(ti):
        return
    detail = {"terminal": True, "error": _short_error(error)}
    _record(ti.dag_id, ti.run_id, ti.task_id, "failed", at=_now(), try_number=_try_number(ti), detail=detail)


def _review_question_event(ti: Any, event: str) -> None:
    """``waiting_on_customer`` / ``resumed`` on the customer run's activity a review question is for."""
    if ti.task_id != QUESTION_TASK_ID:
        return
    conf = _conf(ti)
    target = conf.get("for")
    if not conf.get("customer_wait") or not isinstance(target, Mapping):
        return
    dag_id, run_id, task_id = (str(target.get(key) or "") for key in ("dag_id", "run_id", "task_id"))
    if not dag_id.startswith(DAG_ID_PREFIX) or not run_id or _activity(task_id) is None:
        log.warning("activity listener: review question for %r is not a customer activity; ignored", target)
        return
    question = int(conf.get("question") or 1)
    _record(dag_id, run_id, task_id, event, at=_now(), try_number=question, detail={"question": question})
