"""<Environment> > Customer Sign-off: the consultant records the customer's verdict on the hand-over.

The customer tests the handed-over environment and signs off or rejects; the consultant answers the
gate on their behalf ("Signed off", "Rejected: fix and retest", "Abort and restore"). A rejection
makes the next question a fix round with the same machinery as "Fix Issues and Retest"
(:class:`~managed_upgrade_airflow.gates.review.ReviewGate`), and after a green retest the question
after it asks for the sign-off again. While the sign-off question is open the ball is with the
customer (the consultant's SLA clock pauses); during a fix round it is with the consultant.
Production is only touched after UAT's sign-off, so this task's success is what lets the run move on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

from managed_upgrade.errors import OperationError
from managed_upgrade.messages import templating
from managed_upgrade.operations.installation import read_version
from managed_upgrade.operations.settings_snapshot import reapply_review_markdown
from managed_upgrade.review.review_loop import (
    REJECTED,
    SIGNED_OFF,
    Decision,
    GateAnswer,
    LoopHistory,
    RetestRequested,
    decide_sign_off,
    sign_off_body,
)
from managed_upgrade_airflow.gates.review import ReviewGate, sign_off_form_fields
from managed_upgrade_airflow.hooks.crm_environment import CrmEnvironmentHook

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig


class CustomerSignOffOperator(ReviewGate):
    """``<env>.customer_sign_off``: answered by the consultants for the customer.

    XCom on success: ``{environment, outcome: "signed_off", customer_contact, feedback, recorded_by,
    signed_off_at, version, round, headline, blocking, fix_rounds: [rounds this task recorded],
    known_issues: [{accepted_by, accepted_at, reason}]}``. Abort fails the task after restoring the
    backup of ``<env>.backup_environment``.

    :param hand_over_task_id: the hand-over task whose XCom ``version`` is shown (default
        ``<env>.hand_over_environment``; read from the host when absent)
    :param reapply_task_id: the settings re-apply whose report is shown (default
        ``<env>.reapply_settings``): the customer signs the settings too
    """

    in_sign_off: ClassVar[bool] = True
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        config: CustomerConfig,
        environment: str,
        hand_over_task_id: str | None = None,
        reapply_task_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config=config, environment=environment, **kwargs)
        self.hand_over_task_id = hand_over_task_id or f"{environment}.hand_over_environment"
        self.reapply_task_id = reapply_task_id or f"{environment}.reapply_settings"

    def decide(self, history: LoopHistory, question: int) -> Decision:
        return decide_sign_off(history, question, self.max_rounds)

    def fix_subject(self, decision: Decision) -> str:
        return templating.render_body(
            "fix_after_rejection.subject.txt.j2", env=self.title, report=decision.report
        )

    def installed_version(self, context: Context) -> str:
        handed_over = context["ti"].xcom_pull(task_ids=self.hand_over_task_id)
        if isinstance(handed_over, dict) and handed_over.get("version"):
            return str(handed_over["version"])
        env = self.env
        try:
            with CrmEnvironmentHook(env.ssh_conn_id, label=self.environment) as hook:
                return read_version(hook.get_conn(), env.install_path)
        except (OperationError, OSError) as error:
            return f"unknown (could not read VERSION: {error})"

    def sign_off_question(
        self, context: Context, decision: Decision, history: LoopHistory
    ) -> tuple[str, dict[str, Param], str]:
        body = sign_off_body(
            decision,
            history,
            version=self.installed_version(context),
            customer_contacts=[f"{c.name} <{c.email}>" for c in self.config.contacts.customer],
            issues=self.environment_issues(context),
        )
        settings = context["ti"].xcom_pull(task_ids=self.reapply_task_id)
        if isinstance(settings, dict) and "base" in settings:
            body += "\n\n" + templating.render_body(
                "sign_off_settings.md.j2", settings_review=reapply_review_markdown(settings)
            )
        return self.subject_of_sign_off(), sign_off_form_fields(self.config), body

    def subject_of_sign_off(self) -> str:
        return templating.render_body("sign_off.subject.txt.j2", env=self.title, config=self.config)

    def on_sign_off_answer(self, context: Context, answer: GateAnswer, decision: Decision) -> Any:
        if answer.option == REJECTED:
            raise RetestRequested(
                f"{self.environment} rejected by the customer ({answer.text('customer_contact')}, "
                f"recorded by {answer.responded_by}): {answer.text('feedback')}; "
                "the next question asks for the fix"
            )
        if answer.option != SIGNED_OFF:
            raise AirflowFailException(f"{self.environment}: unexpected answer {answer.option!r}")
        history = self.load_history(context)
        issues = self.environment_issues(context)
        self.log.info(
            "%s signed off by %s (recorded by %s)",
            self.environment,
            answer.text("customer_contact"),
            answer.responded_by,
        )
        return {
            **self.loop_facts(history, decision),
            "outcome": "signed_off",
            "customer_contact": answer.text("customer_contact"),
            "feedback": answer.text("feedback"),
            "recorded_by": answer.responded_by,
            "signed_off_at": answer.responded_at.isoformat() if answer.responded_at else None,
            "version": self.installed_version(context),
            "known_issues": [
                {
                    "accepted_by": issue.accepted_by,
                    "accepted_at": issue.accepted_at.isoformat() if issue.accepted_at else None,
                    "reason": issue.reason,
                }
                for issue in issues
            ],
        }

    def accepted(self, context: Context, answer: GateAnswer, decision: Decision) -> Any:
        raise RetestRequested(
            f"{self.environment}: remaining failures accepted as known issues by {answer.responded_by}; "
            "the next question asks the customer to sign off again"
        )

    def when_green(
        self, context: Context, decision: Decision, history: LoopHistory, answer: GateAnswer | None = None
    ) -> Any:
        raise RetestRequested(
            f"{self.environment} is green; the next question asks for the customer's sign-off"
        )
