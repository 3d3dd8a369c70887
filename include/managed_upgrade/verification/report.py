"""The result of one round of customer test cases, judged against the pre-upgrade baseline and rendered.

"Verify test cases in Dev" runs the customer's cases before anything is touched: that report is the
baseline. Every later round (sanity test, each retest) is compared with it, so a case that was already
failing is shown as ``pre_existing`` and not blamed on the upgrade, a case that passed before and fails
now is a ``regression``, and one that failed before and passes now is ``fixed``. Only failures that are
not pre-existing block the fix loop (:attr:`TestReport.blocking_failures`).

A report travels as JSON (:meth:`TestReport.to_dict` / :meth:`TestReport.from_dict`, for XCom and the
ledger), as JUnit XML (:meth:`TestReport.to_junit_xml`, for tools) and as compact markdown
(:meth:`TestReport.to_markdown`, the body of the consultant's review gate).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from datetime import UTC
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, computed_field

from managed_upgrade.markdown import md

CaseKind = Literal["command", "sql", "http"]

MESSAGE_LIMIT = 500
"""Characters of a mismatch message kept in a result (expected vs actual, shortened)."""

OUTPUT_LIMIT = 8000
"""Characters of a case's output kept in a result (head and tail)."""


class CaseStatus(StrEnum):
    """How one case ended: ``failed`` is a wrong answer, ``error`` is no answer (exception, timeout)."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"


class BaselineOutcome(StrEnum):
    """A case's result read against its result in the baseline report."""

    STILL_PASSING = "still_passing"
    FIXED = "fixed"
    REGRESSION = "regression"
    PRE_EXISTING = "pre_existing"
    NOT_IN_BASELINE = "not_in_baseline"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CaseResult(_Frozen):
    """One case's verdict with the evidence a consultant needs to act on it."""

    id: str
    title: str
    kind: CaseKind
    status: CaseStatus
    message: str = Field(default="", description="Why it failed: expected vs actual, shortened.")
    output: str = Field(default="", description="Excerpt of what the check produced.")
    duration: float = Field(ge=0, description="Seconds.")
    baseline: BaselineOutcome | None = Field(
        default=None, description="Set by TestReport.compare_to; None when not compared."
    )

    @property
    def failing(self) -> bool:
        """Failed or errored."""
        return self.status is not CaseStatus.PASSED

    @property
    def blocking(self) -> bool:
        """Failing for a reason the upgrade may have caused (anything but a pre-existing failure)."""
        return self.failing and self.baseline is not BaselineOutcome.PRE_EXISTING


class BaselineRef(_Frozen):
    """Which report a comparison was made against."""

    environment: str
    round: int
    finished_at: AwareDatetime


class ReportSummary(_Frozen):
    """Counts for headlines, dashboards and the ledger."""

    total: int
    passed: int
    failed: int
    errors: int
    regressions: int
    pre_existing: int
    fixed: int
    blocking: int


