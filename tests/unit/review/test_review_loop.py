"""What each try of the fix loop and the sign-off asks, decided from ledger rows alone; answers judged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from managed_upgrade.operations.fix_bundle import BundleFile, FixBundle, SqlScript, new_provenance
from managed_upgrade.review.review_loop import (
    ABORT,
    ACCEPT,
    EXHAUSTED_OPTIONS,
    FIX_OPTIONS,
    REJECTED,
    RETEST,
    SIGN_OFF_OPTIONS,
    SIGNED_OFF,
    Action,
    AnswerRefused,
    GateAnswer,
    LoopHistory,
    Outcome,
    Question,
    ReviewStateError,
    RoundReport,
    after_retest,
    answer_files,
    answer_problems,
    decide_fix_and_retest,
    decide_sign_off,
    fix_request,
    fix_request_body,
    known_issues,
    question_limit,
    sign_off_body,
)
from managed_upgrade.verification.report import BaselineOutcome, CaseResult, CaseStatus, TestReport

START = datetime(2027, 2, 1, 9, 0, tzinfo=UTC)
FIX_TASK = "dev.fix_and_retest"
SIGN_TASK = "dev.customer_sign_off"


# --- ledger rows as the store returns them ------------------------------------------------------


def report_row(
    round_number: int, failing: tuple[str, ...] = (), pre_existing: tuple[str, ...] = (), env="dev"
):
    results = []
    for case in ("crm_status", "default_currency", "export_format", "legacy_report"):
        failed = case in failing or case in pre_existing
        results.append(
            CaseResult(
                id=case,
                title=case.replace("_", " "),
                kind="command",
                status=CaseStatus.FAILED if failed else CaseStatus.PASSED,
                message="expected EUR, got 'USD'" if failed else "",
                duration=0.1,
                baseline=BaselineOutcome.PRE_EXISTING
                if case in pre_existing
                else BaselineOutcome.REGRESSION
                if failed
                else BaselineOutcome.STILL_PASSING,
            )
        )
    report = TestReport(
        environment=env,
        round=round_number,
        started_at=START + timedelta(hours=round_number),
        finished_at=START + timedelta(hours=round_number, minutes=1),
        results=tuple(results),
    )
    return {
        "environment": env,
        "round": round_number,
        "report": report.to_dict(),
        "markdown": report.to_markdown(),
    }


def fix_row(round_number: int, task_id: str = FIX_TASK, question: int | None = None, env="dev"):
    files = [BundleFile.of("settings/custom.properties", b"x=1\n", 0o644)]
    scripts = [SqlScript.of(env, round_number, "UPDATE crm_settings SET value = 'EUR';")]
    provenance = new_provenance(
        environment=env,
        round_number=round_number,
        task_id=task_id,
        question=round_number if question is None else question,
        recorded_by="carla",
        recorded_at=START,
        description=f"fix {round_number}",
        files=files,
        sql=scripts,
    )
    bundle = FixBundle.create(files, scripts, [provenance])
    return {
        "environment": env,
        "round": round_number,
        "recorded_by": "carla",
        "recorded_at": START,
        "description": f"fix {round_number}",
        "bundle": bundle.to_dict(),
    }


def answer_row(task_id: str, question: int, option: str, **params: Any):
    return {
        "task_id": task_id,
        "question": question,
        "responded_by": "carla",
        "responded_at": START + timedelta(days=question),
        "chosen_options": [option],
        "params_input": params,
    }


def history(task_id=FIX_TASK, reports=(), fixes=(), answers=()) -> LoopHistory:
    return LoopHistory.from_ledger("dev", task_id, reports, fixes, answers)


RETEST_PARAMS = {
    "fix_description": "reset currency",
    "fix_files": ["settings/custom.properties"],
    "fix_sql": "",
}


# --- reading the ledger -------------------------------------------------------------------------


def test_rows_of_other_environments_and_tasks_are_left_out():
    loop = history(
        reports=[report_row(0), report_row(1, ("default_currency",)), report_row(1, env="uat")],
        fixes=[fix_row(1), fix_row(1, env="uat", task_id="uat.fix_and_retest")],
        answers=[
            answer_row(FIX_TASK, 1, RETEST, **RETEST_PARAMS),
            answer_row("uat.fix_and_retest", 1, ACCEPT),
        ],
    )
    assert [report.round for report in loop.reports] == [0, 1]
    assert loop.latest_report == RoundReport(1, 1, "3 of 4 passed", loop.latest_report.markdown)
    assert [(fix.round, fix.task_id, fix.question) for fix in loop.fixes] == [(1, FIX_TASK, 1)]
    assert loop.fixes[0].files == ("settings/custom.properties",)
    assert loop.fixes[0].sql_statements == 1
    assert [answer.task_id for answer in loop.answers] == [FIX_TASK]


def test_pre_existing_failures_do_not_block():
    assert RoundReport.from_ledger(report_row(1, pre_existing=("legacy_report",))).green


# --- fix and retest -----------------------------------------------------------------------------


def test_without_a_report_the_loop_cannot_start():
    with pytest.raises(ReviewStateError, match=r"no test report of dev .* sanity test task saves round 1"):
        decide_fix_and_retest(history(reports=[report_row(0)]), 1, 5)


def test_a_green_sanity_test_needs_no_fixes():
    decision = decide_fix_and_retest(history(reports=[report_row(0), report_row(1)]), 1, 5)
    assert decision.action is Action.SUCCEED
    assert decision.rounds_used == 0


def test_failures_ask_the_consultant_for_a_fix_with_all_options():
    decision = decide_fix_and_retest(history(reports=[report_row(1, ("default_currency",))]), 1, 5)
    assert (decision.action, decision.question, decision.options) == (Action.ASK, Question.FIX, FIX_OPTIONS)
    assert (decision.fix_round, decision.rounds_used, decision.rounds_left, decision.note) == (1, 0, 5, None)


def test_each_try_shows_the_latest_round_and_counts_the_rounds_used():
    loop = history(
        reports=[report_row(1, ("default_currency", "export_format")), report_row(2, ("default_currency",))],
        fixes=[fix_row(1)],
        answers=[answer_row(FIX_TASK, 1, RETEST, **RETEST_PARAMS)],
    )
    decision = decide_fix_and_retest(loop, 2, 5)
    assert decision.report.round == 2 and decision.report.blocking == 1
    assert (decision.fix_round, decision.rounds_used, decision.note) == (2, 1, None)


def test_a_fix_recorded_but_never_retested_is_retested_first():
    loop = history(reports=[report_row(1, ("default_currency",))], fixes=[fix_row(1)])
    decision = decide_fix_and_retest(loop, 2, 5)
    assert decision.action is Action.RETEST
    assert decision.pending_fix is not None and decision.pending_fix.round == 1


def test_when_the_rounds_are_used_up_only_accept_or_abort_remain():
    loop = history(
        reports=[
            report_row(1, ("a",)),
            report_row(2, ("default_currency",)),
            report_row(3, ("default_currency",)),
        ],
        fixes=[fix_row(1), fix_row(2)],
    )
    decision = decide_fix_and_retest(loop, 3, 2)
    assert decision.options == EXHAUSTED_OPTIONS
    assert decision.rounds_left == 0


def test_fix_rounds_of_the_other_review_task_do_not_use_up_this_tasks_rounds():
    loop = history(
        reports=[report_row(1, ("a",)), report_row(2, ("default_currency",))],
        fixes=[fix_row(1, task_id=SIGN_TASK)],
    )
    assert decide_fix_and_retest(loop, 1, 1).options == FIX_OPTIONS


def test_a_refused_accept_is_asked_again_with_the_reason_on_top():
    loop = history(
        reports=[report_row(1, ("default_currency",))],
        answers=[answer_row(FIX_TASK, 1, ACCEPT, known_issues_reason="  ")],
    )
    decision = decide_fix_and_retest(loop, 2, 5)
    assert decision.action is Action.ASK
    assert decision.note is not None
    assert decision.note.startswith(
        "The previous answer (Accept with known issues, by carla at 2027-02-02 09:00"
    )
    assert "needs a reason" in decision.note


def test_a_retest_that_recorded_no_fix_points_to_the_task_log():
    loop = history(
        reports=[report_row(1, ("default_currency",))],
        answers=[answer_row(FIX_TASK, 1, RETEST, **RETEST_PARAMS)],
    )
    assert "the task log after question 1 says why" in decide_fix_and_retest(loop, 2, 5).note


def test_an_answer_to_a_later_or_the_same_question_is_not_the_previous_one():
    loop = history(
        reports=[report_row(1, ("default_currency",))],
        answers=[answer_row(FIX_TASK, 3, ACCEPT)],
    )
    assert decide_fix_and_retest(loop, 3, 5).note is None


# --- sign-off -----------------------------------------------------------------------------------


def test_sign_off_first_asks_the_sign_off_question():
    decision = decide_sign_off(history(SIGN_TASK, reports=[report_row(1), report_row(2)]), 1, 5)
    assert (decision.action, decision.question, decision.options) == (
        Action.ASK,
        Question.SIGN_OFF,
        SIGN_OFF_OPTIONS,
    )


def test_a_rejection_turns_the_next_try_into_a_fix_round_then_back_to_sign_off():
    reports = [report_row(1)]
    rejection = answer_row(
        SIGN_TASK, 1, REJECTED, customer_contact="Alice", feedback="Report totals are wrong"
    )
    after_rejection = decide_sign_off(history(SIGN_TASK, reports, answers=[rejection]), 2, 5)
    assert (after_rejection.question, after_rejection.options) == (Question.FIX, FIX_OPTIONS)
    assert (
        after_rejection.rejection is not None
        and after_rejection.rejection.text("feedback") == "Report totals are wrong"
    )
    assert after_rejection.fix_round == 1

    still_red = history(
        SIGN_TASK,
        [*reports, report_row(2, ("export_format",))],
        [fix_row(1, SIGN_TASK, question=2)],
        [rejection, answer_row(SIGN_TASK, 2, RETEST, **RETEST_PARAMS)],
    )
    red = decide_sign_off(still_red, 3, 5)
    assert (red.question, red.rejection.question, red.rounds_used) == (Question.FIX, 1, 1)

    green = history(
        SIGN_TASK,
        [*reports, report_row(2)],
        [fix_row(1, SIGN_TASK, question=2)],
        [rejection, answer_row(SIGN_TASK, 2, RETEST, **RETEST_PARAMS)],
    )
    assert decide_sign_off(green, 3, 5).question is Question.SIGN_OFF


def test_accepting_known_issues_during_sign_off_goes_back_to_the_customer():
    answers = [
        answer_row(SIGN_TASK, 1, REJECTED, customer_contact="Alice", feedback="slow"),
        answer_row(SIGN_TASK, 2, ACCEPT, known_issues_reason="performance is tracked in CASE-7"),
    ]
    decision = decide_sign_off(history(SIGN_TASK, [report_row(1)], answers=answers), 3, 5)
    assert decision.question is Question.SIGN_OFF
    assert decision.note is None


def test_a_refused_sign_off_answer_asks_the_same_question_again():
    rejection_without_feedback = answer_row(SIGN_TASK, 1, REJECTED, customer_contact="Alice", feedback="")
    decision = decide_sign_off(
        history(SIGN_TASK, [report_row(1)], answers=[rejection_without_feedback]), 2, 5
    )
    assert decision.question is Question.SIGN_OFF
    assert "Rejected: fix and retest needs the customer's feedback" in decision.note

    bad_retest = answer_row(SIGN_TASK, 2, RETEST, fix_description="", fix_files=["../x"])
    answers = [answer_row(SIGN_TASK, 1, REJECTED, customer_contact="Alice", feedback="x"), bad_retest]
    decision = decide_sign_off(history(SIGN_TASK, [report_row(1)], answers=answers), 3, 5)
    assert decision.question is Question.FIX
    assert "needs a fix description" in decision.note and "'..' segment" in decision.note


def test_a_sign_off_after_a_cleared_success_is_asked_again():
    answers = [answer_row(SIGN_TASK, 1, SIGNED_OFF, customer_contact="Alice")]
    assert (
        decide_sign_off(history(SIGN_TASK, [report_row(1)], answers=answers), 2, 5).question
        is Question.SIGN_OFF
    )


# --- answers ------------------------------------------------------------------------------------


def gate_answer(option: str | None, **params: Any) -> GateAnswer:
    return GateAnswer(SIGN_TASK, 1, "carla", START, (option,) if option else (), params)


@pytest.mark.parametrize(
    ("option", "params", "problem"),
    [
        (None, {}, "no option was chosen"),
        (RETEST, {"fix_description": " "}, "Retest needs a fix description"),
        (RETEST, {"fix_description": "x", "fix_files": ["/etc/passwd"]}, "is absolute"),
        (RETEST, {"fix_description": "x", "fix_files": "a\n../b"}, "'..' segment"),
        (RETEST, {"fix_description": "x", "fix_files": 7}, "must be a list of paths"),
        (RETEST, {"fix_description": "x", "fix_files": [3]}, "holds 3, not a path"),
        (RETEST, {"fix_description": "x", "fix_sql": "UPDATE t SET a = 1; COMMIT;"}, "transaction control"),
        (RETEST, {"fix_description": "x", "fix_sql": ["UPDATE"]}, "fix_sql must be text"),
        (ACCEPT, {"known_issues_reason": ""}, "Accept with known issues needs a reason"),
        (ACCEPT, {}, "(known_issues_reason)"),
        (SIGNED_OFF, {"customer_contact": ""}, "needs the customer contact who signed off"),
        (REJECTED, {"customer_contact": "Alice"}, "needs the customer's feedback"),
        ("Approve", {}, "unknown option 'Approve'"),
    ],
)
def test_answers_that_cannot_be_carried_out_say_why(option, params, problem):
    problems = answer_problems(gate_answer(option, **params))
    assert any(problem in item for item in problems), problems


@pytest.mark.parametrize(
    ("option", "params"),
    [
        (RETEST, {"fix_description": "x"}),
        (
            RETEST,
            {"fix_description": "x", "fix_files": "settings/a.properties\n\n", "fix_sql": "UPDATE t SET a=1"},
        ),
        (ACCEPT, {"known_issues_reason": "agreed with Alice"}),
        (SIGNED_OFF, {"customer_contact": "Alice"}),
        (REJECTED, {"customer_contact": "Alice", "feedback": "totals wrong"}),
        (ABORT, {}),
    ],
)
def test_complete_answers_pass(option, params):
    assert answer_problems(gate_answer(option, **params)) == []


def test_an_option_that_was_not_offered_is_refused():
    assert answer_problems(gate_answer(RETEST, fix_description="x"), EXHAUSTED_OPTIONS) == [
        "'Retest' was not offered (choose one of Accept with known issues, Abort and restore)"
    ]


def test_a_retest_answer_becomes_a_fix_request():
    answer = gate_answer(
        RETEST,
        fix_description=" currency reset ",
        fix_files=["settings/a.properties", " settings/a.properties ", ""],
        fix_sql="  ",
    )
    assert fix_request(answer).description == "currency reset"
    assert fix_request(answer).files == ("settings/a.properties",)
    assert fix_request(answer).sql == ""
    with pytest.raises(AnswerRefused, match="needs a fix description"):
        fix_request(gate_answer(RETEST))
    assert answer_files("a\r\nb\n") == (["a", "b"], [])
    assert answer_files(["a\nb", "c", "a"]) == (["a", "b", "c"], [])


# --- after a retest -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("blocking", "used", "in_sign_off", "outcome"),
    [
        (0, 1, False, Outcome.SUCCEED),
        (0, 5, False, Outcome.SUCCEED),
        (0, 1, True, Outcome.ASK_AGAIN),
        (2, 1, False, Outcome.ASK_AGAIN),
        (2, 5, False, Outcome.EXHAUSTED),
        (2, 5, True, Outcome.EXHAUSTED),
    ],
)
def test_a_retest_ends_the_loop_asks_again_or_gives_up(blocking, used, in_sign_off, outcome):
    report = RoundReport(2, blocking, "x")
    assert after_retest(report, used, 5, in_sign_off=in_sign_off) is outcome


def test_known_issues_are_the_valid_accepts_oldest_first():
    answers = [
        GateAnswer(
            FIX_TASK, 2, "carla", START + timedelta(days=2), (ACCEPT,), {"known_issues_reason": "later"}
        ),
        GateAnswer(FIX_TASK, 1, "carla", START, (ACCEPT,), {"known_issues_reason": ""}),
        GateAnswer(
            SIGN_TASK, 1, "dan", START + timedelta(days=1), (ACCEPT,), {"known_issues_reason": "first"}
        ),
        GateAnswer(SIGN_TASK, 2, "dan", START, (RETEST,), {"known_issues_reason": "not an accept"}),
        GateAnswer(SIGN_TASK, 4, "eve", None, (ACCEPT,), {"known_issues_reason": "no time b"}),
        GateAnswer(SIGN_TASK, 3, "eve", None, (ACCEPT,), {"known_issues_reason": "no time a"}),
    ]
    assert [(issue.accepted_by, issue.reason) for issue in known_issues(answers)] == [
        ("dan", "first"),
        ("carla", "later"),
        ("eve", "no time a"),
        ("eve", "no time b"),
    ]


def test_question_limits_leave_room_for_refused_answers():
    assert question_limit(5, in_sign_off=False) == 10
    assert question_limit(5, in_sign_off=True) == 20


# --- what the gate shows ------------------------------------------------------------------------


def test_the_fix_request_shows_the_note_the_rejection_the_report_the_rounds_and_how_to_answer():
    rejection = answer_row(SIGN_TASK, 1, REJECTED, customer_contact="Alice | CFO", feedback="totals *wrong*")
    loop = history(
        SIGN_TASK,
        [report_row(1, ("export_format",)), report_row(2, ("default_currency",))],
        [fix_row(1, SIGN_TASK, question=2)],
        [rejection, answer_row(SIGN_TASK, 2, RETEST, **RETEST_PARAMS), answer_row(SIGN_TASK, 3, ACCEPT)],
    )
    decision = decide_sign_off(loop, 4, 5)
    body = fix_request_body(
        decision, loop, host="crm_acme_dev_ssh", install_path="/crm/acme", database="crm_acme_dev_db"
    )
    assert body.startswith("> **The previous answer (Accept with known issues, by carla")
    assert "**The customer rejected the Development environment** (Alice \\| CFO" in body
    assert "> totals \\*wrong\\*" in body
    assert "Fix round 2 of at most 5 for this task, on test round 2 of Development." in body
    assert "**3 of 4 passed** on dev, round 2" in body  # the round's own report
    assert (
        "| 1 | 3 of 4 passed, **1 to fix** | by carla: fix 1; "
        "files `settings/custom.properties`; 1 SQL statement |" in body
    )
    assert "| 2 | 3 of 4 passed, **1 to fix** | — |" in body
    assert "`crm_acme_dev_ssh` under `/crm/acme`" in body
    assert "config database `crm_acme_dev_db`" in body


def test_the_fix_request_says_when_the_rounds_are_used_up():
    loop = history(reports=[report_row(1, ("a",)), report_row(2, ("default_currency",))], fixes=[fix_row(1)])
    decision = decide_fix_and_retest(loop, 2, 1)
    body = fix_request_body(decision, loop, host="h", install_path="/p", database="d")
    assert "**All 1 fix rounds of this task are used.**" in body
    assert "Retest is no longer offered" in body


def test_the_sign_off_question_shows_the_hand_over_facts():
    loop = history(SIGN_TASK, [report_row(1, ("default_currency",)), report_row(2)], [fix_row(1)])
    decision = decide_sign_off(loop, 1, 5)
    issues = known_issues(
        [GateAnswer(FIX_TASK, 1, "carla", START, (ACCEPT,), {"known_issues_reason": "CASE-7"})]
    )
    body = sign_off_body(
        decision, loop, version="11.0.0", customer_contacts=["Alice <a@x.example>"], issues=issues
    )
    assert "hand-over of the **Development** environment; you answer on the customer's behalf" in body
    assert "| Version running | 11.0.0 |" in body
    assert "| Latest test round | 2: 4 of 4 passed, green |" in body
    assert "| Fix rounds | 1 |" in body
    assert "| Known issues | 1 |" in body
    assert "- accepted by carla on 2027-02-01: CASE-7" in body
    assert "\\<a@x.example\\>" in body
