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

For a customer's review DAG ``managed_upgrade_review__<customer_id>`` (one run per open question of
a review loop; conf ``{"for": {dag_id, run_id, task_id}, "customer_wait", "question"}``, the customer
run always one of the same customer): its ``question`` task running with
``customer_wait`` records ``waiting_on_customer`` on the customer run's activity (try number = the
question number), and its success or failure records ``resumed``.

**A stopped run is quiet.** When a user stops a customer run or one of its tasks -- the api-server
hands the hooks its ORM objects, ``previous_state=None`` -- the listener records why in the ledger
(``run_stops``) and closes the questions the run leaves open in Airflow:

* ``on_dag_run_failed`` / ``on_dag_run_success`` set by hand (``PATCH .../dagRuns/{run}``): a stop
  ``run_marked_failed`` / ``run_marked_success`` saying "run <dag>/<run> was stopped by ops at <time>";
  a run the scheduler fails records ``run_failed``;
* a task instance marked ``failed`` or ``skipped`` by hand (``task_marked_failed`` /
  ``task_marked_skipped``: the run cannot finish its process any more), or the ``sla_watch`` task marked
  ``success`` (``watch_marked_success``); a task marked ``success`` otherwise stops nothing but its own
  questions.

The run's SLA watch reads those stops before every alert and ends without sending anything more. Open
questions are the run's unanswered HITL details: its own gates' and those of its runs of the review DAG
(which are failed, as a ``PATCH state=failed`` would). Each is answered on nobody's behalf with the
reason (Airflow 3.3.2 leaves them pending in Required Actions; see ``managed_upgrade_airflow.compat``)
and recorded in ``closed_questions``; the same happens to a review run stopped by hand. These changes
join the transaction of the state change that fired the hook (a savepoint of it), so they commit with
it. A cleared task or run needs nothing: Airflow cancels its triggers (the SLA watch ends quietly) and
a review task asking again re-opens its question's run.

