"""Hand over <Environment>: tells the customer the environment is upgraded and theirs to test and sign off.

Before the e-mail leaves, the environment is asked what it runs (``VERSION`` and ``bin/crm status``
over SSH) and must run the run's target version: the customer is never told about an upgrade that is
not there. The e-mail carries the latest test round of the environment from the ledger (what the
sanity test and the fix loop left), with pre-existing failures marked as such, and the known issues
the fix loop accepted, if any.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from managed_upgrade.errors import OperationError
from managed_upgrade.messages.customer_emails import environment_handover_email
from managed_upgrade.operations.installation import verify_running_version
from managed_upgrade_airflow.customer_outbox import send_customer_email_once
from managed_upgrade_airflow.email_sender import DEFAULT_SMTP_CONN_ID
from managed_upgrade_airflow.hooks.crm_environment import CrmEnvironmentHook
from managed_upgrade_airflow.ledger_access import LEDGER_CONN_ID
from managed_upgrade_airflow.run_settings_xcom import REQUEST_CASE_TASK_ID, run_settings_from_xcom
from managed_upgrade_airflow.testcase_executors import load_report

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig


def fix_loop_task_id(environment: str) -> str:
    """The fix loop of ``environment`` (its XCom may carry ``known_issues`` text for the e-mail)."""
    return f"{environment}.fix_and_retest"


class HandOverEnvironmentOperator(BaseOperator):
    """``<env>.hand_over_environment``: verify the target version runs, then send the hand-over e-mail.

    To the customer contacts, cc the consultants and project managers. Fails without sending when
    the environment does not run the target version (no retry: a person must look) or when no test
    report of the environment exists in the ledger for this run. A retry or clear after the e-mail
    went out does not send it again (:mod:`managed_upgrade_airflow.customer_outbox`).

    XCom: ``{environment, version, report: {round, headline}, message_id, subject, to, cc, delivery}``.

    :param config: the customer config (contacts, environment connection)
    :param environment: ``dev``, ``uat`` or ``prod``
    :param settings_task_id: the task whose XCom holds the run settings (target version, case id)
    :param smtp_conn_id: / :param from_email: how the e-mail is sent
    :param ledger_conn_id: the project's ledger
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        config: CustomerConfig,
        environment: str,
        settings_task_id: str = REQUEST_CASE_TASK_ID,
        smtp_conn_id: str = DEFAULT_SMTP_CONN_ID,
        from_email: str | None = None,
        ledger_conn_id: str = LEDGER_CONN_ID,
        **kwargs: Any,
    ) -> None:
        config.environment(environment)
        super().__init__(**kwargs)
        self.config = config
        self.environment = environment
        self.settings_task_id = settings_task_id
        self.smtp_conn_id = smtp_conn_id
        self.from_email = from_email
        self.ledger_conn_id = ledger_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        settings = run_settings_from_xcom(context, self.settings_task_id)
        env = self.config.environment(self.environment)
        with CrmEnvironmentHook(env.ssh_conn_id, label=self.environment) as hook:
            host = hook.get_conn()
            try:
                status = verify_running_version(host, env.install_path, settings.target_version)
            except OperationError as error:
                raise AirflowFailException(
                    f"not handing over {self.environment}: {error}. The customer was not told; "
                    "bring the environment to the target version, then clear this task."
                ) from error
        version = settings.target_version  # VERSION says so, verified above
        self.log.info("%s runs %s: %s", self.environment, version, status.describe())

        ti = context["ti"]
        report = load_report(ti.dag_id, ti.run_id, self.environment, ledger_conn_id=self.ledger_conn_id)
        if report is None:
            raise AirflowFailException(
                f"not handing over {self.environment}: no test report of {self.environment} in the ledger "
                f"for run {ti.run_id}; {self.environment}.sanity_test must run first"
            )
        email = environment_handover_email(
            self.config,
            settings,
            environment=self.environment,
            installed_version=version,
            report=report,
            known_issues=self._known_issues(context),
        )
        sent = send_customer_email_once(
            email,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            email_key=ti.task_id,
            ledger_conn_id=self.ledger_conn_id,
            smtp_conn_id=self.smtp_conn_id,
            from_email=self.from_email,
        )
        self.log.info(
            "Handed over %s (%s, tests round %d: %s): e-mail %s to %s, cc %s",
            self.environment,
            version,
            report.round,
            report.headline,
            sent["message_id"],
            sent["to"],
            sent["cc"],
        )
        return {
            "environment": self.environment,
            "version": version,
            "report": {"round": report.round, "headline": report.headline},
            "message_id": sent["message_id"],
            "subject": sent["subject"],
            "to": sent["to"],
            "cc": sent["cc"],
            "delivery": sent["delivery"],
        }

    def _known_issues(self, context: Context) -> str:
        """``known_issues`` text of the fix loop's XCom (a dict), if it accepted any; else empty."""
        outcome = context["ti"].xcom_pull(task_ids=fix_loop_task_id(self.environment))
        issues = outcome.get("known_issues") if isinstance(outcome, dict) else None
        return issues if isinstance(issues, str) else ""
