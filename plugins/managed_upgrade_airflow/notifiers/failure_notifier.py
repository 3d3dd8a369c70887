"""Tells the activity's owner and the project managers the moment an activity fails for good.

A failed task stops the run: everything after it waits as ``upstream_failed`` and the SLA watch ends,
so without this nobody hears of a restored UAT or a refused fix bundle until someone opens the Grid.
The DAG factory puts :class:`ActivityFailureNotifier` in every task's ``on_failure_callback``
(``default_args``); Airflow calls it once per failed task instance, after its last try, in the
task's own process (or the DAG processor, for a worker that died), never on ``up_for_retry``.

The alert goes through the same channels as an SLA miss (:func:`~managed_upgrade_airflow.notifiers.
alert_delivery.send_alert`: e-mail to the owner and the PMs, the customer's or the global webhook).
Customer-owned activities are the consultants' to act on, so their failures go to the consultants,
never to the customer. Delivery problems are logged, not raised: a callback must not hide the
task's own error.

A stopped run is quiet: once ops has marked the run failed or success (the listener's ``run_stops`` in
the ledger, since this task began), a task failing because of it is not alerted.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig
    from managed_upgrade.process.model import ProcessModel
    from managed_upgrade.sla.alerts import Alert

log = logging.getLogger(__name__)


class ActivityFailureNotifier(BaseNotifier):
    """``on_failure_callback`` of a customer DAG's tasks: an ``activity_failed`` alert on every channel.

    :param config: the customer config (names, users, calendar zone, alert channels)
    :param model: the process model the DAG was built from (titles and owners of activities)
    """

    def __init__(self, config: CustomerConfig, model: ProcessModel) -> None:
        super().__init__()
        self.config = config
        self.model = model

    def alert(
        self, context: Context, now: datetime | None = None, config: CustomerConfig | None = None
    ) -> Alert:
        """The alert for the failed task instance of ``context`` (``config``: the run's, default ours)."""
        from managed_upgrade.errors import describe_error
        from managed_upgrade.process.model import Role
        from managed_upgrade.sla.alerts import Alert, AlertKind, task_url
        from managed_upgrade_airflow.api_server import api_base_url

        now = now or datetime.now(UTC)
        config = config or self.config
        ti = context["ti"]
        task_id = str(ti.task_id)
        activity = self.model.activities_by_key.get(task_id)
        task = context.get("task")
        title = activity.title if activity else str(getattr(task, "task_display_name", None) or task_id)
        owner = activity.owner if activity else Role.PROJECT_MANAGER
        if owner == Role.CUSTOMER:  # the consultants record and act on the customer's steps
            owner = Role.CONSULTANT
        map_index = getattr(ti, "map_index", -1)
        if map_index is not None and map_index >= 0:
            title = f"{title} [{map_index}]"
        return Alert(
            kind=AlertKind.ACTIVITY_FAILED,
            customer_id=config.customer_id,
            customer_name=config.name,
            dag_id=str(ti.dag_id),
            run_id=str(ti.run_id),
            budget_unit="",
            title=title,
            owner_role=owner,
            owner_users=tuple(getattr(config.users, owner)),
            planned_finish=now,
            now=now,
            overrun_days=0.0,
            task_url=task_url(api_base_url(), str(ti.dag_id), str(ti.run_id), task_id),
            timezone=config.calendar.timezone,
            error=describe_error(context.get("exception")),
        )

    def stopped_by_ops(self, context: Context) -> str | None:
        """Why the run is over if ops stopped it since this task instance began, else ``None``."""
        from managed_upgrade_airflow.ledger_access import open_ledger

        ti = context["ti"]
        since = getattr(ti, "start_date", None)
        if not isinstance(since, datetime) or since.tzinfo is None:
            since = datetime.min.replace(tzinfo=UTC)
        try:
            with open_ledger() as ledger:
                stop = ledger.run_stop_since(
                    str(ti.dag_id), str(ti.run_id), since, hows=("run_marked_failed", "run_marked_success")
                )
        except Exception as error:  # the ledger may be down: then the alert goes out as before
            log.warning("could not check whether run %s was stopped: %s", ti.run_id, error)
            return None
        return None if stop is None else str(stop["reason"])

    def run_config(self, context: Context) -> CustomerConfig:
        """The config the run started with (its ledger snapshot); ours if it has none or it is unreadable."""
        from managed_upgrade_airflow.run_config import stored_run_config

        ti = context["ti"]
        return stored_run_config(str(ti.dag_id), str(ti.run_id)) or self.config

    def notify(self, context: Context) -> None:
        from managed_upgrade_airflow.notifiers.alert_delivery import send_alert

        stopped = self.stopped_by_ops(context)
        if stopped is not None:
            log.info("failure of %s not alerted: %s", context["ti"].task_id, stopped)
            return
        try:
            config = self.run_config(context)
            alert = self.alert(context, config=config)
            outcomes = send_alert(alert, config)
        except Exception:  # never mask the task's own failure
            log.exception("the failure alert of %s could not be built or sent", self.config.customer_id)
            return
        log.info("failure of %s alerted: %s", alert.title, outcomes)
