"""Watches a run's SLA clock in the triggerer, so a miss or a customer reminder goes out the moment it is due.

One :class:`SlaWatchTrigger` per run (deferred to by
:class:`~managed_upgrade_airflow.operators.sla_watch.SlaWatchOperator`) loops until the run is over:

1. read the run's activity events from the ledger and replay them
   (:func:`managed_upgrade.sla.clock.sla_state`);
2. for every miss and reminder that has fallen due, claim it in the ledger and, only when this claim
   won, send it (:func:`~managed_upgrade_airflow.notifiers.alert_delivery.send_alert`) and mark it
   notified -- so retries, restarts and a second watcher never send it twice;
3. sleep until the next instant something can fall due, or the poll interval if that is sooner (new
   events may bring a due time forward), so an alert leaves within a poll of its due time at worst and
   usually within milliseconds.

It re-sends alerts claimed but never marked notified (a watcher that died between claim and send),
once the claim is older than :data:`CLAIM_LEASE_SECONDS`: a younger claim may still be being sent by
another watcher of the same run (a trigger Airflow runs twice, or the old instance of a restarted one).
It ends, yielding one event with the run's misses and reminders, once the process's final activity
finished or an activity failed for good (the listener's terminal ``failed``), or -- should such an
event be lost -- once Airflow has the final task in an ended state (asked every minute; every few
seconds in rehearsal).

**A stopped run is quiet.** Before every alert it would send (and at every poll) the watcher asks
whether the run was stopped since it began: a stop the activity listener recorded in the ledger
(ops marked the run failed or success, a task failed or skipped by hand, this watch task marked by
hand; ``Ledger.run_stop_since``), or, through the triggerer (``managed_upgrade_airflow.compat``),
Airflow having the run failed or success or this watch's task no longer deferred. A stopped watcher
claims and sends nothing more -- each claim is also refused by the ledger itself once a stop is
recorded, and a claim it won just before the stop is withdrawn unsent -- and ends with outcome
``stopped``. When Airflow cancels the trigger (its task was marked, cleared, or its run stopped;
Airflow notices within about a second), the watcher halts at once: a send in progress in its worker
thread finishes, nothing after it starts, and its ledger connection goes back once that thread is done.

Blocking work (psycopg2, SMTP, webhook, parsing the config) runs in ``asyncio.to_thread``, one call at
a time per watcher (a lock), so a cancelled watcher never closes a connection under a running query;
the event loop only does clock arithmetic. Each call borrows a ledger connection from the triggerer's
shared pool (``ledger_access.shared_ledgers``, a few connections) and gives it back when it returns,
so hundreds of parked runs hold a handful of PostgreSQL connections, not one each. A broken
connection is dropped and a fresh one opened at the next poll; a delivery that failed on every channel
stays unnotified and is retried.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from managed_upgrade.ledger import Ledger
    from managed_upgrade.sla.alerts import Alert
    from managed_upgrade.sla.clock import SlaState

log = logging.getLogger(__name__)

CLASS_PATH = f"{__name__}.SlaWatchTrigger"
REAL_POLL_SECONDS = 30.0
"""Poll on a real calendar: budgets are days long, 30 s is prompt enough to see a new unit start."""
REHEARSAL_POLL_SECONDS = 1.0
"""Poll in rehearsal, at most; shorter when a business day is shorter than 4 s."""
REAL_AIRFLOW_CHECK_SECONDS = 60.0
"""On a real calendar, how often Airflow is asked whether the run's final task ended."""
ENDED_STATES = ["success", "failed", "skipped", "upstream_failed", "removed"]
"""Task states after which the final task will not run (again) without someone clearing it."""
CLAIM_LEASE_SECONDS = 120.0
"""How long a claimed alert is left to its claimer before another watcher re-sends it; longer than a
delivery can take (SMTP timeout, three webhook attempts of 10 s), so an alert in flight is not sent twice."""
WAKE_MARGIN_SECONDS = 0.001
"""Sleep this much past a due instant, so the wake-up's clock is surely at or after it."""
DEFAULT_WATCH_TASK_ID = "sla_watch"
"""The watch task of triggers serialized before the task id was part of them."""
STOPPED_RUN_STATES = ("failed", "success")
"""Run states Airflow has while this watch's task is still deferred only when someone set them."""


def _iso(value: Any) -> Any:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    return {key: _iso(value) for key, value in row.items()}


