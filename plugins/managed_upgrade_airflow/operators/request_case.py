"""The run's first task, "Create Request Case": turns the trigger form into the run's settings, or refuses.

The trigger form's JSON schema catches malformed values one by one; eligibility (Platinum Support,
access acknowledged) and the cross-field rules (dates in order, target newer than installed) need the
whole picture, so they are checked here and the run fails at its very first task with every problem
listed. An accepted request is recorded in the ledger (the run row every later fact hangs off), and
its settings become this task's XCom, which every later task reads instead of re-parsing the conf.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from managed_upgrade.config import CustomerConfig
from managed_upgrade.config.run_settings import RunSettings, request_case_problems, settings_from_conf
from managed_upgrade.sla.plan import make_customer_plan
from managed_upgrade_airflow.ledger_access import LEDGER_CONN_ID, open_ledger

if TYPE_CHECKING:
    from airflow.sdk import Context

SETTING_NAMES = tuple(f.name for f in fields(RunSettings))


def request_case_defaults(config: CustomerConfig) -> dict[str, Any]:
    """Trigger-form values as the customer config gives them (JSON-ready; also the form's defaults)."""
    case = config.request_case
    return {
        "case_id": case.case_id,
        "earliest_start": case.earliest_start.isoformat(),
        "ideal_start": case.ideal_start.isoformat(),
        "deadline": case.deadline.isoformat(),
        "deadline_reason": case.deadline_reason,
        "target_version": config.versions.target,
        "seconds_per_business_day": None,
        "rehearse_windows": False,
    }


def merged_conf(config: CustomerConfig, *layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Config defaults overridden by each layer in turn (params, then the run's conf).

    Only run-setting keys are taken; an empty value (``None`` or ``""``) in a layer means "not given"
    and keeps the default, because the trigger form sends empty fields for untouched optional inputs.
    """
    merged = request_case_defaults(config)
    for layer in layers:
        for key, value in (layer or {}).items():
            if key in SETTING_NAMES and value is not None and value != "":
                merged[key] = value
    return merged


def _run_start(context: Context) -> datetime:
    """When the run started (the plan's time zero); now if the context does not say."""
    started = getattr(context.get("dag_run"), "start_date", None)
    return started if isinstance(started, datetime) and started.tzinfo else datetime.now(UTC)


class CreateRequestCaseOperator(BaseOperator):
    """Validate the request case of this run and record the run; XCom: :meth:`RunSettings.to_conf`.

    The XCom is ``{case_id, earliest_start, ideal_start, deadline (ISO dates), deadline_reason,
    target_version, seconds_per_business_day (float or None), rehearse_windows (bool)}``.
    """

    ui_color = "#e8f0fe"

    def __init__(
        self, *, config: CustomerConfig, ledger_conn_id: str = LEDGER_CONN_ID, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.ledger_conn_id = ledger_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        dag_run = context["dag_run"]
        conf = merged_conf(self.config, context.get("params"), getattr(dag_run, "conf", None))
        settings, problems = settings_from_conf(conf)
        if settings is not None:
            problems = request_case_problems(
                settings,
                current_version=self.config.versions.current,
                platinum_support=self.config.platinum_support,
                access_acknowledged=self.config.request_case.access_acknowledged,
            )
        if problems:
            listing = "\n".join(f"  - {problem}" for problem in problems)
            raise AirflowFailException(
                f"request case of customer {self.config.customer_id} is not acceptable "
                f"({len(problems)} problem{'s' if len(problems) != 1 else ''}); fix the trigger form "
                f"values or {self.config.source or 'the customer config'} and trigger again:\n{listing}"
            )
        assert settings is not None  # for the type checker: no problems means settings were parsed
        result = settings.to_conf()
        ti = context["ti"]
        plan = make_customer_plan(
            self.config,
            _run_start(context),
            seconds_per_business_day=settings.seconds_per_business_day,
            rehearse_windows=settings.rehearse_windows,
        )
        with open_ledger(self.ledger_conn_id) as ledger:
            ledger.record_run(ti.dag_id, ti.run_id, self.config.customer_id, result)
            ledger.save_plan(ti.dag_id, ti.run_id, plan.to_rows(ti.dag_id, ti.run_id))
        self.log.info(
            "Plan: %s business days, planned finish %s (deadline %s)",
            plan.planned_business_days,
            plan.planned_finish.isoformat(),
            settings.deadline,
        )
        self.log.info(
            "Request case %s accepted: %s %s -> %s, deadline %s%s",
            settings.case_id,
            self.config.customer_id,
            self.config.versions.current,
            settings.target_version,
            settings.deadline,
            f", rehearsal {settings.seconds_per_business_day:g} s per business day"
            if settings.rehearsal
            else "",
        )
        return result
