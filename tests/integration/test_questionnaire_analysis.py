"""Analyse the questionnaire and the system: complete, follow up with the customer, or abort.

Driven like Airflow drives it (see ``question_driver``), against a real ledger and the SMTP sink.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException
from question_driver import ReviewTask

from managed_upgrade.config import load_customer_config
from managed_upgrade_airflow.gates.initiation import INVENTORY_TASK_ID
from managed_upgrade_airflow.operators.questionnaire_analysis import (
    ABORT,
    ANALYSIS_OPTIONS,
    ANSWERED,
    COMPLETE,
    FOLLOW_UP,
    WAIT_OPTIONS,
    QuestionnaireAnalysisOperator,
)
from managed_upgrade_airflow.operators.request_case import request_case_defaults
from managed_upgrade_airflow.run_settings_xcom import REQUEST_CASE_TASK_ID

pytestmark = pytest.mark.integration

CUSTOMERS = Path(__file__).resolve().parents[2] / "include" / "customers"
TASK_ID = "initiation.analyse_questionnaire_and_system"
INVENTORY = {"inventory": {}, "markdown": "### DEV system inventory\n\n- Installed version: **10.2.0**\n"}


@pytest.fixture
def analysis(ledger_dsn, task_context) -> ReviewTask:
    config = load_customer_config(CUSTOMERS / "acme.yaml")
    settings = {**request_case_defaults(config), "seconds_per_business_day": None}
    return ReviewTask(
        make=lambda: QuestionnaireAnalysisOperator(task_id="analyse_questionnaire_and_system", config=config),
        task_id=TASK_ID,
        run_id="manual__analysis",
        task_context=task_context,
        xcoms={INVENTORY_TASK_ID: INVENTORY, REQUEST_CASE_TASK_ID: settings},
    )


def test_the_first_question_shows_questionnaire_and_inventory_and_completing_returns_the_notes(analysis):
    first = analysis.ask()
    assert (first.number, first.options, first.customer_wait) == (1, ANALYSIS_OPTIONS, False)
    assert first.assigned_users == ("carla",)
    assert "| Number of users | 120 |" in first.body
    assert "Attached to case ACME-1042" in first.body
    assert "### DEV system inventory" in first.body
    assert set(first.fields) == {"analysis_notes", "follow_up_questions"}

    result = analysis.answer(COMPLETE, analysis_notes="standard modules", follow_up_questions="")
    assert result["chosen_options"] == [COMPLETE]
    assert (result["params_input"]["analysis_notes"], result["responded_by"]) == ("standard modules", "carla")
    assert result["follow_ups"] == []


def test_follow_up_questions_are_mailed_then_the_customer_holds_the_ball_until_answers_are_recorded(
    analysis, smtp_sink
):
    analysis.ask()
    waiting = analysis.answer_and_ask_again(
        FOLLOW_UP, analysis_notes="", follow_up_questions="Which custom modules run on Prod only?"
    )
    [mail] = smtp_sink.messages
    assert mail["Subject"] == "[ACME-1042] ACME Corporation: Questions on your upgrade questionnaire"
    assert mail["To"] == "alice.admin@acme.example"
    assert "Which custom modules run on Prod only?" in mail.get_body(preferencelist=("plain",)).get_content()

    assert (waiting.number, waiting.options, waiting.customer_wait) == (2, WAIT_OPTIONS, True)
    assert "Which custom modules run on Prod only?" in waiting.body
    assert "reminded every 5 business day(s)" in waiting.body

    refused = analysis.answer_and_ask_again(ANSWERED, customer_answers="  ", analysis_notes="")
    assert (refused.number, refused.customer_wait) == (3, True)  # still waiting: no answers recorded
    assert "'Customer answered' needs the customer's answers" in refused.body

    again = analysis.answer_and_ask_again(
        ANSWERED, customer_answers="Only the ERP bridge.", analysis_notes=""
    )
    assert (again.number, again.options, again.customer_wait) == (4, ANALYSIS_OPTIONS, False)
    assert "| 1 | Which custom modules run on Prod only? (carla" in again.body
    assert "Only the ERP bridge. (recorded by carla" in again.body

    result = analysis.answer(COMPLETE, analysis_notes="ERP bridge to be retested", follow_up_questions="")
    assert [(item["questions"], item["answers"]) for item in result["follow_ups"]] == [
        ("Which custom modules run on Prod only?", "Only the ERP bridge.")
    ]
    assert len(smtp_sink.messages) == 1  # one follow-up, one e-mail


def test_a_follow_up_without_questions_is_asked_again_and_sends_nothing(analysis, smtp_sink):
    analysis.ask()
    again = analysis.answer_and_ask_again(FOLLOW_UP, analysis_notes="", follow_up_questions="")
    assert (again.number, again.customer_wait) == (2, False)
    assert "'Send follow-up questions' needs the questions" in again.body
    assert smtp_sink.messages == []


def test_abort_fails_naming_who_and_why(analysis):
    analysis.ask()
    with pytest.raises(
        AirflowFailException, match=r"aborted at the analysis by carla at .*: unsupported module"
    ):
        analysis.answer(ABORT, analysis_notes="unsupported module", follow_up_questions="")
