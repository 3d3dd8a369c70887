"""Initiation > Analyse the Questionnaire and the system, with the follow-up the process asks for.

The process: "Analyse the Questionnaire and follow-up if more details are required". The consultant
reads the questionnaire and the automated Dev inventory and either completes the analysis, sends the
customer follow-up questions, or aborts. Follow-up questions go to the customer contacts by e-mail;
then the ball is with the customer -- the analysis budget's clock pauses and the customer gets
reminders -- until the consultant records the customer's answers, and the analysis question comes
back with every question and answer so far.

It is a question loop (:mod:`managed_upgrade_airflow.gates.question_loop`), like the fix and sign-off
reviews: each question is a run of the review DAG, waited for deferred, so every question shows its
own facts; the loop's state is the ledger's answers to this task, so a cleared task continues where
it stood.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

from managed_upgrade.messages import templating
from managed_upgrade.messages.customer_emails import questionnaire_follow_up_email
from managed_upgrade.review.review_loop import GateAnswer
from managed_upgrade_airflow.email_sender import DEFAULT_SMTP_CONN_ID, send_customer_email
from managed_upgrade_airflow.gates.initiation import ABORT, INVENTORY_TASK_ID
from managed_upgrade_airflow.gates.question_loop import QuestionLoopOperator
from managed_upgrade_airflow.gates.questions import ReviewQuestion, form_field_specs, optional_text
from managed_upgrade_airflow.ledger_access import open_ledger
from managed_upgrade_airflow.run_settings_xcom import REQUEST_CASE_TASK_ID, run_settings_from_xcom

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig

COMPLETE = "Analysis complete"
FOLLOW_UP = "Send follow-up questions"
ANSWERED = "Customer answered"
ANALYSIS_OPTIONS = (COMPLETE, FOLLOW_UP, ABORT)
WAIT_OPTIONS = (ANSWERED, ABORT)
MAX_QUESTIONS = 30
"""Analysis questions and follow-up rounds one run may ask before the task gives up."""


@dataclass(frozen=True)
class FollowUp:
    """One round of questions to the customer and, once recorded, their answers."""

    questions: str
    sent_by: str
    sent_at: datetime | None
    answers: str = ""
    answered_at: datetime | None = None
    recorded_by: str = ""


def follow_ups(answers: Sequence[GateAnswer]) -> tuple[list[FollowUp], GateAnswer | None]:
    """The rounds so far and the last answer, from this task's answers in question order."""
    rounds: list[FollowUp] = []
    for answer in answers:
        if answer.option == FOLLOW_UP and answer.text("follow_up_questions"):
            rounds.append(
                FollowUp(answer.text("follow_up_questions"), answer.responded_by, answer.responded_at)
            )
        elif (
            answer.option == ANSWERED
            and answer.text("customer_answers")
            and rounds
            and not rounds[-1].answers
        ):
            last = rounds[-1]
            rounds[-1] = FollowUp(
                last.questions,
                last.sent_by,
                last.sent_at,
                answer.text("customer_answers"),
                answer.responded_at,
                answer.responded_by,
            )
    return rounds, (answers[-1] if answers else None)


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M %Z}" if value is not None else "?"


def analysis_form() -> dict[str, Param]:
    return {
        "analysis_notes": optional_text(
            "Analysis notes", "Findings of the analysis; the reason when you abort."
        ),
        "follow_up_questions": optional_text(
            "Follow-up questions",
            "For 'Send follow-up questions': what the customer must answer (e-mailed to them).",
        ),
    }  # fmt: skip


def wait_form() -> dict[str, Param]:
    return {
        "customer_answers": optional_text(
            "The customer's answers", "For 'Customer answered': what the customer replied (required)."
        ),
        "analysis_notes": optional_text("Notes", "Anything else; the reason when you abort."),
    }  # fmt: skip