class RunWatch:
    """The blocking half of the watcher: config, ledger and delivery, called from a worker thread.

    Kept apart from the trigger so each step can be driven on its own (tests, a one-off check).
    """

    def __init__(
        self,
        *,
        dag_id: str,
        run_id: str,
        config: dict[str, Any],
        config_source: str,
        base_url: str,
        seconds_per_business_day: float | None,
        ledger_conn_id: str,
        smtp_conn_id: str,
        retry_seconds: float,
        task_id: str = DEFAULT_WATCH_TASK_ID,
        since: datetime | None = None,
    ) -> None:
        import psycopg2  # noqa: F401  (loaded here, in a thread, for the trigger's error handling)

        from managed_upgrade.config import parse_customer_config
        from managed_upgrade.sla.calendar import calendar_for
        from managed_upgrade.sla.clock import sla_state  # noqa: F401  (idem: the loop's clock)
        from managed_upgrade_airflow.notifiers.alert_delivery import webhook_conn_id_for

        self.dag_id, self.run_id, self.task_id = dag_id, run_id, task_id
        self.since = since or datetime.min.replace(tzinfo=UTC)
        """When this watch began (its task try's start): stops before it belong to an earlier life of
        the run, which ops has since cleared and resumed."""
        self.stop: dict[str, Any] | None = None
        """Why the run is over for this watcher, once it was found stopped: ``{how, reason, at}``."""
        self._halt = threading.Event()
        self._lock = threading.RLock()
        self.config = parse_customer_config(config, config_source)
        self.model = self.config.process_model()
        self.clock = calendar_for(self.config.calendar, seconds_per_business_day)
        self.base_url = base_url.rstrip("/")
        self.ledger_conn_id, self.smtp_conn_id = ledger_conn_id, smtp_conn_id
        self.retry_seconds = retry_seconds
        self.sent: list[dict[str, Any]] = []
        """What this watcher delivered: ``{kind, key, channels, due_at, sent_at}``."""
        self._unsent: dict[tuple[str, Any], tuple[Alert, datetime]] = {}
        self._claimed: set[tuple[str, Any]] = set()
        """Alerts already claimed (by anyone): not asked for again at every poll."""
        self._resend_at: datetime | None = datetime.min.replace(tzinfo=UTC)
        """When to look again for claimed alerts nobody marked notified (at once at start)."""
        self._stack = ExitStack()
        self._ledger: Ledger | None = None
        self._airflow_unreachable = False
        self._stop_check_unreachable = False
        self.final_ended = False
        """Airflow has the run's final task ended (:meth:`airflow_check`), whatever the ledger says."""
        # Warm-up: in the triggerer the first look-up of a connection that does not exist (the global
        # webhook, usually) took ~10 s (measured on 3.3.2); pay it now, not when the first alert is due.
        try:
            webhook_conn_id_for(self.config)
        except Exception as error:  # delivery reports it per alert; the watcher must start regardless
            log.warning("looking up the webhook connection failed: %s", error)
        # Likewise the triggerer's first question to Airflow starts its in-process execution API: ~5 s
        # (measured on 3.3.2), later ones take ~20 ms. Asked now, it also ends a watch whose run was
        # stopped before the trigger started.
        self.stop = self.airflow_stop()

    # -- ledger connection ----------------------------------------------------------------------
    def ledger(self) -> Ledger:
        """A connection lent by the process's shared pool, kept until :meth:`close` gives it back."""
        if self._ledger is None:
            from managed_upgrade_airflow.ledger_access import shared_ledgers

            self._ledger = self._stack.enter_context(shared_ledgers(self.ledger_conn_id).borrow())
        return self._ledger

    def close(self) -> None:
        """Give the ledger connection back (a later call borrows again); waits for a call in progress."""
        with self._lock:
            self._ledger = None
            try:
                self._stack.close()
            except Exception as error:  # a broken connection may fail to close; it is gone either way
                log.debug("giving the ledger connection back failed: %s", error)
            self._stack = ExitStack()

    def close_when_idle(self) -> None:
        """Give the ledger connection back once the call in progress (if any) returns, without waiting."""
        threading.Thread(target=self.close, name=f"sla-watch-close-{self.run_id}", daemon=True).start()

    def locked(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` while no other call of this watcher runs, then the connection goes back."""
        with self._lock:
            try:
                return function(*args)
            finally:
                self.close()

    def halt(self) -> None:
        """Send and claim nothing more, from now on (any thread; the call in progress sees it)."""
        self._halt.set()

    @property
    def halted(self) -> bool:
        return self._halt.is_set()

    # -- is the run stopped? --------------------------------------------------------------------
    def stopped(self, *, ask_airflow: bool = True) -> dict[str, Any] | None:
        """Why this watcher must send nothing more, or ``None``; asked before every send.

        In order: the trigger was cancelled (:meth:`halt`); a stop recorded in the ledger since this
        watch began (the listener's ``run_stops``); and, if ``ask_airflow``, Airflow having the run
        failed or success or this watch's task no longer deferred (marked by hand or cleared). Found
        once, the answer stays.
        """
        if self.stop is None and self.halted:
            self.stop = {
                "how": "cancelled",
                "reason": f"Airflow cancelled the SLA watch of {self.dag_id}/{self.run_id}",
                "at": _iso(datetime.now(UTC)),
            }
        if self.stop is None:
            row = self.ledger().run_stop_since(self.dag_id, self.run_id, self.since)
            if row is not None:
                self.stop = {"how": row["how"], "reason": row["reason"], "at": _iso(row["stopped_at"])}
        if self.stop is None and ask_airflow:
            self.stop = self.airflow_stop()
        return self.stop

    def airflow_stop(self) -> dict[str, Any] | None:
        """A stop only Airflow knows of yet (the listener could not write it), or ``None``.

        Outside a triggerer there is nobody to ask and the answer is ``None``.
        """
        from managed_upgrade_airflow import compat

        if self._stop_check_unreachable:
            return None
        now = _iso(datetime.now(UTC))
        try:
            deferred = compat.count_task_instances(self.dag_id, self.run_id, [self.task_id], ["deferred"])
            if deferred == 0:
                return {
                    "how": "watch_not_deferred",
                    "reason": f"Airflow has the task {self.task_id} of {self.dag_id}/{self.run_id} no longer "
                    "deferred (marked by hand or cleared)",
                    "at": now,
                }
            state = compat.dag_run_state(self.dag_id, self.run_id)
        except compat.AirflowUnreachable as error:
            log.debug(
                "cannot ask Airflow whether %s was stopped (%s); relying on the ledger", self.run_id, error
            )
            self._stop_check_unreachable = True
            return None
        except Exception as error:
            log.warning(
                "asking Airflow whether %s was stopped failed: %s; asking again later", self.run_id, error
            )
            return None
        if state in STOPPED_RUN_STATES:
            return {
                "how": f"run_{state}",
                "reason": f"Airflow has run {self.dag_id}/{self.run_id} {state}",
                "at": now,
            }
        return None

    def airflow_check(self) -> None:
        """The periodic look at Airflow: was the run stopped, or did its final task end (a lost event)?"""
        if self.stopped() is None:
            self.final_ended = self.final_task_ended()

    def poll(self, now: datetime) -> tuple[SlaState, list[dict[str, Any]]]:
        """One look at the run: its SLA state and events; alerts what fell due unless it was stopped."""
        with self._lock:
            try:
                state, events = self.read_state(now)
                if self.stopped(ask_airflow=False) is None:
                    if self.resend_due(now):
                        self.resend_unnotified(state)
                    self.alert_due(state)
                    self.retry_unsent(now)
                return state, events
            finally:
                self.close()

    # -- the clock --------------------------------------------------------------------------------
    def read_state(self, now: datetime) -> tuple[SlaState, list[dict[str, Any]]]:
        """The run's SLA state at ``now`` and the events it was computed from."""
        from managed_upgrade.sla.clock import sla_state

        events = self.ledger().events(self.dag_id, self.run_id)
        state = sla_state(
            self.model,
            self.clock,
            events,
            reminder_days=self.config.customer_wait.reminder_days,
            now=now,
        )
        return state, events

    # -- alerts -----------------------------------------------------------------------------------
    def task_url(self, task_id: str) -> str:
        from managed_upgrade.sla.alerts import task_url

        return task_url(self.base_url, self.dag_id, self.run_id, task_id)

    def _owner_users(self, role: str) -> tuple[str, ...]:
        return tuple(getattr(self.config.users, role, ()) or ())

    def _alert(self, **facts: Any) -> Alert:
        from managed_upgrade.sla.alerts import Alert

        return Alert(
            customer_id=self.config.customer_id,
            customer_name=self.config.name,
            dag_id=self.dag_id,
            run_id=self.run_id,
            timezone=self.config.calendar.timezone,
            **facts,
        )

    def miss_alert(
        self, unit_id: str, owner: str, ran_out_at: datetime, overrun_days: float, now: datetime, task_id: str
    ) -> Alert:
        from managed_upgrade.sla.alerts import AlertKind

        return self._alert(
            kind=AlertKind.SLA_MISS,
            budget_unit=unit_id,
            title=self.model.budget_unit(unit_id).title,
            owner_role=owner,
            owner_users=self._owner_users(owner),
            planned_finish=ran_out_at,
            now=now,
            overrun_days=overrun_days,
            task_url=self.task_url(task_id),
        )

    def reminder_alert(
        self,
        unit_id: str,
        activity_key: str,
        number: int,
        wait_started_at: datetime,
        due_at: datetime,
        now: datetime,
    ) -> Alert:
        from managed_upgrade.process.model import Role
        from managed_upgrade.sla.alerts import AlertKind

        return self._alert(
            kind=AlertKind.CUSTOMER_REMINDER,
            budget_unit=unit_id,
            title=self.model.activity(activity_key).title,
            owner_role=Role.CUSTOMER,
            owner_users=(),
            planned_finish=due_at,
            now=now,
            overrun_days=max(self.clock.business_days_between(due_at, now), 0.0),
            number=number,
            task_url=self.task_url(activity_key),
            waiting_since=wait_started_at,
        )

    def alert_due(self, state: SlaState) -> int:
        """Claim every miss and reminder due in ``state``; send those this call won. Returns how many."""
        from managed_upgrade.process.model import Role

        ledger, now, sent = self.ledger(), state.now, 0
        for unit in state.misses:
            if ("miss", unit.id) in self._claimed:
                continue
            if self.stop is not None or self.halted:
                return sent
            ran_out = unit.ran_out_at or unit.planned_finish or now
            won = ledger.claim_sla_miss(
                self.dag_id,
                self.run_id,
                unit.id,
                owner=unit.owner,
                budget_days=unit.budget_days,
                planned_finish=ran_out,
                overrun_days=unit.overrun_days,
                activity_keys=list(unit.activity_keys),
                detected_at=now,
                unless_stopped_since=self.since,
            )
            self._claimed.add(("miss", unit.id))
            if won:
                alert = self.miss_alert(
                    unit.id, unit.owner, ran_out, unit.overrun_days, now, unit.current_activity
                )
                sent += self._deliver("miss", unit.id, alert, due_at=ran_out, fresh=True)
        for reminder in state.reminders:
            if ("reminder", (reminder.budget_unit, reminder.number)) in self._claimed:
                continue
            if self.stop is not None or self.halted:
                return sent
            won = ledger.claim_customer_reminder(
                self.dag_id,
                self.run_id,
                reminder.budget_unit,
                reminder.number,
                owner=Role.CUSTOMER,
                wait_started_at=reminder.wait_started_at,
                due_at=reminder.due_at,
                detected_at=now,
                unless_stopped_since=self.since,
            )
            self._claimed.add(("reminder", (reminder.budget_unit, reminder.number)))
            if won:
                alert = self.reminder_alert(
                    reminder.budget_unit,
                    reminder.activity_key,
                    reminder.number,
                    reminder.wait_started_at,
                    reminder.due_at,
                    now,
                )
                key = (reminder.budget_unit, reminder.number)
                sent += self._deliver("reminder", key, alert, due_at=reminder.due_at, fresh=True)
        return sent

    def resend_due(self, now: datetime) -> bool:
        return self._resend_at is not None and now >= self._resend_at

    def resend_unnotified(self, state: SlaState) -> int:
        """Send the misses and reminders claimed but not marked notified for longer than the claim lease.

        A younger claim is left to its claimer (it may be sending it right now); looked at again when
        its lease ends. This watcher's own failed alerts are :meth:`retry_unsent`'s.
        """
        sent, look_again = 0, None
        for row in self.ledger().unnotified_alerts(self.dag_id, self.run_id):
            if row["kind"] in ("miss", "reminder"):
                lease_ends = row["detected_at"] + timedelta(seconds=CLAIM_LEASE_SECONDS)
                if (row["kind"], row["key"]) in self._unsent:
                    continue
                if state.now < lease_ends:
                    look_again = lease_ends if look_again is None else min(look_again, lease_ends)
                    continue
            if row["kind"] == "miss":
                unit_id = row["budget_unit"]
                task_id = self._current_activity(state, unit_id)
                alert = self.miss_alert(
                    unit_id,
                    row["owner"],
                    row["planned_finish"],
                    row["overrun_days"],
                    row["detected_at"],
                    task_id,
                )
                sent += self._deliver("miss", unit_id, alert, due_at=row["planned_finish"])
            elif row["kind"] == "reminder":
                unit_id, number = row["budget_unit"], row["number"]
                activity_key = self._waiting_activity(state, unit_id, row["wait_started_at"])
                alert = self.reminder_alert(
                    unit_id, activity_key, number, row["wait_started_at"], row["due_at"], row["detected_at"]
                )
                sent += self._deliver("reminder", (unit_id, number), alert, due_at=row["due_at"])
            # "deadline" rows belong to the run deadline callbacks, which re-send their own.
        self._resend_at = look_again
        return sent

    def retry_unsent(self, now: datetime) -> int:
        """Try again the alerts whose every channel failed, once ``retry_seconds`` have passed."""
        sent = 0
        for (kind, key), (alert, failed_at) in list(self._unsent.items()):
            if (now - failed_at).total_seconds() >= self.retry_seconds:
                del self._unsent[(kind, key)]
                sent += self._deliver(kind, key, alert, due_at=alert.planned_finish)
        return sent

    def _deliver(self, kind: str, key: Any, alert: Alert, *, due_at: datetime, fresh: bool = False) -> int:
        """Send one claimed alert -- unless the run was stopped: then send nothing.

        ``fresh``: this watcher claimed it just now; a stopped watcher withdraws such a claim, so the
        ledger keeps no miss nobody was told of (an older unsent claim stays as it was).
        """
        from managed_upgrade_airflow.notifiers.alert_delivery import SENT, send_alert

        stop = self.stopped()
        if stop is not None:
            withdrawn = fresh and self.ledger().release_claim(kind, self.dag_id, self.run_id, key)
            log.info(
                "%s %s of %s not sent%s: %s",
                kind,
                key,
                self.run_id,
                " (claim withdrawn)" if withdrawn else "",
                stop["reason"],
            )
            return 0
        channels = send_alert(alert, self.config, smtp_conn_id=self.smtp_conn_id)
        sent_at = datetime.now(UTC)
        if channels and SENT not in channels.values():
            log.error(
                "%s %s of %s: every channel failed (%s); retrying later", kind, key, self.run_id, channels
            )
            self._unsent[(kind, key)] = (alert, sent_at)
            return 0
        self.ledger().mark_alert_notified(kind, self.dag_id, self.run_id, key, channels)
        lag = (sent_at - due_at).total_seconds()
        log.info("%s %s of %s sent %.3f s after it fell due: %s", kind, key, self.run_id, lag, channels)
        self.sent.append(
            {"kind": kind, "key": key, "channels": channels, "due_at": _iso(due_at), "sent_at": _iso(sent_at)}
        )
        return 1

    def _current_activity(self, state: SlaState, unit_id: str) -> str:
        try:
            return state.unit(unit_id).current_activity
        except KeyError:
            return unit_id

    def _waiting_activity(self, state: SlaState, unit_id: str, wait_started_at: datetime) -> str:
        for wait in state.waits:
            if wait.budget_unit == unit_id and wait.started_at == wait_started_at:
                return wait.activity_key
        candidates = [w.activity_key for w in state.waits if w.budget_unit == unit_id]
        return candidates[-1] if candidates else self._current_activity(state, unit_id)

    # -- the end ----------------------------------------------------------------------------------
    def final_task_ended(self) -> bool:
        """Whether Airflow has the run's final task in an ended state (success, failed, upstream_failed, ...).

        A safety net, so a lost ``finished`` event (ledger down when the listener wrote it) cannot keep
        the watcher -- and with it the run -- going forever. Asked through the triggerer's supervisor;
        outside a triggerer (tests, a one-off check) there is none and the answer is False.
        """
        from managed_upgrade.sla.clock import final_activity_key
        from managed_upgrade_airflow import compat

        if self._airflow_unreachable:
            return False
        try:
            count = compat.count_task_instances(
                self.dag_id, self.run_id, [final_activity_key(self.model)], ENDED_STATES
            )
        except compat.AirflowUnreachable as error:  # no supervisor to ask: not a triggerer
            log.debug("cannot ask Airflow for task states here (%s); relying on ledger events", error)
            self._airflow_unreachable = True
            return False
        except Exception as error:
            log.warning("asking Airflow whether %s ended failed: %s; asking again later", self.run_id, error)
            return False
        return count > 0

    def summary(self, events: list[dict[str, Any]], state: SlaState) -> dict[str, Any]:
        """The run's misses and reminders from the ledger, JSON-ready, and how the run ended.

        ``outcome``: ``stopped`` (the run was stopped; ``stop`` says how, why and when), ``finished``
        (the final activity's ``finished`` event), ``failed`` (an activity's terminal ``failed`` event)
        or ``ended`` (Airflow has the final task ended, without either event).
        ``units``: every started budget unit's clock at the end (the ledger keeps a miss's overrun as
        it was when detected; this is the final one).
        """
        from managed_upgrade.sla.clock import final_activity_key

        final = final_activity_key(self.model)
        if self.stop is not None:
            outcome = "stopped"
        elif any(e["event"] == "finished" and e["activity_key"] == final for e in events):
            outcome = "finished"
        elif any(e["event"] == "failed" and (e.get("detail") or {}).get("terminal") is True for e in events):
            outcome = "failed"
        else:
            outcome = "ended"
        ledger = self.ledger()
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "outcome": outcome,
            "stop": self.stop,
            "misses": [_json_row(row) for row in ledger.sla_misses(self.dag_id, self.run_id)],
            "reminders": [_json_row(row) for row in ledger.customer_reminders(self.dag_id, self.run_id)],
            "units": [
                {
                    "budget_unit": unit.id,
                    "owner": unit.owner,
                    "status": unit.status,
                    "budget_days": unit.budget_days,
                    "consumed_days": round(unit.consumed_days, 4),
                    "paused_days": round(unit.paused_days, 4),
                    "missed": unit.missed,
                    "overrun_days": round(unit.overrun_days, 4),
                    "started_at": _iso(unit.started_at),
                    "finished_at": _iso(unit.finished_at),
                }
                for unit in state.units
                if unit.status != "not_started"
            ],
            "sent_by_this_watcher": [
                {**item, "key": list(item["key"]) if isinstance(item["key"], tuple) else item["key"]}
                for item in self.sent
            ],
        }


class SlaWatchTrigger(BaseTrigger):
    """Sends a run's SLA misses and customer reminders as they fall due; fires once, when the run is over.

    :param dag_id: the customer DAG
    :param run_id: the run watched
    :param config: the customer config as JSON (``model_dump(mode="json", exclude_unset=True)``): the run
        keeps the budgets, calendar and recipients it started with
    :param config_source: where the config came from (for error messages)
    :param base_url: the Airflow UI's base URL, for links to the late task
    :param seconds_per_business_day: rehearsal compression; ``None`` for the customer's real calendar
    :param poll_seconds: longest sleep between two ledger reads (default: 30 s real, <= 1 s rehearsal)
    :param ledger_conn_id: Airflow connection of the ledger
    :param smtp_conn_id: Airflow connection of the SMTP server
    :param task_id: the watch's own task (Airflow having it no longer deferred means it was stopped)
    :param watch_started_at: ISO instant this watch's task try began; stops recorded before it belong
        to an earlier life of the run (default: any stop of the run counts)
    """

    def __init__(
        self,
        *,
        dag_id: str,
        run_id: str,
        config: dict[str, Any],
        config_source: str = "customer config",
        base_url: str,
        seconds_per_business_day: float | None = None,
        poll_seconds: float | None = None,
        ledger_conn_id: str = "managed_upgrade_ledger",
        smtp_conn_id: str = "smtp_default",
        task_id: str = DEFAULT_WATCH_TASK_ID,
        watch_started_at: str | None = None,
    ) -> None:
        super().__init__()
        self.dag_id = dag_id
        self.run_id = run_id
        self.task_id = task_id
        self.watch_started_at = watch_started_at
        self._watch: RunWatch | None = None
        self.config = config
        self.config_source = config_source
        self.base_url = base_url
        self.seconds_per_business_day = seconds_per_business_day
        self.poll_seconds = poll_seconds
        self.ledger_conn_id = ledger_conn_id
        self.smtp_conn_id = smtp_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASS_PATH,
            {
                "dag_id": self.dag_id,
                "run_id": self.run_id,
                "config": self.config,
                "config_source": self.config_source,
                "base_url": self.base_url,
                "seconds_per_business_day": self.seconds_per_business_day,
                "poll_seconds": self.poll_seconds,
                "ledger_conn_id": self.ledger_conn_id,
                "smtp_conn_id": self.smtp_conn_id,
                "task_id": self.task_id,
                "watch_started_at": self.watch_started_at,
            },
        )

    @property
    def poll(self) -> float:
        if self.poll_seconds is not None:
            return float(self.poll_seconds)
        if self.seconds_per_business_day:
            return min(REHEARSAL_POLL_SECONDS, self.seconds_per_business_day / 4)
        return REAL_POLL_SECONDS

    @property
    def airflow_check_seconds(self) -> float:
        """How often Airflow is asked whether the final task ended (in case its ledger event is lost)."""
        return REAL_AIRFLOW_CHECK_SECONDS if not self.seconds_per_business_day else max(4 * self.poll, 2.0)

    def make_watch(self) -> RunWatch:
        """The blocking half; builds the clock from the config (call it in a thread)."""
        return RunWatch(
            dag_id=self.dag_id,
            run_id=self.run_id,
            config=self.config,
            config_source=self.config_source,
            base_url=self.base_url,
            seconds_per_business_day=self.seconds_per_business_day,
            ledger_conn_id=self.ledger_conn_id,
            smtp_conn_id=self.smtp_conn_id,
            retry_seconds=max(5 * self.poll, 5.0),
            task_id=self.task_id,
            since=datetime.fromisoformat(self.watch_started_at) if self.watch_started_at else None,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        watch = await asyncio.to_thread(self.make_watch)  # imports and parsing stay off the event loop
        self._watch = watch
        import psycopg2

        from managed_upgrade.sla.clock import next_due_at, run_is_over

        poll = self.poll
        loop = asyncio.get_running_loop()
        next_airflow_check = loop.time() + self.airflow_check_seconds
        self.log.info("watching the SLA clock of %s / %s (poll %.3g s)", self.dag_id, self.run_id, poll)
        try:
            while True:
                now = datetime.now(UTC)
                try:
                    state, events = await asyncio.to_thread(watch.poll, now)
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                    self.log.warning("ledger unreachable (%s); reconnecting in %.3g s", error, poll)
                    watch.close()
                    await asyncio.sleep(poll)
                    continue
                ended_in_airflow = False
                if watch.stop is None and loop.time() >= next_airflow_check:
                    next_airflow_check = loop.time() + self.airflow_check_seconds
                    await asyncio.to_thread(watch.locked, watch.airflow_check)
                    ended_in_airflow = watch.final_ended
                if watch.stop is not None or run_is_over(watch.model, events) or ended_in_airflow:
                    summary = await asyncio.to_thread(watch.locked, watch.summary, events, state)
                    break
                wake = next_due_at(state, now)
                delay = poll
                if wake is not None:
                    delay = min(poll, (wake - datetime.now(UTC)).total_seconds() + WAKE_MARGIN_SECONDS)
                await asyncio.sleep(max(delay, 0.0))
        except asyncio.CancelledError:
            watch.halt()  # the call in progress in its thread (if any) sends nothing after this
            self.log.info(
                "SLA watch of %s / %s cancelled (its task was marked or cleared, its run stopped, or the "
                "triggerer is stopping); nothing more is sent from here",
                self.dag_id,
                self.run_id,
            )
            raise
        finally:
            watch.close_when_idle()
        if summary["outcome"] == "stopped":
            self.log.info(
                "run %s was stopped: %s; SLA watch ends, nothing more is sent",
                self.run_id,
                summary["stop"]["reason"],
            )
        self.log.info(
            "run %s is over (%s): %d miss(es), %d reminder(s)",
            self.run_id,
            summary["outcome"],
            len(summary["misses"]),
            len(summary["reminders"]),
        )
        yield TriggerEvent(summary)

    async def on_kill(self) -> None:
        """Airflow cancelled this trigger because a user acted on its task or run: send nothing more."""
        if self._watch is not None:
            self._watch.halt()
        self.log.info(
            "SLA watch of %s / %s stopped by Airflow: its task %s was marked, cleared or its run stopped; "
            "no alert is sent for this watch any more",
            self.dag_id,
            self.run_id,
            self.task_id,
        )
