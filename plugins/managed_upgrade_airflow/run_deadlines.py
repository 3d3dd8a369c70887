"""Run-level Deadline Alerts: the customer's deadline date and the timeline ceiling, as Airflow 3.3 deadlines.

``DAG(deadline=run_deadlines(config))`` gives each run three alerts (``managed_upgrade.sla.deadlines``):
a warning ``warning_days`` business days before the customer's deadline, the deadline itself (end of
that day in the customer's zone), and the 10-week ceiling (50 business days after the run's start).

The instants depend on the run's conf (``deadline``, ``seconds_per_business_day``), so they come from a
custom reference, :class:`ManagedUpgradeDeadline`: Airflow evaluates it once when the run is created
(in the api-server or the scheduler, where reading the run's row is the reference's job), with the
customer's calendar serialized into the reference by the DAG version the run is created with -- the
config the run starts with. It must be listed in the plugin's ``deadline_references``
(``plugins/managed_upgrade_plugin.py``), else triggering answers 400. When an alert fires, its
recipients and wording come from the run's config snapshot in the ledger
(:mod:`managed_upgrade_airflow.run_config`), the file only for a run none of whose tasks ever started.

The callback is an :class:`~airflow.sdk.AsyncCallback`, run by the triggerer: it works with any
executor (Airflow 3.3.2's ``SyncCallback`` needs an executor with ``supports_callbacks``, which only
the LocalExecutor declares in core; our deployment runs Celery). The blocking work (ledger, SMTP,
webhook) runs in a worker thread so the triggerer's event loop keeps serving its triggers. Each alert
is claimed in the ledger first (``run_deadline_alerts``), so it is sent once per run and kind: a
triggerer restarted before it recorded a callback's end runs the callback again, and the claim stops
the second mail (seen in a real Airflow 3.3.2).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

# Public exports of the task SDK (its runtime ``__all__``) that its type stub leaves out.
from airflow.sdk import (  # type: ignore[attr-defined]
    AsyncCallback,
    BaseDeadlineReference,
    DeadlineAlert,
    deadline_reference,
)

from managed_upgrade.dag_ids import dag_id_for
from managed_upgrade.sla.alerts import AlertKind
from managed_upgrade.sla.deadlines import (
    DEFAULT_WARNING_DAYS,
    RUN_DEADLINE_KINDS,
    TIMELINE_CEILING_DAYS,
    RunDeadlineKind,
    calendar_from_settings,
    deadline_date,
    due_at,
    rehearsal_seconds,
)

if TYPE_CHECKING:
    from managed_upgrade.config import CustomerConfig
    from managed_upgrade.sla.alerts import Alert

log = logging.getLogger(__name__)

_LAST_MOMENT = timedelta(microseconds=1)

TITLES: dict[RunDeadlineKind, str] = {
    AlertKind.DEADLINE_WARNING: "Deadline date for completion",
    AlertKind.DEADLINE_MISSED: "Deadline date for completion",
    AlertKind.TIMELINE_CEILING: f"Timeline ceiling ({TIMELINE_CEILING_DAYS} business days)",
}


def run_deadline_kind(kind: str) -> RunDeadlineKind:
    """``kind`` as one of :data:`RUN_DEADLINE_KINDS` (a serialized reference or callback holds plain text)."""
    for known in RUN_DEADLINE_KINDS:
        if kind == known:
            return known
    raise ValueError(f"unknown run deadline kind {kind!r}; use one of {', '.join(RUN_DEADLINE_KINDS)}")


@deadline_reference
@dataclass(eq=False)
class ManagedUpgradeDeadline(BaseDeadlineReference):
    """When one run-level alert of a managed-upgrade run falls due, from the run's conf.

    Fields are serialized with the DAG: ``kind`` (``deadline_warning`` | ``deadline_missed`` |
    ``timeline_ceiling``), the config's deadline as the default when the conf has none, the warning's
    notice in business days, and the customer's calendar (the config's ``calendar`` as JSON).
    """

    kind: str = AlertKind.DEADLINE_MISSED
    default_deadline: str = "1970-01-01"
    warning_days: int = DEFAULT_WARNING_DAYS
    calendar: dict[str, Any] = field(default_factory=dict)

    required_kwargs: ClassVar[frozenset[str]] = frozenset({"dag_id", "run_id"})

    def serialize_reference(self) -> dict[str, Any]:
        return {
            "reference_type": self.reference_name,
            "kind": self.kind,
            "default_deadline": self.default_deadline,
            "warning_days": self.warning_days,
            "calendar": self.calendar,
        }

    @classmethod
    def deserialize_reference(cls, reference_data: dict[str, Any]) -> ManagedUpgradeDeadline:
        return cls(
            kind=reference_data["kind"],
            default_deadline=reference_data["default_deadline"],
            warning_days=reference_data.get("warning_days", DEFAULT_WARNING_DAYS),
            calendar=dict(reference_data.get("calendar") or {}),
        )

    def __hash__(self) -> int:
        return hash(json.dumps(self.serialize_reference(), sort_keys=True))

    def instant(self, conf: Mapping[str, Any] | None, run_start: datetime) -> datetime:
        """When this alert falls due for a run with ``conf`` that started at ``run_start``."""
        return due_at(
            run_deadline_kind(self.kind),
            deadline=deadline_date(conf, date.fromisoformat(self.default_deadline)),
            run_start=run_start,
            calendar=calendar_from_settings(self.calendar),
            seconds_per_business_day=rehearsal_seconds(conf),
            warning_days=self.warning_days,
        )

    def _evaluate_with(self, *, session: Any, **kwargs: Any) -> datetime | None:
        """Airflow calls this once while it creates the run (api-server or scheduler, ORM allowed).

        The name and signature are Airflow's (``compat.EVALUATE_WITH``, entry
        ``deadline_reference_evaluate_with``); the run's row is read by ``compat.dag_run_conf_and_start``.
        """
        from managed_upgrade_airflow.compat import dag_run_conf_and_start

        dag_id, run_id = kwargs["dag_id"], kwargs["run_id"]
        try:
            run = dag_run_conf_and_start(session, dag_id, run_id)
            if run is None:
                log.warning("run deadline %s: no run %s/%s; no alert set", self.kind, dag_id, run_id)
                return None
            return self.instant(run.conf, run.started or datetime.now(UTC))
        except Exception:
            # Raising here would make triggering the run fail; a run without this alert is better.
            log.exception(
                "run deadline %s of %s/%s could not be computed; no alert set", self.kind, dag_id, run_id
            )
            return None


def run_deadlines(config: CustomerConfig, *, warning_days: int = DEFAULT_WARNING_DAYS) -> list[DeadlineAlert]:
    """The run-level alerts of ``config``'s DAG: ``DAG(deadline=run_deadlines(config))``."""
    calendar = config.calendar.model_dump(mode="json")
    return [
        DeadlineAlert(
            reference=ManagedUpgradeDeadline(
                kind=kind,
                default_deadline=config.request_case.deadline.isoformat(),
                warning_days=warning_days,
                calendar=calendar,
            ),
            interval=timedelta(0),
            callback=AsyncCallback(
                alert_run_deadline, kwargs={"kind": kind, "customer_id": config.customer_id}
            ),
            name=kind,
        )
        for kind in RUN_DEADLINE_KINDS
    ]


