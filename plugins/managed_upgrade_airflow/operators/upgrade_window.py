"""The environment tasks that start only in the environment's upgrade windows: its backup and its upgrade.

:class:`WindowedEnvironmentOperator` is their common base. Before its work
(:meth:`~WindowedEnvironmentOperator.execute_in_window`) touches the host, a task asks the environment's
schedule (:mod:`managed_upgrade.sla.windows`, from the run's config snapshot plus the freezes the
customer file declares now). Outside a window or in a freeze it records the scheduled wait in the
ledger (``waiting_for_window``, once per opening: the SLA clock counts it against nobody), pushes when
and why as the XCom ``upgrade_window``, logs it, and defers on the standard provider's
:class:`~airflow.providers.standard.triggers.temporal.DateTimeTrigger` until the opening, holding no
worker. On resume it asks again (a freeze may have been declared meanwhile) and waits once more if need
be. Nothing of the work happens before the task may start, so a resumed backup takes one backup and
writes one ledger row. A rehearsal ignores windows unless the run asks to rehearse them (trigger form),
and then sees them compressed.

The backup waits for the opening and the upgrade follows it in the same window; the upgrade asks again
on its own. It counts the instant its backup started in its window (the backup's ``upgrade_window``
XCom) as the opening it waited for, so scheduler latency and a quick backup do not make it miss a short
(e.g. compressed) window, while a freeze declared since still holds it back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from managed_upgrade.sla.windows import (
    NoUpgradeWindowError,
    Opening,
    StartSchedule,
    environment_schedule,
    run_schedule,
)
from managed_upgrade_airflow.ledger_access import LEDGER_CONN_ID, open_ledger
from managed_upgrade_airflow.run_settings_xcom import run_settings_from_xcom

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig

WINDOW_XCOM_KEY = "upgrade_window"
"""XCom of a windowed task saying whether it waits for its window, until when and why."""
WINDOW_WAIT_EVENT = "waiting_for_window"
"""The ledger event of a scheduled wait (``detail``: the opening's :meth:`~Opening.as_dict` and ``until``)."""


class WindowedEnvironmentOperator(BaseOperator):
    """A task of one environment that starts only in its upgrade windows (see the module).

    Subclasses do their work in :meth:`execute_in_window` and name it in :attr:`window_subject`.

    :param environment: the environment whose windows and freezes apply
    :param config: the customer config holding them (the run's snapshot replaces it before execution);
        ``None``: start at any time
    :param window_follows: the task id of the windowed task this one follows in the same window (the
        upgrade's backup), whose start counts as the opening this one waited for
    """

    window_subject: ClassVar[str] = "the task"
    """How logs, XCom and ledger name what waits (``the backup``, ``the upgrade``)."""

    def __init__(
        self,
        *,
        environment: str,
        config: CustomerConfig | None = None,
        window_follows: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.environment = environment
        self.config = config
        self.file_config = config
        self.window_follows = window_follows

    def use_run_config(self, run_config: CustomerConfig) -> None:
        """``pre_execute``: the run's snapshot decides; the file as this worker read it adds its freezes."""
        self.file_config, self.config = self.config, run_config

    def execute(self, context: Context) -> Any:
        self._wait_for_window(context, awaited=None, follow=True)
        return self.execute_in_window(context)

    def execute_after_window(
        self, context: Context, event: dict[str, Any] | None = None, awaited: str | None = None
    ) -> Any:
        """Resume at the opening waited for: ask the schedule again, then work (or wait once more)."""
        self._wait_for_window(context, awaited=None if awaited is None else datetime.fromisoformat(awaited))
        return self.execute_in_window(context)

    def execute_in_window(self, context: Context) -> Any:
        """The task's work, once its window is open."""
        raise NotImplementedError

    def window_ledger_conn_id(self) -> str | None:
        """The ledger the scheduled wait is recorded in (``None``: not recorded, only logged)."""
        return LEDGER_CONN_ID

    # -- the schedule ------------------------------------------------------------------------------

    def window_schedule(self, context: Context) -> StartSchedule | None:
        """This environment's schedule for this run; ``None`` when it may start at any time.

        The run's settings (rehearsal) are read only when the environment has windows or freezes.
        """
        if self.config is None:
            return None
        schedule = environment_schedule(self.config, self.environment, freezes_from=self.file_config)
        if schedule.always_open:
            return None
        settings = run_settings_from_xcom(context)
        started = getattr(context.get("dag_run"), "start_date", None)
        anchor = started if isinstance(started, datetime) and started.tzinfo else _now()
        return run_schedule(
            schedule,
            anchor=anchor,
            seconds_per_business_day=settings.seconds_per_business_day,
            rehearse_windows=settings.rehearse_windows,
        )

    def _followed_start(self, context: Context) -> datetime | None:
        """When the task this one follows started in its window (its XCom), if it says so."""
        if not self.window_follows:
            return None
        shown = context["ti"].xcom_pull(task_ids=self.window_follows, key=WINDOW_XCOM_KEY)
        if not isinstance(shown, dict) or shown.get("waiting_for") != "nothing":
            return None
        try:
            started = datetime.fromisoformat(str(shown.get("opens_at")))
        except ValueError:
            return None
        return started if started.tzinfo is not None else None

    def _wait_for_window(self, context: Context, awaited: datetime | None, *, follow: bool = False) -> None:
        """Return when the task may start now; else record the wait and defer until the opening.

        ``awaited``: the opening a resumed task waited for. A try just started (not resumed) counts the
        start of the task it follows in the window instead (``follow``).
        """
        schedule = self.window_schedule(context)
        if schedule is None:
            return
        if follow:
            awaited = self._followed_start(context)
        subject = self.window_subject
        now = _now()
        try:
            if schedule.may_start(now, awaited):
                opening = schedule.opening(now)
                if not opening.is_open and awaited is not None:
                    opening = schedule.opening(awaited)  # just after the opening it waited for
                self.log.info("%s: %s", self.environment, opening.describe(subject))
                context["ti"].xcom_push(key=WINDOW_XCOM_KEY, value=opening.as_dict(subject))
                return
            opening = schedule.opening(now)
        except NoUpgradeWindowError as error:
            raise AirflowFailException(f"{self.environment}: {error}") from error
        self.log.warning("%s: %s", self.environment, opening.describe(subject))
        context["ti"].xcom_push(key=WINDOW_XCOM_KEY, value=opening.as_dict(subject))
        self._record_wait(context, now, opening)
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        self.defer(
            trigger=DateTimeTrigger(moment=opening.at),
            method_name="execute_after_window",
            kwargs={"awaited": opening.at.isoformat()},
        )

    def _record_wait(self, context: Context, now: datetime, opening: Opening) -> None:
        """The scheduled wait for the SLA clock: once per opening (a retry waiting for the same one adds
        nothing), numbered in the run. A ledger that is down delays nothing: the wait is logged."""
        conn_id = self.window_ledger_conn_id()
        if conn_id is None:
            return
        ti = context["ti"]
        until = opening.at.isoformat()
        try:
            with open_ledger(conn_id) as ledger:
                earlier = [
                    event
                    for event in ledger.events(ti.dag_id, ti.run_id)
                    if event["activity_key"] == ti.task_id and event["event"] == WINDOW_WAIT_EVENT
                ]
                if any((event.get("detail") or {}).get("until") == until for event in earlier):
                    return
                number = max((int(event["try_number"]) for event in earlier), default=0) + 1
                ledger.record_event(
                    ti.dag_id,
                    ti.run_id,
                    ti.task_id,
                    WINDOW_WAIT_EVENT,
                    at=now,
                    try_number=number,
                    detail={**opening.as_dict(self.window_subject), "until": until},
                )
        except Exception as error:
            self.log.warning(
                "could not record the scheduled wait in the ledger (%s); the SLA clock will count it "
                "against the activity's budget",
                error,
            )


def _now() -> datetime:
    """The current instant; tests replace it."""
    return datetime.now(UTC)