A listener must never break a task: every ledger error is logged and swallowed, other DAGs cost one
string comparison, and imports are deferred to the first relevant call. A ledger that restarts loses
no event: a new connection waits out the restart, and an event handler whose connection broke under
it is called again (its writes are idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from airflow.listeners import hookimpl

from managed_upgrade.dag_ids import DAG_ID_PREFIX, is_review_dag_id, review_dag_id_of
from managed_upgrade.review.review_runs import QUESTION_TASK_ID

log = logging.getLogger(__name__)


ERROR_MAX_CHARS = 500


# ------------------------------------------------------------------------------------- hooks


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    _guarded("running", _on_running, task_instance)


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    _guarded("success", _on_success, task_instance)
    _guarded("stop (success)", _on_task_stopped, task_instance, "success", previous_state)


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    _guarded("failed", _on_failed, task_instance, error)
    _guarded("stop (failed)", _on_task_stopped, task_instance, "failed", previous_state, error)


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    _guarded("stop (skipped)", _on_task_stopped, task_instance, "skipped", previous_state)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    _guarded("run failed", _on_run_ended, dag_run, "failed", msg)


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    _guarded("run success", _on_run_ended, dag_run, "success", msg)


# ----------------------------------------------------------------------------------- helpers


def _guarded(hook: str, handler: Any, instance: Any, *args: Any) -> None:
    """Call ``handler(instance, *args)`` for our DAGs only, logging (never raising) what goes wrong."""
    dag_id = getattr(instance, "dag_id", "") or ""
    if not (dag_id.startswith(DAG_ID_PREFIX) or is_review_dag_id(dag_id)):
        return
    try:
        if handler in _IDEMPOTENT_HANDLERS:
            from managed_upgrade_airflow.ledger_access import again_after_outage

            again_after_outage(handler, instance, *args)
        else:
            handler(instance, *args)
    except Exception:
        log.exception(
            "activity listener: could not record the %s event of %s/%s/%s in the ledger; the task is "
            "unaffected, the SLA clock misses this event (check the ledger connection)",
            hook,
            dag_id,
            getattr(instance, "run_id", "?"),
            getattr(instance, "task_id", "-"),
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _activity(task_id: str) -> Any:
    """The process model's activity for ``task_id``, or ``None`` for other tasks."""
    from managed_upgrade.process.model import load_process_model  # cached after the first call

    return load_process_model().activities_by_key.get(task_id)


def _dag_run(task_instance: Any) -> Any:
    """The task instance's run: the ORM relationship (scheduler, api-server) or the runner's context."""
    from managed_upgrade_airflow import compat

    return compat.dag_run_of(task_instance)


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
    if is_review_dag_id(ti.dag_id):
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
    if is_review_dag_id(ti.dag_id):
        _review_question_event(ti, "resumed")
        return
    if _activity(ti.task_id) is None:
        return
    _record(ti.dag_id, ti.run_id, ti.task_id, "finished", at=_now(), try_number=_try_number(ti))


def _on_failed(ti: Any, error: Any) -> None:
    if is_review_dag_id(ti.dag_id):
        if is_terminal_failure(ti):
            _review_question_event(ti, "resumed")
        return
    if _activity(ti.task_id) is None or not is_terminal_failure(ti):
        return
    detail = {"terminal": True, "error": _short_error(error)}
    _record(ti.dag_id, ti.run_id, ti.task_id, "failed", at=_now(), try_number=_try_number(ti), detail=detail)


_IDEMPOTENT_HANDLERS = frozenset({_on_running, _on_success, _on_failed})
"""Handlers that only record activity events (``ON CONFLICT DO NOTHING``): safe to call again."""


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
    if review_dag_id_of(dag_id) != ti.dag_id:
        log.warning(
            "activity listener: %s holds a question for another customer's %r; ignored", ti.dag_id, target
        )
        return
    question = int(conf.get("question") or 1)
    _record(dag_id, run_id, task_id, event, at=_now(), try_number=question, detail={"question": question})


# ------------------------------------------------------------------------- stopped runs and tasks

Closed = tuple[str, str, str, int, str, str, str]
"""A closed question: the customer run's ``(dag_id, run_id, task_id)`` that asked, the question number
(0: the task's own gate) and where Airflow held it, ``(hitl_dag_id, hitl_run_id, hitl_task_id)``."""


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _on_run_ended(dag_run: Any, state: str, msg: str | None) -> None:
    """A run failed or was set to success: record the stop, close the questions it leaves open."""
    from managed_upgrade_airflow import compat

    manual = compat.is_manual_state_change(msg)
    if state == "success" and not manual:
        return  # a run that finished its work stopped nothing
    dag_id, run_id, at = dag_run.dag_id, dag_run.run_id, _now()
    session = compat.orm_session_of(dag_run)
    if is_review_dag_id(dag_id):
        if session is not None:
            how = f"ended {state} ({msg})"
            if manual:
                how = "was stopped by ops" if state == "failed" else "was marked success by ops"
            reason = f"question run {dag_id}/{run_id} {how} at {_when(at)}"
            conf = dag_run.conf if isinstance(dag_run.conf, Mapping) else {}
            _close_review_questions(session, dag_id, run_id, conf, reason, at)
        return
    if manual:
        how = "run_marked_failed" if state == "failed" else "run_marked_success"
        verb = "was stopped by ops" if state == "failed" else "was marked success by ops"
        reason = f"run {dag_id}/{run_id} {verb} at {_when(at)}"
    else:
        how, reason = "run_failed", f"run {dag_id}/{run_id} failed at {_when(at)} ({msg})"
    closed = _closing(session, dag_id, run_id, reason, at) if session is not None else []
    from managed_upgrade_airflow.ledger_access import open_ledger

    with open_ledger() as ledger:
        ledger.record_run_stop(dag_id, run_id, how=how, reason=reason, at=at)
        _record_closed(ledger, closed, reason, at)
    log.info("%s; SLA watch ends, %d open question(s) closed", reason, len(closed))


def _on_task_stopped(ti: Any, how: str, previous_state: Any, error: Any = None) -> None:
    """A task instance was marked failed/success/skipped outside its own run (api-server, scheduler).

    The task runner's own outcomes reach the hooks with a ``RuntimeTaskInstance``: a task that ended
    by itself left no question open (it waited for its answer), so those are not stops.
    """
    from managed_upgrade_airflow import compat

    session = compat.orm_session_of(ti)
    if session is None or (how == "failed" and not is_terminal_failure(ti)):
        return
    if compat.run_state_of(ti) in ("failed", "success"):
        return  # the run itself is being stopped: on_dag_run_failed/success follows and closes all
    by_hand, at = previous_state is None, _now()
    dag_id, run_id, task_id = ti.dag_id, ti.run_id, ti.task_id
    marked = f"was marked {how} by hand" if by_hand else f"{how}"
    if is_review_dag_id(dag_id):
        if task_id == QUESTION_TASK_ID:
            reason = f"question run {dag_id}/{run_id} {marked} at {_when(at)}"
            _close_review_questions(session, dag_id, run_id, _conf(ti), reason, at)
        return
    reason = f"task {task_id} of run {dag_id}/{run_id} {marked} at {_when(at)}"
    if error is not None and not by_hand:
        reason += f": {_short_error(error)}"
    stop = _stop_kind(task_id, how) if by_hand else None
    closed = _closing(session, dag_id, run_id, reason, at, task_id=task_id)
    if stop is None and not closed:
        return
    from managed_upgrade_airflow.ledger_access import open_ledger

    with open_ledger() as ledger:
        if stop is not None:
            ledger.record_run_stop(dag_id, run_id, how=stop, reason=reason, at=at, task_id=task_id)
        _record_closed(ledger, closed, reason, at)
    log.info("%s; %s, %d open question(s) closed", reason, "SLA watch ends" if stop else "", len(closed))


def _stop_kind(task_id: str, how: str) -> str | None:
    """The ``run_stops.how`` a task marked ``how`` by hand means, or None if the run's clock goes on."""
    from managed_upgrade_airflow.operators.sla_watch import SLA_WATCH_TASK_ID

    if how in ("failed", "skipped"):  # downstream of it nothing runs: the process cannot finish
        return f"task_marked_{how}"
    return "watch_marked_success" if task_id == SLA_WATCH_TASK_ID else None


def _closing(
    session: Any, dag_id: str, run_id: str, reason: str, at: datetime, *, task_id: str | None = None
) -> list[Closed]:
    """:func:`_close_run_questions`, whose failure (rolled back to its savepoint) still lets the stop be
    recorded: the SLA watch must end even if the questions stay open."""
    try:
        return _close_run_questions(session, dag_id, run_id, reason, at, task_id=task_id)
    except Exception:
        log.exception(
            "activity listener: could not close the open questions of %s/%s%s; they stay in Required "
            "Actions (the state change itself is unaffected)",
            dag_id,
            run_id,
            f" {task_id}" if task_id else "",
        )
        return []


def _close_run_questions(
    session: Any, dag_id: str, run_id: str, reason: str, at: datetime, *, task_id: str | None = None
) -> list[Closed]:
    """Close the open questions of a customer run (or of one of its tasks): its gates' and review runs'."""
    from managed_upgrade.review.review_runs import parse_review_run_id, review_run_suffix
    from managed_upgrade_airflow import compat

    suffix = review_run_suffix(dag_id, run_id)
    review_dag_id = review_dag_id_of(dag_id) or ""
    closed: list[Closed] = []
    with compat.savepoint(session):
        gates = compat.close_pending_hitl(
            session,
            dag_id=dag_id,
            run_id=run_id,
            reason=reason,
            at=at,
            task_ids=None if task_id is None else [task_id],
        )
        closed += [
            (dag_id, run_id, gate.task_id, 0, gate.dag_id, gate.run_id, gate.task_id) for gate in gates
        ]
        still_open = set(compat.open_run_ids(session, review_dag_id, suffix))
        review_runs = still_open | set(compat.pending_hitl_run_ids(session, review_dag_id, suffix))
        for review_run_id in sorted(review_runs):
            asked = parse_review_run_id(review_run_id, dag_id, run_id)
            if asked is None or (task_id is not None and asked[0] != task_id):
                continue
            if review_run_id in still_open:  # as PATCH state=failed would: its question task fails too
                compat.fail_dag_run(session, review_dag_id, review_run_id)
            for question in compat.close_pending_hitl(
                session, dag_id=review_dag_id, run_id=review_run_id, reason=reason, at=at
            ):
                closed.append((dag_id, run_id, *asked, question.dag_id, question.run_id, question.task_id))
    return closed


def _close_review_questions(
    session: Any, review_dag_id: str, review_run_id: str, conf: Mapping[str, Any], reason: str, at: datetime
) -> None:
    """Close the question of a review run stopped on its own; record it under the customer run it asks for."""
    from managed_upgrade_airflow import compat

    with compat.savepoint(session):
        questions = compat.close_pending_hitl(
            session, dag_id=review_dag_id, run_id=review_run_id, reason=reason, at=at
        )
    target = conf.get("for")
    if not questions or not isinstance(target, Mapping):
        return
    dag_id, run_id, task_id = (str(target.get(key) or "") for key in ("dag_id", "run_id", "task_id"))
    number = int(conf.get("question") or 0)
    closed = [(dag_id, run_id, task_id, number, q.dag_id, q.run_id, q.task_id) for q in questions]
    from managed_upgrade_airflow.ledger_access import open_ledger

    with open_ledger() as ledger:
        _record_closed(ledger, closed, reason, at)
    log.info("%s; %d open question(s) closed", reason, len(closed))


def _record_closed(ledger: Any, closed: list[Closed], reason: str, at: datetime) -> None:
    for dag_id, run_id, task_id, question, hitl_dag_id, hitl_run_id, hitl_task_id in closed:
        ledger.record_closed_question(
            dag_id,
            run_id,
            task_id,
            question=question,
            hitl_dag_id=hitl_dag_id,
            hitl_run_id=hitl_run_id,
            hitl_task_id=hitl_task_id,
            closed_at=at,
            reason=reason,
        )
