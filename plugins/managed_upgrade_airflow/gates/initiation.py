"""Human gates of Initiation and the test-case review: what the consultant or PM sees, what answering does.

Each gate shows the facts the decision needs (the request case, the draft e-mail, the questionnaire
and Dev inventory, the baseline test report) and its answer sets the next step in motion: the two
customer e-mails of the process document are sent by answering "Respond to Request" and "Acknowledge
Request Formally", and an "Abort upgrade" answer fails the run there, naming who aborted and why.
Answers are mirrored into the ledger by :class:`FactsGate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import Param, ParamsDict  # type: ignore[attr-defined]  # missing from airflow.sdk's stub in 3.3.2
from airflow.sdk.exceptions import AirflowFailException

from managed_upgrade.config import CustomerConfig
from managed_upgrade.config.run_settings import RunSettings
from managed_upgrade.messages import templating
from managed_upgrade.messages.customer_emails import (
    CustomerEmail,
    request_acknowledged_email,
    request_received_email,
)
from managed_upgrade.messages.templating import fenced  # noqa: F401  # re-exported for other gate bodies
from managed_upgrade.process.model import GateResponder
from managed_upgrade.verification.report import TestReport
from managed_upgrade_airflow.email_sender import DEFAULT_SMTP_CONN_ID, send_customer_email
from managed_upgrade_airflow.gates.base import FactsGate, HitlUser, hitl_users
from managed_upgrade_airflow.gates.questions import optional_text
from managed_upgrade_airflow.ledger_access import open_ledger
from managed_upgrade_airflow.run_settings_xcom import REQUEST_CASE_TASK_ID, run_settings_from_xcom

if TYPE_CHECKING:
    from airflow.sdk import Context

INVENTORY_TASK_ID = "initiation.inventory_dev_system"
VERIFY_TEST_CASES_TASK_ID = "preparation.verify_test_cases_dev"
ABORT = "Abort upgrade"


def with_form_fields(given: Any, fields: dict[str, Param]) -> ParamsDict:
    """The gate's form fields added to the ``params`` Airflow already put in the operator's kwargs.

    Airflow's operator wrapper fills ``params`` with the DAG's params (the trigger form) before the
    gate's ``__init__`` runs, so a ``setdefault`` would never add the gate's own fields, and the HITL
    operator then keeps only task-level params: the form would show no fields. Fields the caller
    passed explicitly (source ``task``) win; otherwise the gate's fields are added as task params.
    """
    merged = ParamsDict()
    if given:
        merged.update(given if isinstance(given, ParamsDict) else ParamsDict(given))
    if not any(merged.get_param(key).source == "task" for key in merged):
        for key, param in fields.items():
            param.source = "task"
            merged[key] = param
    return merged


def _responder(answer: dict[str, Any]) -> str:
    user = answer.get("responded_by_user") or {}
    return str(user.get("name") or user.get("id") or "unknown")


def _abort(gate: str, answer: dict[str, Any], reason: str) -> AirflowFailException:
    at = answer.get("responded_at")
    when = at.isoformat() if isinstance(at, datetime) else str(at)
    return AirflowFailException(
        f"upgrade aborted at {gate} by {_responder(answer)} at {when}: "
        f"{reason.strip() or '(no reason given)'}"
    )


class _InitiationGate(FactsGate):
    """Common wiring: the customer config, the run settings' XCom, mail settings, default assignees.

    ``template_fields`` is empty on purpose: bodies are rendered from facts at execute time, and a
    Jinja pass over a subject built from config text would evaluate any ``{{`` in a customer's name.
    Each gate names the one-line template of its subject in ``SUBJECT``; the config is data to it.
    """

    template_fields: Sequence[str] = ()
    assignee_role: ClassVar[GateResponder] = GateResponder.CONSULTANT
    SUBJECT: ClassVar[str]
    """The subject's template, rendered with ``config``."""

    def __init__(
        self,
        *,
        config: CustomerConfig,
        settings_task_id: str = REQUEST_CASE_TASK_ID,
        smtp_conn_id: str = DEFAULT_SMTP_CONN_ID,
        from_email: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("subject", self.subject_for(config))
        kwargs.setdefault("assigned_users", self.assignees_for(config))
        super().__init__(**kwargs)
        self.config = config
        self.settings_task_id = settings_task_id
        self.smtp_conn_id = smtp_conn_id
        self.from_email = from_email

    @classmethod
    def subject_for(cls, config: CustomerConfig) -> str:
        return templating.render_body(cls.SUBJECT, config=config)

    @classmethod
    def assignees_for(cls, config: CustomerConfig) -> list[HitlUser]:
        return hitl_users(getattr(config.users, cls.assignee_role.value))

    def use_run_config(self, config: CustomerConfig) -> None:
        """Take the run's config snapshot; subject and assignees derived from the file follow it."""
        if self.subject == self.subject_for(self.config):
            self.subject = self.subject_for(config)
        if self.assigned_users == self.assignees_for(self.config):
            self.assigned_users = self.assignees_for(config)
        self.config = config

    def settings(self, context: Context) -> RunSettings:
        return run_settings_from_xcom(context, self.settings_task_id)

    def send(self, email: CustomerEmail) -> dict[str, Any]:
        sent = send_customer_email(email, smtp_conn_id=self.smtp_conn_id, from_email=self.from_email)
        self.log.info(
            "Sent %s e-mail %s to %s, cc %s", email.kind, sent["message_id"], sent["to"], sent["cc"]
        )
        return sent


class RespondToRequestGate(_InitiationGate):
    """``initiation.respond_to_request`` (consultant): answering sends the receipt (e-mail 1).

    Param ``information_gathered`` (text) goes into the e-mail. XCom: the answer plus ``email``
    (``send_customer_email``'s result).
    """

    OPTION = "Send receipt to customer"
    SUBJECT = "respond_to_request.subject.txt.j2"

    def __init__(self, *, config: CustomerConfig, **kwargs: Any) -> None:
        kwargs.setdefault("options", [self.OPTION])
        kwargs["params"] = with_form_fields(
            kwargs.get("params"),
            {
                "information_gathered": optional_text(
                    "Information gathered",
                    "What you gathered with the customer about the request; quoted in the mail.",
                )
            },
        )
        super().__init__(config=config, **kwargs)

    def draft(self, context: Context, information_gathered: str = "") -> CustomerEmail:
        return request_received_email(
            self.config, self.settings(context), information_gathered=information_gathered
        )

    def render_body(self, context: Context) -> str:
        return templating.render_body(
            "respond_to_request.md.j2",
            config=self.config,
            settings=self.settings(context),
            email=self.draft(context),
            action=self.OPTION,
        )

    def on_answer(self, context: Context, answer: dict[str, Any]) -> Any:
        notes = str((answer.get("params_input") or {}).get("information_gathered") or "")
        result = super().on_answer(context, answer)
        result["email"] = self.send(self.draft(context, notes))
        return result


class AcknowledgeRequestGate(_InitiationGate):
    """``initiation.acknowledge_request_formally`` (project manager): answering sends e-mail 2.

    Param ``kickoff_note`` (text) is added to the acknowledgement. XCom: the answer plus ``email``.
    """

    OPTION = "Send formal acknowledgement"
    SUBJECT = "acknowledge_request.subject.txt.j2"
    assignee_role: ClassVar[GateResponder] = GateResponder.PROJECT_MANAGER

    def __init__(self, *, config: CustomerConfig, **kwargs: Any) -> None:
        kwargs.setdefault("options", [self.OPTION])
        kwargs["params"] = with_form_fields(
            kwargs.get("params"),
            {
                "kickoff_note": optional_text(
                    "Kick-off note", "Optional note (e.g. the kick-off call) added to the acknowledgement."
                )
            },
        )
        super().__init__(config=config, **kwargs)

    def draft(self, context: Context, kickoff_note: str = "") -> CustomerEmail:
        return request_acknowledged_email(self.config, self.settings(context), kickoff_note=kickoff_note)

    def render_body(self, context: Context) -> str:
        return templating.render_body(
            "acknowledge_request.md.j2", email=self.draft(context), action=self.OPTION
        )

    def on_answer(self, context: Context, answer: dict[str, Any]) -> Any:
        note = str((answer.get("params_input") or {}).get("kickoff_note") or "")
        result = super().on_answer(context, answer)
        result["email"] = self.send(self.draft(context, note))
        return result


class ReviewTestCaseVerificationGate(_InitiationGate):
    """``preparation.review_test_case_verification`` (consultant): approve the Dev baseline report.

    The body is the baseline report (ledger ``test_reports`` of env ``dev`` round 0, else the XCom of
    ``verify_test_cases_dev``: a dict with ``markdown`` or a :class:`TestReport` dict). Options
    "Approve baseline" / "Abort upgrade"; param ``review_notes``.
    """

    APPROVE = "Approve baseline"
    SUBJECT = "review_test_case_verification.subject.txt.j2"

    def __init__(
        self, *, config: CustomerConfig, verification_task_id: str = VERIFY_TEST_CASES_TASK_ID, **kwargs: Any
    ) -> None:
        kwargs.setdefault("options", [self.APPROVE, ABORT])
        kwargs["params"] = with_form_fields(
            kwargs.get("params"),
            {
                "review_notes": optional_text(
                    "Review notes",
                    "Remarks on the baseline (e.g. known failures); the reason when you abort.",
                )
            },
        )  # fmt: skip
        super().__init__(config=config, **kwargs)
        self.verification_task_id = verification_task_id

    def baseline_markdown(self, context: Context) -> str | None:
        ti = context["ti"]
        with open_ledger() as ledger:
            for report in ledger.test_reports(ti.dag_id, ti.run_id, "dev"):
                if report["round"] == 0:
                    return report["markdown"]
        data = ti.xcom_pull(task_ids=self.verification_task_id)
        if isinstance(data, dict) and isinstance(data.get("markdown"), str):
            return data["markdown"]
        if isinstance(data, dict) and "results" in data:
            return TestReport.from_dict(data).to_markdown()
        return None

    def render_body(self, context: Context) -> str:
        return templating.render_body(
            "review_test_case_verification.md.j2",
            baseline=self.baseline_markdown(context),
            verification_task_id=self.verification_task_id,
        )

    def on_answer(self, context: Context, answer: dict[str, Any]) -> Any:
        params = answer.get("params_input") or {}
        if ABORT in (answer.get("chosen_options") or []):
            raise _abort("the test case verification review", answer, str(params.get("review_notes") or ""))
        return super().on_answer(context, answer)
