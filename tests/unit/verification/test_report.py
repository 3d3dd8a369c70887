"""Test reports: baseline judgement, JSON round trip, JUnit XML and the markdown a consultant reads."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from managed_upgrade.verification.report import (
    BaselineOutcome,
    CaseResult,
    CaseStatus,
    TestReport,
    excerpt,
    shorten,
)

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

PASSED, FAILED, ERROR = CaseStatus.PASSED, CaseStatus.FAILED, CaseStatus.ERROR


def result(case_id: str, status: CaseStatus, message: str = "", output: str = "") -> CaseResult:
    return CaseResult(
        id=case_id,
        title=f"{case_id} title",
        kind="command",
        status=status,
        message=message or ("" if status is PASSED else f"{case_id} went wrong"),
        output=output,
        duration=0.25,
    )


def report(*results: CaseResult, round: int = 1, environment: str = "dev") -> TestReport:
    return TestReport(
        environment=environment,
        round=round,
        started_at=START + timedelta(days=round),
        finished_at=START + timedelta(days=round, seconds=42),
        results=results,
    )


BASELINE = report(
    result("stays_green", PASSED),
    result("breaks", PASSED),
    result("broken_before", FAILED),
    result("errored_before", ERROR),
    result("gets_fixed", FAILED),
    result("crashes_now", PASSED),
    round=0,
)

AFTER = report(
    result("stays_green", PASSED),
    result("breaks", FAILED, "exit code 1, expected 0"),
    result("broken_before", FAILED),
    result("errored_before", FAILED),
    result("gets_fixed", PASSED),
    result("crashes_now", ERROR, "timed out after 60 s"),
    result("brand_new", FAILED),
    round=1,
).compare_to(BASELINE)


# --- baseline -----------------------------------------------------------------------------------


def test_each_case_is_judged_against_its_baseline_result() -> None:
    assert {item.id: item.baseline for item in AFTER.results} == {
        "stays_green": BaselineOutcome.STILL_PASSING,
        "breaks": BaselineOutcome.REGRESSION,
        "broken_before": BaselineOutcome.PRE_EXISTING,
        "errored_before": BaselineOutcome.PRE_EXISTING,
        "gets_fixed": BaselineOutcome.FIXED,
        "crashes_now": BaselineOutcome.REGRESSION,
        "brand_new": BaselineOutcome.NOT_IN_BASELINE,
    }


def test_only_failures_the_upgrade_may_have_caused_block() -> None:
    assert [item.id for item in AFTER.blocking_failures] == ["breaks", "crashes_now", "brand_new"]


def test_without_a_baseline_every_failure_blocks() -> None:
    plain = report(result("a", PASSED), result("b", FAILED), result("c", ERROR))
    assert plain.baseline is None
    assert [item.id for item in plain.blocking_failures] == ["b", "c"]


def test_comparison_returns_a_new_report_and_names_its_baseline() -> None:
    unjudged = report(result("breaks", FAILED))
    judged = unjudged.compare_to(BASELINE)
    assert unjudged.results[0].baseline is None
    assert judged.results[0].baseline is BaselineOutcome.REGRESSION
    assert judged.baseline is not None
    assert (judged.baseline.environment, judged.baseline.round) == ("dev", 0)
    assert judged.baseline.finished_at == BASELINE.finished_at


def test_summary_and_headline() -> None:
    summary = AFTER.summary
    assert (summary.total, summary.passed, summary.failed, summary.errors) == (7, 2, 4, 1)
    assert (summary.regressions, summary.pre_existing, summary.fixed, summary.blocking) == (2, 2, 1, 3)
    assert AFTER.headline == "2 of 7 passed"
    assert not AFTER.all_passed
    assert report(result("a", PASSED)).all_passed


def test_result_lookup_names_a_missing_case() -> None:
    assert AFTER.result("breaks").status is FAILED
    with pytest.raises(KeyError, match="no result for test case 'nope' in dev round 1"):
        AFTER.result("nope")


# --- JSON ---------------------------------------------------------------------------------------


def test_json_round_trip_keeps_everything() -> None:
    data = json.loads(json.dumps(AFTER.to_dict()))
    assert data["summary"]["blocking"] == 3
    assert data["results"][1]["baseline"] == "regression"
    assert data["started_at"] == "2026-03-03T09:00:00Z"
    assert TestReport.from_dict(data) == AFTER


def test_the_stored_summary_is_recomputed_not_trusted() -> None:
    data = AFTER.to_dict()
    data["summary"] = {"total": 0, "passed": 99}
    assert TestReport.from_dict(data).summary == AFTER.summary


def test_corrupt_stored_reports_are_rejected() -> None:
    data = AFTER.to_dict()
    data["results"][0]["status"] = "green"
    with pytest.raises(ValidationError, match="status"):
        TestReport.from_dict(data)


# --- JUnit XML ----------------------------------------------------------------------------------


def test_junit_xml_has_one_suite_with_counts_and_one_testcase_per_case() -> None:
    suite = ET.fromstring(AFTER.to_junit_xml())
    assert suite.tag == "testsuite"
    assert {key: suite.get(key) for key in ("tests", "failures", "errors", "skipped", "time")} == {
        "tests": "7",
        "failures": "4",
        "errors": "1",
        "skipped": "0",
        "time": "42.000",
    }
    assert suite.get("timestamp") == "2026-03-03T09:00:00"
    properties = {item.get("name"): item.get("value") for item in suite.iter("property")}
    assert properties == {
        "environment": "dev",
        "round": "1",
        "baseline_environment": "dev",
        "baseline_round": "0",
        "baseline_finished_at": "2026-03-02T09:00:42+00:00",
    }
    cases = suite.findall("testcase")
    assert [case.get("name") for case in cases][:2] == [
        "stays_green: stays_green title",
        "breaks: breaks title",
    ]
    assert all(case.get("classname") == "dev.command" and case.get("time") == "0.250" for case in cases)


def test_junit_failures_and_errors_carry_message_and_classification() -> None:
    suite = ET.fromstring(AFTER.to_junit_xml())
    by_id = {case.get("name").split(":")[0]: case for case in suite.findall("testcase")}
    assert list(by_id["stays_green"]) == []
    breaks = by_id["breaks"].find("failure")
    assert breaks is not None
    assert breaks.get("type") == "regression"
    assert breaks.get("message") == "exit code 1, expected 0"
    assert by_id["broken_before"].find("failure").get("type") == "pre_existing"
    crash = by_id["crashes_now"].find("error")
    assert crash is not None
    assert crash.get("message") == "timed out after 60 s"
    assert by_id["crashes_now"].find("failure") is None


def test_junit_output_goes_to_system_out_and_survives_control_characters() -> None:
    nasty = report(result("x", FAILED, 'bad <tag> & "quote"\x00', output="\x1b[31mred\x1b[0m <b>&amp;\x07\n"))
    suite = ET.fromstring(nasty.to_junit_xml())
    case = suite.find("testcase")
    assert case.find("system-out").text == "\ufffd[31mred\ufffd[0m <b>&amp;\ufffd\n"
    assert case.find("failure").get("message") == 'bad <tag> & "quote"\ufffd'
    assert case.find("failure").get("type") == "failed"


@given(st.text(max_size=200), st.text(max_size=200), st.text(max_size=50))
def test_junit_xml_parses_whatever_the_text(message: str, output: str, title: str) -> None:
    item = CaseResult(
        id="any", title=title, kind="sql", status=FAILED, message=message, output=output, duration=0
    )
    suite = ET.fromstring(report(item).to_junit_xml())
    assert suite.get("failures") == "1"
    assert len(suite.findall("testcase")) == 1


# --- markdown -----------------------------------------------------------------------------------


def test_markdown_headline_counts_and_a_row_per_case_blocking_first() -> None:
    text = AFTER.to_markdown()
    lines = text.splitlines()
    assert lines[0] == (
        "**2 of 7 passed** on dev, round 1, compared with the dev baseline (round 0, 2026-03-02 09:00 UTC)"
    )
    assert lines[2] == (
        "3 to fix · 2 regressions · 2 pre-existing (failed before the upgrade too)"
        " · 1 fixed · 1 could not run"
    )
    rows = [line for line in lines if line.startswith("| `")]
    assert [re.match(r"\| `(\w+)`", row).group(1) for row in rows] == [
        "breaks",
        "crashes_now",
        "brand_new",
        "broken_before",
        "errored_before",
        "stays_green",
        "gets_fixed",
    ]
    assert rows[0] == "| `breaks` breaks title | **failed** (regression) | exit code 1, expected 0 |"
    assert rows[1].startswith("| `crashes_now` crashes\\_now title | **error** (regression) | timed out")
    assert "| **failed** (not in baseline) |" in rows[2]
    assert "| failed (pre-existing) |" in rows[3]
    assert rows[6] == "| `gets_fixed` gets\\_fixed title | passed (fixed) |  |"


def test_markdown_table_cells_cannot_break_the_table() -> None:
    text = report(result("x", FAILED, "a | b\nnext line `code` *bold*")).to_markdown()
    row = next(line for line in text.splitlines() if line.startswith("| `x`"))
    assert row == "| `x` x title | **failed** | a \\| b next line \\`code\\` \\*bold\\* |"
    assert len(re.findall(r"(?<!\\)\|", row)) == 4


def test_markdown_shows_the_tail_of_failing_outputs_in_a_safe_fence() -> None:
    output = "\n".join(f"line {number}" for number in range(1, 41)) + "\n```\nnot the end of the block"
    text = report(result("x", FAILED, output=output), result("y", PASSED, output="quiet")).to_markdown()
    assert "**x** output (last 15 of 42 lines):" in text
    assert "line 27\n" not in text
    assert "line 28\n" in text
    assert "\n````text\n" in text
    assert text.rstrip().endswith("not the end of the block\n````")
    assert "quiet" not in text


def test_markdown_stays_within_its_budget_and_says_what_it_left_out() -> None:
    results = [result(f"case_{index}", FAILED, output="x" * 1000) for index in range(10)]
    text = report(*results).to_markdown(max_chars=4000)
    assert len(text) <= 4100
    assert "**case_0** output" in text
    assert "**case_9** output" not in text
    shown = text.count("** output")
    assert f"_Output of {10 - shown} more failing cases left out for space._" in text


def test_markdown_shortens_long_messages() -> None:
    text = report(result("x", FAILED, "m" * 1000)).to_markdown()
    row = next(line for line in text.splitlines() if line.startswith("| `x`"))
    assert "… \\[800 more characters\\]" in row
    assert len(row) < 300


def test_all_green_markdown_is_just_headline_and_table() -> None:
    text = report(result("a", PASSED), result("b", PASSED)).to_markdown()
    assert text == (
        "**2 of 2 passed** on dev, round 1\n\n| Case | Result | Message |\n|---|---|---|\n"
        "| `a` a title | passed |  |\n| `b` b title | passed |  |\n"
    )


# --- shortening ---------------------------------------------------------------------------------


def test_shorten_and_excerpt() -> None:
    assert shorten("abc", 5) == "abc"
    assert shorten("abcdefgh", 5) == "abcde… [3 more characters]"
    text = "head" + "-" * 100 + "tail"
    cut = excerpt(text, 30)
    assert cut.startswith("head")
    assert cut.endswith("tail")
    assert "[78 characters omitted]" in cut
    assert excerpt("short", 30) == "short"
