"""The run's SLA watcher task: hands the run to a trigger that alerts misses and reminders as they fall due.

One ``SlaWatchOperator`` task per customer DAG runs alongside the activities. ``execute`` defers at
once to :class:`~managed_upgrade_airflow.triggers.sla_watch_trigger.SlaWatchTrigger`, which waits in
the triggerer (no worker slot) for the whole run; ``execute_complete`` returns the run's misses and
reminders once the run is over.

Not ``start_from_trigger``: the trigger needs what only the running task knows (the run id, the
run's rehearsal compression from its conf, the ``[api] base_url`` of this deployment), and
rendering those as templates in the triggerer would make it load the whole serialized DAG. The cost
is one short worker run at the start.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from managed_upgrade.sla.deadlines import rehearsal_seconds
from managed_upgrade_airflow.api_server import api_base_url
from managed_upgrade_airflow.email_sender import DEFAULT_SMTP_CONN_ID
from managed_upgrade_airflow.ledger_access import LEDGER_CONN_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig

SLA_WATCH_TASK_ID = "sla_watch"
"""Suggested task id (outside every stage group: the watcher is not an activity)."""


class SlaWatchOperator(BaseOperator):
    """Watch this run's SLA clock until the run is over; returns its misses and reminders.

    :param config: the customer config (its budgets, calendar, reminder budget and alert channels)
    :param poll_seconds: longest wait between two ledger reads in the trigger (default 30 s on a real
        calendar, at most 1 s in rehearsal)
    :param ledger_conn_id: Airflow connection of the ledger
    :param smtp_conn_id: Airflow connection of the SMTP server for alert e-mails

    XCom: ``{dag_id, run_id, outcome: "finished" | "failed" | "ended" | "stopped", stop: {how, reason,
    at} | None, misses: [sla_misses rows],
    reminders: [customer_reminders rows], units: [each started budget unit's final clock: budget,
    consumed and paused days, missed, overrun], sent_by_this_watcher: [...]}`` (times as ISO strings).
    """

    template_fields: Sequence[str] = ()
    ui_color = "#fdf2e9"

    def __init__(
        self,
        *,
        config: CustomerConfig,
        poll_seconds: float | None = None,
        ledger_conn_id: str = LEDGER_CONN_ID,
        smtp_conn_id: str = DEFAULT_SMTP_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.poll_seconds = poll_seconds
        self.ledger_conn_id = ledger_conn_id
        self.smtp_conn_id = smtp_conn_id

    def make_trigger(self, context: Context) -> Any:
        """The trigger for this run (its ids, conf's rehearsal compression, this deployment's URL)."""
        from managed_upgrade_airflow.triggers.sla_watch_trigger import SlaWatchTrigger

        ti = context["ti"]
        conf = getattr(context.get("dag_run"), "conf", None) or {}
        started = getattr(ti, "start_date", None)
        if not isinstance(started, datetime) or started.tzinfo is None:
            started = datetime.now(UTC)
        return SlaWatchTrigger(
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            config=self.config.model_dump(mode="json", exclude_unset=True),
            config_source=self.config.source or f"{self.config.customer_id}.yaml",
            base_url=api_base_url(),
            seconds_per_business_day=rehearsal_seconds(conf),
            poll_seconds=self.poll_seconds,
            ledger_conn_id=self.ledger_conn_id,
            smtp_conn_id=self.smtp_conn_id,
            task_id=ti.task_id,
            watch_started_at=started.astimezone(UTC).isoformat(),
        )

    def execute(self, context: Context) -> None:
        self.defer(trigger=self.make_trigger(context), method_name="execute_complete")

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        misses, reminders = event.get("misses", []), event.get("reminders", [])
        if event.get("outcome") == "stopped":
            self.log.info(
                "the run was stopped, the SLA watch ended: %s", (event.get("stop") or {}).get("reason")
            )
        for miss in misses:
            self.log.warning(
                "SLA miss: %s (owner %s) ran out at %s, overrun %.2f business days",
                miss.get("budget_unit"),
                miss.get("owner"),
                miss.get("planned_finish"),
                miss.get("overrun_days") or 0.0,
            )
        self.log.info(
            "run %s: %d SLA miss(es), %d customer reminder(s)",
            event.get("outcome"),
            len(misses),
            len(reminders),
        )
        return event