class TestReport(_Frozen):
    """All case results of one round on one environment, optionally compared with a baseline."""

    __test__ = False  # not a pytest test class, despite the name

    environment: str
    round: int = Field(ge=0, description="0 for the baseline, 1 for the first sanity test, then retests.")
    started_at: AwareDatetime
    finished_at: AwareDatetime
    results: tuple[CaseResult, ...]
    baseline: BaselineRef | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def summary(self) -> ReportSummary:
        """Counts of the results (part of :meth:`to_dict`; recomputed, never read back)."""
        outcomes = [result.baseline for result in self.results]
        return ReportSummary(
            total=len(self.results),
            passed=sum(result.status is CaseStatus.PASSED for result in self.results),
            failed=sum(result.status is CaseStatus.FAILED for result in self.results),
            errors=sum(result.status is CaseStatus.ERROR for result in self.results),
            regressions=outcomes.count(BaselineOutcome.REGRESSION),
            pre_existing=outcomes.count(BaselineOutcome.PRE_EXISTING),
            fixed=outcomes.count(BaselineOutcome.FIXED),
            blocking=len(self.blocking_failures),
        )

    @property
    def headline(self) -> str:
        """``"3 of 4 passed"``."""
        passed = sum(not result.failing for result in self.results)
        return f"{passed} of {len(self.results)} passed"

    @property
    def all_passed(self) -> bool:
        return not any(result.failing for result in self.results)

    @property
    def blocking_failures(self) -> tuple[CaseResult, ...]:
        """Failures the fix loop must address: all failures except those already failing in the baseline."""
        return tuple(result for result in self.results if result.blocking)

    def result(self, case_id: str) -> CaseResult:
        """The result of ``case_id`` (``KeyError`` if the case did not run in this round)."""
        for result in self.results:
            if result.id == case_id:
                return result
        raise KeyError(f"no result for test case {case_id!r} in {self.environment} round {self.round}")

    def compare_to(self, baseline: TestReport) -> TestReport:
        """This report with every result classified against ``baseline`` (matched by case id)."""
        before = {result.id: result for result in baseline.results}
        compared = tuple(
            result.model_copy(update={"baseline": _classify(result, before.get(result.id))})
            for result in self.results
        )
        reference = BaselineRef(
            environment=baseline.environment, round=baseline.round, finished_at=baseline.finished_at
        )
        return self.model_copy(update={"results": compared, "baseline": reference})

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (ISO timestamps, plain strings) for XCom and the ledger."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TestReport:
        """Inverse of :meth:`to_dict`; the stored ``summary`` is ignored and recomputed."""
        fields = {key: value for key, value in data.items() if key != "summary"}
        return cls.model_validate(fields)

    def to_junit_xml(self) -> str:
        """One ``<testsuite>`` with a ``<testcase>`` per case (see :func:`render_junit_xml`)."""
        return render_junit_xml(self)

    def to_markdown(self, *, max_chars: int = 6000) -> str:
        """Compact review text (see :func:`render_markdown`)."""
        return render_markdown(self, max_chars=max_chars)


def _classify(result: CaseResult, before: CaseResult | None) -> BaselineOutcome:
    if before is None:
        return BaselineOutcome.NOT_IN_BASELINE
    if before.failing:
        return BaselineOutcome.PRE_EXISTING if result.failing else BaselineOutcome.FIXED
    return BaselineOutcome.REGRESSION if result.failing else BaselineOutcome.STILL_PASSING


# --- shortening ---------------------------------------------------------------------------------