class QuestionnaireAnalysisOperator(QuestionLoopOperator):
    """``initiation.analyse_questionnaire_and_system`` (consultants): analyse, follow up, or abort.

    XCom on success: ``{chosen_options: ["Analysis complete"], params_input: {analysis_notes, ...},
    responded_by, responded_at, follow_ups: [{questions, sent_by, sent_at, answers, answered_at}]}``.
    "Abort upgrade" fails the task naming who aborted and why.
    """

    def __init__(
        self,
        *,
        config: CustomerConfig,
        inventory_task_id: str = INVENTORY_TASK_ID,
        settings_task_id: str = REQUEST_CASE_TASK_ID,
        smtp_conn_id: str = DEFAULT_SMTP_CONN_ID,
        from_email: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config=config, **kwargs)
        self.inventory_task_id = inventory_task_id
        self.settings_task_id = settings_task_id
        self.smtp_conn_id = smtp_conn_id
        self.from_email = from_email

    # --- state ----------------------------------------------------------------------------------

    def answers(self, context: Context) -> list[GateAnswer]:
        ti = context["ti"]
        with open_ledger() as ledger:
            rows = ledger.gate_answers(ti.dag_id, ti.run_id)
        given = [GateAnswer.from_ledger(row) for row in rows if row["task_id"] == ti.task_id]
        return sorted((answer for answer in given if answer.question > 0), key=lambda answer: answer.question)

    # --- the loop -------------------------------------------------------------------------------

    def answer_to(self, context: Context, number: int) -> GateAnswer | None:
        return next((answer for answer in reversed(self.answers(context)) if answer.question == number), None)

    def next_question(self, context: Context, refusal: str | None = None) -> Any:
        answers = self.answers(context)
        number = max((answer.question for answer in answers), default=0) + 1
        if number > MAX_QUESTIONS:
            raise AirflowFailException(
                f"the analysis asked {MAX_QUESTIONS} questions without completing; clear this task to go on"
            )
        rounds, last = follow_ups(answers)
        waiting = bool(rounds) and not rounds[-1].answers
        note = self.refusal_note(last)
        question = self.wait_question(context, rounds, number, note) if waiting else None
        question = question or self.analysis_question(context, rounds, number, note)
        raise self.ask_question(context, question)

    @staticmethod
    def refusal_note(last: GateAnswer | None) -> str:
        if last is None:
            return ""
        if last.option == FOLLOW_UP and not last.text("follow_up_questions"):
            reason = "'Send follow-up questions' needs the questions in the form"
        elif last.option == ANSWERED and not last.text("customer_answers"):
            reason = "'Customer answered' needs the customer's answers in the form"
        else:
            return ""
        return templating.render_body("questionnaire_refused_answer.md.j2", answer=last, reason=reason)

    def analysis_question(
        self, context: Context, rounds: Sequence[FollowUp], number: int, note: str
    ) -> ReviewQuestion:
        inventory = context["ti"].xcom_pull(task_ids=self.inventory_task_id) or {}
        markdown = inventory.get("markdown") if isinstance(inventory, dict) else None
        return self.question(
            context,
            number,
            subject=templating.render_body("questionnaire_analysis.subject.txt.j2", config=self.config),
            body=templating.render_body(
                "questionnaire_analysis.md.j2",
                note=note,
                questionnaire=self.config.questionnaire,
                inventory=markdown,
                inventory_task_id=self.inventory_task_id,
                rounds=rounds,
                complete=COMPLETE,
                follow_up=FOLLOW_UP,
                abort=ABORT,
            ),
            options=ANALYSIS_OPTIONS,
            customer_wait=False,
            fields=form_field_specs(analysis_form()),
        )

    def wait_question(
        self, context: Context, rounds: Sequence[FollowUp], number: int, note: str
    ) -> ReviewQuestion:
        facts = {"config": self.config, "rounds": rounds}
        body = templating.render_body(
            "questionnaire_wait.md.j2",
            note=note,
            contacts=[f"{c.name} <{c.email}>" for c in self.config.contacts.customer],
            answered=ANSWERED,
            **facts,
        )
        return self.question(
            context,
            number,
            subject=templating.render_body("questionnaire_wait.subject.txt.j2", **facts),
            body=body,
            options=WAIT_OPTIONS,
            customer_wait=True,
            fields=form_field_specs(wait_form()),
        )

    # --- the answer -----------------------------------------------------------------------------

    def carry_out(self, context: Context, given: GateAnswer) -> Any:
        if given.option == ABORT:
            raise AirflowFailException(
                f"upgrade aborted at the analysis by {given.responded_by} at {_when(given.responded_at)}: "
                f"{given.text('analysis_notes') or 'no reason given'}"
            )
        rounds, _ = follow_ups(self.answers(context))
        if given.option == FOLLOW_UP and given.text("follow_up_questions"):
            settings = run_settings_from_xcom(context, self.settings_task_id)
            email = questionnaire_follow_up_email(
                self.config, settings, questions=given.text("follow_up_questions"), number=len(rounds)
            )
            sent = send_customer_email(email, smtp_conn_id=self.smtp_conn_id, from_email=self.from_email)
            self.log.info("Follow-up %d e-mailed (%s) to %s", len(rounds), sent["message_id"], sent["to"])
        if given.option == COMPLETE:
            return {
                "chosen_options": [COMPLETE],
                "params_input": dict(given.params),
                "responded_by": given.responded_by,
                "responded_at": given.responded_at.isoformat() if given.responded_at else None,
                "follow_ups": [
                    {
                        "questions": item.questions,
                        "sent_by": item.sent_by,
                        "sent_at": item.sent_at.isoformat() if item.sent_at else None,
                        "answers": item.answers,
                        "answered_at": item.answered_at.isoformat() if item.answered_at else None,
                    }
                    for item in rounds
                ],
            }
        return self.next_question(context)