async def alert_run_deadline(
    kind: str, customer_id: str, context: dict[str, Any] | None = None, *, now: datetime | None = None
) -> str:
    """The deadline callback (in the triggerer): sends and records the alert off the event loop.

    Returns the summary as JSON text: Airflow 3.3.2 stores a callback's result in a text column
    (``callback.output``), and any other type makes the triggerer's commit fail and the triggerer exit.
    ``now`` (default: the real time; Airflow never passes it) is for tests.
    """
    result = await asyncio.to_thread(deliver_run_deadline_alert, kind, customer_id, context or {}, now=now)
    return json.dumps(result, sort_keys=True)


def deliver_run_deadline_alert(
    kind: str,
    customer_id: str,
    context: Mapping[str, Any],
    *,
    config: CustomerConfig | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Claim the alert in the ledger and, when this call won the claim, send it and mark it notified.

    ``context`` is what Airflow passes a deadline callback: ``{"dag_run": {dag_id, dag_run_id, conf,
    queued_at, start_date, ...}, "deadline": {"id", "deadline_time"}}``. Returns a JSON summary.
    """
    from managed_upgrade_airflow.ledger_access import open_ledger
    from managed_upgrade_airflow.notifiers.alert_delivery import send_alert
    from managed_upgrade_airflow.run_config import stored_run_config

    now = now or datetime.now(UTC)
    dag_run = dict(context.get("dag_run") or {})
    dag_id, run_id = _run_key(dag_run, dag_id_for(customer_id))
    if not run_id:
        raise ValueError(
            f"run deadline {kind} of {customer_id}: the callback context names no run: {context!r}"
        )
    # the config the run started with; the file only if no task of the run ever started
    config = config or stored_run_config(dag_id, run_id) or _load_config(customer_id)
    due = _as_datetime((context.get("deadline") or {}).get("deadline_time")) or now
    with open_ledger() as ledger:
        stop = _stopped_by_ops(ledger, dag_id, run_id, dag_run)
        if stop is not None:
            log.info("run deadline %s of %s/%s not sent: %s", kind, dag_id, run_id, stop["reason"])
            return {
                "kind": kind,
                "dag_id": dag_id,
                "run_id": run_id,
                "sent": False,
                "stopped": stop["reason"],
            }
        if not ledger.claim_run_deadline_alert(dag_id, run_id, kind, due_at=due, detected_at=now):
            log.info("run deadline %s of %s/%s was already alerted; not sent again", kind, dag_id, run_id)
            return {"kind": kind, "dag_id": dag_id, "run_id": run_id, "sent": False}
        alert = build_alert(kind, config, dag_run, now=now)
        channels = send_alert(alert, config)
        ledger.mark_alert_notified("deadline", dag_id, run_id, kind, channels, at=datetime.now(UTC))
    log.info("run deadline %s of %s/%s alerted: %s", kind, dag_id, run_id, channels)
    return {"kind": kind, "dag_id": dag_id, "run_id": run_id, "sent": True, "channels": channels}


OPS_STOPS = ("run_marked_failed", "run_marked_success")
"""Stops that silence a run's deadline alerts: ops ended the run on purpose (a run that failed on its
own still alerts: the customer's upgrade is late and nobody decided so)."""


def _stopped_by_ops(
    ledger: Any, dag_id: str, run_id: str, dag_run: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The ops stop that ended this run, if it is still ended (a cleared, resumed run alerts again)."""
    if str(dag_run.get("state") or "") not in ("failed", "success"):
        return None
    stops = [stop for stop in ledger.run_stops(dag_id, run_id) if stop["task_id"] is None]
    return stops[-1] if stops and stops[-1]["how"] in OPS_STOPS else None


def build_alert(kind: str, config: CustomerConfig, dag_run: Mapping[str, Any], *, now: datetime) -> Alert:
    """The :class:`~managed_upgrade.sla.alerts.Alert` of a run deadline, owned by the project managers.

    The run's state at the miss goes into the message (a failed run's deadline still fires: Airflow
    drops a run's pending deadlines only when it succeeds, and a failed upgrade is not complete;
    a run ops stopped on purpose is quiet, see :func:`deliver_run_deadline_alert`).
    ``planned_finish`` is the deadline itself (for the warning too; its last microsecond, so messages
    show the customer's date) or the ceiling, on the real calendar also in a rehearsal; ``overrun_days``
    counts business days from the alert's due instant to ``now`` on the run's clock (negative: days left).
    """
    from managed_upgrade.process.model import Role
    from managed_upgrade.sla.alerts import Alert, run_url
    from managed_upgrade.sla.calendar import calendar_for
    from managed_upgrade_airflow.api_server import api_base_url

    alert_kind = run_deadline_kind(kind)
    conf = dag_run.get("conf") or {}
    seconds = rehearsal_seconds(conf)
    run_start = _run_start(dag_run, now)
    target_kind: RunDeadlineKind = (
        AlertKind.TIMELINE_CEILING if alert_kind == AlertKind.TIMELINE_CEILING else AlertKind.DEADLINE_MISSED
    )
    deadline = deadline_date(conf, config.request_case.deadline)
    calendar = calendar_for(config.calendar, None)
    due = due_at(
        target_kind,
        deadline=deadline,
        run_start=run_start,
        calendar=calendar,
        seconds_per_business_day=seconds,
    )
    overrun_days = calendar_for(config.calendar, seconds).business_days_between(due, now)
    # The message names the customer's real date, also in a rehearsal (whose due instant is compressed).
    planned_finish = due_at(
        target_kind, deadline=deadline, run_start=run_start, calendar=calendar, seconds_per_business_day=None
    )
    dag_id, run_id = _run_key(dag_run, config.dag_id)
    if target_kind == AlertKind.DEADLINE_MISSED:
        planned_finish -= _LAST_MOMENT  # shown as the deadline's own date (23:59), not 00:00 the day after
    return Alert(
        kind=alert_kind,
        customer_id=config.customer_id,
        customer_name=config.name,
        dag_id=dag_id,
        run_id=run_id,
        budget_unit="",
        title=TITLES[alert_kind],
        owner_role=Role.PROJECT_MANAGER,
        owner_users=tuple(config.users.project_manager),
        planned_finish=planned_finish,
        now=now,
        overrun_days=overrun_days,
        task_url=run_url(api_base_url(), dag_id, run_id),
        timezone=config.calendar.timezone,
        run_state=str(dag_run["state"]) if dag_run.get("state") else None,
    )


def _run_key(dag_run: Mapping[str, Any], default_dag_id: str) -> tuple[str, str]:
    """(dag id, run id) of the run in a deadline callback's context (the REST API's ``dag_run_id``)."""
    run_id = dag_run.get("dag_run_id") or dag_run.get("run_id") or ""
    return str(dag_run.get("dag_id") or default_dag_id), str(run_id)


def _run_start(dag_run: Mapping[str, Any], default: datetime) -> datetime:
    """The run's start as the reference took it at creation: queued, else started, else run-after."""
    for key in ("queued_at", "start_date", "run_after"):
        if (moment := _as_datetime(dag_run.get(key))) is not None:
            return moment
    return default


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _load_config(customer_id: str) -> CustomerConfig:
    from managed_upgrade.config import customers_dir, load_customer_config

    return load_customer_config(customers_dir() / f"{customer_id}.yaml")