def shorten(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` cut to about ``limit`` characters at the end, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters]"


def excerpt(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """Head and tail of ``text`` within about ``limit`` characters (errors are often at the end)."""
    if len(text) <= limit:
        return text
    head = limit // 3
    tail = limit - head
    return f"{text[:head]}\n… [{len(text) - limit} characters omitted] …\n{text[-tail:]}"


# --- JUnit XML ----------------------------------------------------------------------------------

_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_JUNIT_TIMESTAMP = "%Y-%m-%dT%H:%M:%S"


def _xml_text(text: str) -> str:
    """XML 1.0 cannot carry most control characters (ANSI colours, NULs): show them as U+FFFD."""
    return _XML_INVALID.sub("\ufffd", text)


def render_junit_xml(report: TestReport) -> str:
    """JUnit XML: failures as ``<failure type="regression|pre_existing|...">``, errors as ``<error>``."""
    summary = report.summary
    suite = ET.Element(
        "testsuite",
        {
            "name": f"sanity tests {report.environment} round {report.round}",
            "tests": str(summary.total),
            "failures": str(summary.failed),
            "errors": str(summary.errors),
            "skipped": "0",
            "time": f"{_seconds(report):.3f}",
            "timestamp": report.started_at.astimezone(UTC).strftime(_JUNIT_TIMESTAMP),
            "hostname": _xml_text(report.environment),
        },
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in _suite_properties(report):
        ET.SubElement(properties, "property", {"name": name, "value": _xml_text(value)})
    for result in report.results:
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": _xml_text(f"{report.environment}.{result.kind}"),
                "name": _xml_text(f"{result.id}: {result.title}"),
                "time": f"{result.duration:.3f}",
            },
        )
        if result.failing:
            tag = "error" if result.status is CaseStatus.ERROR else "failure"
            problem = ET.SubElement(
                case,
                tag,
                {
                    "message": _xml_text(shorten(result.message.replace("\n", " "), 300)),
                    "type": result.baseline.value if result.baseline else result.status.value,
                },
            )
            problem.text = _xml_text(result.message)
        if result.output:
            ET.SubElement(case, "system-out").text = _xml_text(result.output)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _seconds(report: TestReport) -> float:
    return max((report.finished_at - report.started_at).total_seconds(), 0.0)


def _suite_properties(report: TestReport) -> Iterable[tuple[str, str]]:
    yield "environment", report.environment
    yield "round", str(report.round)
    if report.baseline is not None:
        yield "baseline_environment", report.baseline.environment
        yield "baseline_round", str(report.baseline.round)
        yield "baseline_finished_at", report.baseline.finished_at.isoformat()


# --- markdown -----------------------------------------------------------------------------------

_TABLE_MESSAGE_LIMIT = 200
_OUTPUT_LINES = 15
_OUTPUT_CHARS = 1200


def _result_label(result: CaseResult) -> str:
    if not result.failing:
        return "passed (fixed)" if result.baseline is BaselineOutcome.FIXED else "passed"
    word = result.status.value
    if result.baseline is BaselineOutcome.PRE_EXISTING:
        return f"{word} (pre-existing)"
    if result.baseline is BaselineOutcome.REGRESSION:
        return f"**{word}** (regression)"
    if result.baseline is BaselineOutcome.NOT_IN_BASELINE:
        return f"**{word}** (not in baseline)"
    return f"**{word}**"


def _order(result: CaseResult) -> int:
    """Blocking failures first, then pre-existing ones, then passes."""
    return 0 if result.blocking else 1 if result.failing else 2


def render_markdown(report: TestReport, *, max_chars: int = 6000) -> str:
    """Headline, one table row per case, then output excerpts of failing cases while space remains.

    Messages in the table are cut at 200 characters and each output at 15 lines; outputs that no
    longer fit in ``max_chars`` are left out with a note (the JSON and JUnit forms keep them).
    """
    summary = report.summary
    lines = [f"**{report.headline}** on {report.environment}, round {report.round}"]
    if report.baseline is not None:
        lines[0] += (
            f", compared with the {report.baseline.environment} baseline"
            f" (round {report.baseline.round}, {report.baseline.finished_at:%Y-%m-%d %H:%M %Z})"
        )
    notes = []
    if summary.blocking:
        notes.append(f"{summary.blocking} to fix")
    if summary.regressions:
        notes.append(f"{summary.regressions} regression{'s' if summary.regressions != 1 else ''}")
    if summary.pre_existing:
        notes.append(f"{summary.pre_existing} pre-existing (failed before the upgrade too)")
    if summary.fixed:
        notes.append(f"{summary.fixed} fixed")
    if summary.errors:
        notes.append(f"{summary.errors} could not run")
    if notes:
        lines.append("")
        lines.append(" · ".join(notes))
    lines += ["", "| Case | Result | Message |", "|---|---|---|"]
    ordered = sorted(report.results, key=_order)
    for result in ordered:
        case = f"`{result.id}` {md(result.title)}"
        message = md(shorten(" ".join(result.message.split()), _TABLE_MESSAGE_LIMIT))
        lines.append(f"| {case} | {_result_label(result)} | {message} |")
    text = "\n".join(lines) + "\n"

    failing_with_output = [result for result in ordered if result.failing and result.output]
    for shown, result in enumerate(failing_with_output):
        block = _output_block(result)
        if len(text) + len(block) > max_chars:
            left = len(failing_with_output) - shown
            text += f"\n_Output of {left} more failing case{'s' if left != 1 else ''} left out for space._\n"
            break
        text += block
    return text


def _output_block(result: CaseResult) -> str:
    lines = result.output.splitlines()
    body = "\n".join(lines[-_OUTPUT_LINES:])
    note = ""
    if len(lines) > _OUTPUT_LINES:
        note = f" (last {_OUTPUT_LINES} of {len(lines)} lines)"
    if len(body) > _OUTPUT_CHARS:
        body = body[-_OUTPUT_CHARS:]
        note = f" (last {_OUTPUT_CHARS} characters)"
    longest_backtick_run = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest_backtick_run + 1)
    return f"\n**{result.id}** output{note}:\n\n{fence}text\n{body}\n{fence}\n"
