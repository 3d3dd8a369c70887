"""Decides what each question of "Fix Issues and Retest" and "Customer Sign-off" asks, from the ledger alone.

Why questions within one task: the seed's "Fix issues and retest" repeats until the environment is
green, and a customer may reject a hand-over and send the consultant back to fixing. Unrolling one
task per round would bury the Grid and the Gantt chart under a wall of tasks and needs a maximum fixed
at parse time. So each activity is ONE task whose single try runs the whole loop: it asks a question,
waits deferred (no worker slot) for the answer, carries it out (capture the fix, retest, ...) and asks
the next question, until the environment is green, accepted with known issues, signed off or aborted.

Each question is a run of the review DAG; ``managed_upgrade_airflow.gates.questions`` explains why.

Why the ledger: the loop's state (test reports per round, fixes per round, every answer) lives in the
project ledger, so a crashed or cleared task continues where the loop stood. The functions here turn
those rows into the next step -- run a pending retest, succeed, or ask which question (fix request or
sign-off) with which options -- and validate answers. They are pure, so every path is unit-tested
without Airflow.

Rounds: test round 1 is the sanity test, round ``n + 1`` the retest after fix round ``n``; a fix is
recorded under the number of the report it answers. ``max_rounds`` (the customer config's
``fix_loop.max_rounds``) bounds the fix rounds one task may record; when they are used up, the gate
offers only "Accept with known issues" and "Abort and restore". Questions are numbered 1, 2, ... per
task and run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from managed_upgrade.messages.templating import render_body
from managed_upgrade.operations.fix_bundle import (
    FixSqlError,
    UnsafeFixPathError,
    check_fix_sql,
    require_fix_path,
)
from managed_upgrade.verification.report import TestReport

RETEST = "Retest"
ACCEPT = "Accept with known issues"
ABORT = "Abort and restore"
SIGNED_OFF = "Signed off"
REJECTED = "Rejected: fix and retest"

FIX_OPTIONS = (RETEST, ACCEPT, ABORT)
EXHAUSTED_OPTIONS = (ACCEPT, ABORT)
SIGN_OFF_OPTIONS = (SIGNED_OFF, REJECTED, ABORT)

FIX_PARAMS = ("fix_description", "fix_files", "fix_sql", "known_issues_reason", "abort_reason")
SIGN_OFF_PARAMS = ("customer_contact", "feedback")

REFUSED_ANSWER_ALLOWANCE = 5
"""Questions beyond the rounds themselves, for answers that had to be refused and asked again."""

ENVIRONMENT_TITLES = {"dev": "Development", "uat": "UAT", "prod": "Production"}


class RetestRequested(Exception):
    """The review goes on with another question: a retest left failures, or the customer wants changes."""


class AnswerRefused(Exception):
    """An answer cannot be carried out as given; the next question asks again and says why."""


class ReviewStateError(RuntimeError):
    """The ledger does not hold what the loop needs (e.g. no test report of the environment yet)."""


def question_limit(max_rounds: int, *, in_sign_off: bool) -> int:
    """How many questions one review task may ask before it gives up.

    A fix loop asks once per fix round; a sign-off also asks for each rejection and return to the
    customer. Refused answers get a few more, so a typo does not fail a weeks-long run.
    """
    return (3 if in_sign_off else 1) * max_rounds + REFUSED_ANSWER_ALLOWANCE


# --- facts from the ledger ----------------------------------------------------------------------


@dataclass(frozen=True)
class RoundReport:
    """One test round of the environment, as far as the loop cares."""

    round: int
    blocking: int
    headline: str
    markdown: str = ""

    @property
    def green(self) -> bool:
        return self.blocking == 0

    @classmethod
    def from_ledger(cls, row: Mapping[str, Any]) -> RoundReport:
        report = TestReport.from_dict(row["report"])
        return cls(
            round=int(row["round"]),
            blocking=len(report.blocking_failures),
            headline=report.headline,
            markdown=str(row.get("markdown") or ""),
        )


@dataclass(frozen=True)
class RecordedFix:
    """A fix round in the ledger: which task and question recorded it, and what it holds."""

    round: int
    task_id: str
    question: int
    recorded_by: str
    recorded_at: datetime | None
    description: str
    files: tuple[str, ...] = ()
    sql_statements: int = 0

    @classmethod
    def from_ledger(cls, row: Mapping[str, Any]) -> RecordedFix:
        bundle = row.get("bundle") or {}
        own = [
            item
            for item in bundle.get("provenance") or []
            if item.get("round") == row["round"] and item.get("environment") == row.get("environment")
        ]
        provenance = own[-1] if own else {}
        return cls(
            round=int(row["round"]),
            task_id=str(provenance.get("task_id", "")),
            question=int(provenance.get("question", 0)),
            recorded_by=str(row.get("recorded_by") or provenance.get("recorded_by") or ""),
            recorded_at=row.get("recorded_at"),
            description=str(row.get("description") or ""),
            files=tuple(item["path"] for item in bundle.get("files") or []),
            sql_statements=sum(int(item.get("statements", 0)) for item in bundle.get("sql") or []),
        )


@dataclass(frozen=True)
class GateAnswer:
    """One answer to one question of a gate."""

    task_id: str
    question: int
    responded_by: str
    responded_at: datetime | None
    options: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def option(self) -> str | None:
        return self.options[0] if self.options else None

    def text(self, name: str) -> str:
        value = self.params.get(name)
        return value.strip() if isinstance(value, str) else ""

    @classmethod
    def from_ledger(cls, row: Mapping[str, Any]) -> GateAnswer:
        return cls(
            task_id=str(row["task_id"]),
            question=int(row.get("question") or 0),
            responded_by=str(row.get("responded_by") or "unknown"),
            responded_at=row.get("responded_at"),
            options=tuple(row.get("chosen_options") or ()),
            params=dict(row.get("params_input") or {}),
        )


@dataclass(frozen=True)
class LoopHistory:
    """Everything the ledger knows about one environment's review in one run, for one task."""

    environment: str
    task_id: str
    reports: tuple[RoundReport, ...]
    fixes: tuple[RecordedFix, ...]
    answers: tuple[GateAnswer, ...]
    """Answers to ``task_id`` only."""

    @classmethod
    def from_ledger(
        cls,
        environment: str,
        task_id: str,
        reports: Iterable[Mapping[str, Any]],
        fixes: Iterable[Mapping[str, Any]],
        answers: Iterable[Mapping[str, Any]],
    ) -> LoopHistory:
        """From ``Ledger.test_reports`` / ``fixes`` / ``gate_answers`` rows (other environments and tasks
        are dropped)."""
        return cls(
            environment=environment,
            task_id=task_id,
            reports=tuple(
                sorted(
                    (
                        RoundReport.from_ledger(row)
                        for row in reports
                        if row.get("environment", environment) == environment
                    ),
                    key=lambda report: report.round,
                )
            ),
            fixes=tuple(
                sorted(
                    (
                        RecordedFix.from_ledger(row)
                        for row in fixes
                        if row.get("environment", environment) == environment
                    ),
                    key=lambda fix: fix.round,
                )
            ),
            answers=tuple(
                sorted(
                    (GateAnswer.from_ledger(row) for row in answers if row["task_id"] == task_id),
                    key=lambda answer: answer.question,
                )
            ),
        )

    @property
    def latest_report(self) -> RoundReport | None:
        """The latest test round after the baseline (round 0 is never the subject of a fix)."""
        rounds = [report for report in self.reports if report.round >= 1]
        return rounds[-1] if rounds else None

    def report(self, round_number: int) -> RoundReport | None:
        return next((report for report in self.reports if report.round == round_number), None)

    @property
    def fixes_by_task(self) -> tuple[RecordedFix, ...]:
        return tuple(fix for fix in self.fixes if fix.task_id == self.task_id)

    def fix_of_question(self, question: int) -> RecordedFix | None:
        return next(
            (fix for fix in self.fixes if fix.task_id == self.task_id and fix.question == question), None
        )

    @property
    def next_question(self) -> int:
        """The number of the question to ask now: one after the latest answered (1 for the first)."""
        return max((answer.question for answer in self.answers), default=0) + 1

    def answer_to(self, question: int) -> GateAnswer | None:
        """The answer to question ``question`` (the latest, if a cleared task asked it again)."""
        given = [answer for answer in self.answers if answer.question == question]
        return given[-1] if given else None

    def previous_answer(self, question: int) -> GateAnswer | None:
        """The answer to the latest earlier question of this task (``None`` if none was answered)."""
        earlier = [answer for answer in self.answers if answer.question < question]
        return earlier[-1] if earlier else None

    def pending_retest(self) -> RecordedFix | None:
        """A fix recorded but not retested yet (its task ended before the retest report was saved)."""
        latest = self.latest_report
        if not self.fixes or latest is None:
            return None
        fix = self.fixes[-1]
        return fix if fix.round >= latest.round else None


# --- answers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixRequest:
    """A valid "Retest" answer: what was fixed, which files on the host, which SQL."""

    description: str
    files: tuple[str, ...]
    sql: str


def answer_files(value: Any) -> tuple[list[str], list[str]]:
    """``fix_files`` as a list of paths (a list, or text with one path per line) and its problems."""
    if value is None:
        return [], []
    items = value.splitlines() if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return [], [f"fix_files must be a list of paths, got {type(value).__name__}"]
    paths, problems = [], []
    for item in items:
        if not isinstance(item, str):
            problems.append(f"fix_files holds {item!r}, not a path")
            continue
        for line in item.splitlines():  # a form may hand over several lines as one item
            path = line.strip()
            if not path:
                continue
            try:
                paths.append(require_fix_path(path))
            except UnsafeFixPathError as error:
                problems.append(str(error))
    return list(dict.fromkeys(paths)), problems


def _retest_problems(answer: GateAnswer) -> list[str]:
    problems = []
    if not answer.text("fix_description"):
        problems.append("Retest needs a fix description: what did you change, and why")
    problems += answer_files(answer.params.get("fix_files"))[1]
    sql = answer.params.get("fix_sql")
    if sql is not None and not isinstance(sql, str):
        problems.append(f"fix_sql must be text, got {type(sql).__name__}")
    elif sql and sql.strip():
        try:
            check_fix_sql(sql)
        except FixSqlError as error:
            problems.append(str(error))
    return problems


REQUIRED_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    ACCEPT: (("known_issues_reason", "a reason: why the remaining failures may stay, and who agreed"),),
    SIGNED_OFF: (("customer_contact", "the customer contact who signed off"),),
    REJECTED: (
        ("customer_contact", "the customer contact who rejected"),
        ("feedback", "the customer's feedback: what must be fixed"),
    ),
    ABORT: (),
}
"""Text fields each option needs filled in (``Retest`` has its own rules)."""


def answer_problems(answer: GateAnswer, allowed: Sequence[str] | None = None) -> list[str]:
    """Why ``answer`` cannot be carried out (empty when it can). ``allowed``: the options offered."""
    option = answer.option
    if option is None:
        return ["no option was chosen"]
    if allowed is not None and option not in allowed:
        return [f"{option!r} was not offered (choose one of {', '.join(allowed)})"]
    if option == RETEST:
        return _retest_problems(answer)
    if option not in REQUIRED_FIELDS:
        return [f"unknown option {option!r}"]
    return [
        f"{option} needs {what} ({name})" for name, what in REQUIRED_FIELDS[option] if not answer.text(name)
    ]


def fix_request(answer: GateAnswer) -> FixRequest:
    """The fix a valid "Retest" answer describes (:class:`AnswerRefused` if it is not valid)."""
    problems = answer_problems(answer, (RETEST,))
    if problems:
        raise AnswerRefused("; ".join(problems))
    files, _ = answer_files(answer.params.get("fix_files"))
    sql = answer.params.get("fix_sql") or ""
    return FixRequest(
        description=answer.text("fix_description"), files=tuple(files), sql=sql if sql.strip() else ""
    )


# --- the next step ------------------------------------------------------------------------------


class Action(StrEnum):
    SUCCEED = "succeed"
    """Nothing to ask: the environment is green (or a review needs no question)."""
    RETEST = "retest"
    """A fix was recorded but its retest never ran: run it before anything else."""
    ASK = "ask"
    """Open the gate with :attr:`Decision.question`."""


class Question(StrEnum):
    FIX = "fix"
    SIGN_OFF = "sign_off"


@dataclass(frozen=True)
class Decision:
    """What the task does next."""

    action: Action
    report: RoundReport
    question: Question | None = None
    options: tuple[str, ...] = ()
    rounds_used: int = 0
    max_rounds: int = 0
    note: str | None = None
    """Why the previous answer was not carried out (shown at the top of the gate)."""
    rejection: GateAnswer | None = None
    """The customer's rejection this fix round answers (sign-off only)."""
    pending_fix: RecordedFix | None = None

    @property
    def fix_round(self) -> int:
        """The number a fix recorded after this question gets: the round of the report it answers."""
        return self.report.round

    @property
    def rounds_left(self) -> int:
        return max(self.max_rounds - self.rounds_used, 0)


def _require_report(history: LoopHistory) -> RoundReport:
    report = history.latest_report
    if report is None:
        raise ReviewStateError(
            f"no test report of {history.environment} in this run's ledger; the sanity test task saves "
            "round 1 before the fix loop runs"
        )
    return report


def _note(history: LoopHistory, question: int) -> str | None:
    """Why the previous answer was not carried out, if it was not."""
    answer = history.previous_answer(question)
    if answer is None or answer.option == ABORT:
        return None
    problems = answer_problems(answer)
    if not problems and (answer.option != RETEST or history.fix_of_question(answer.question) is not None):
        return None
    return render_body("refused_answer.txt.j2", answer=answer, problems=problems)


def _fix_options(history: LoopHistory, max_rounds: int) -> tuple[tuple[str, ...], int]:
    used = len(history.fixes_by_task)
    return (FIX_OPTIONS if used < max_rounds else EXHAUSTED_OPTIONS), used


def decide_fix_and_retest(history: LoopHistory, question: int, max_rounds: int) -> Decision:
    """The next step of "Fix Issues and Retest" as question ``question``."""
    report = _require_report(history)
    pending = history.pending_retest()
    if pending is not None:
        return Decision(Action.RETEST, report, pending_fix=pending, max_rounds=max_rounds)
    options, used = _fix_options(history, max_rounds)
    if report.green:
        return Decision(Action.SUCCEED, report, rounds_used=used, max_rounds=max_rounds)
    return Decision(
        Action.ASK,
        report,
        Question.FIX,
        options,
        rounds_used=used,
        max_rounds=max_rounds,
        note=_note(history, question),
    )


def decide_sign_off(history: LoopHistory, question: int, max_rounds: int) -> Decision:
    """The next step of "Customer Sign-off" as question ``question``: the sign-off question or a fix round."""
    report = _require_report(history)
    pending = history.pending_retest()
    if pending is not None:
        return Decision(Action.RETEST, report, pending_fix=pending, max_rounds=max_rounds)
    previous = history.previous_answer(question)
    note = _note(history, question)
    rejection = _latest_rejection(history, question)
    if previous is None or previous.option in (SIGNED_OFF, ABORT, None):
        kind = Question.SIGN_OFF
    elif note is not None:  # ask the refused question again
        kind = Question.FIX if previous.option in (RETEST, ACCEPT) else Question.SIGN_OFF
    elif previous.option == REJECTED:
        kind = Question.FIX
    elif previous.option == RETEST:
        kind = Question.SIGN_OFF if report.green else Question.FIX
    else:  # accepted with known issues: back to the customer
        kind = Question.SIGN_OFF
    if kind is Question.SIGN_OFF:
        return Decision(
            Action.ASK,
            report,
            Question.SIGN_OFF,
            SIGN_OFF_OPTIONS,
            rounds_used=len(history.fixes_by_task),
            max_rounds=max_rounds,
            note=note,
        )
    options, used = _fix_options(history, max_rounds)
    return Decision(
        Action.ASK,
        report,
        Question.FIX,
        options,
        rounds_used=used,
        max_rounds=max_rounds,
        note=note,
        rejection=rejection,
    )


def _latest_rejection(history: LoopHistory, question: int) -> GateAnswer | None:
    rejections = [
        answer
        for answer in history.answers
        if answer.question < question and answer.option == REJECTED and not answer_problems(answer)
    ]
    return rejections[-1] if rejections else None


class Outcome(StrEnum):
    SUCCEED = "succeed"
    ASK_AGAIN = "ask_again"
    EXHAUSTED = "exhausted"


def after_retest(report: RoundReport, rounds_used: int, max_rounds: int, *, in_sign_off: bool) -> Outcome:
    """What a retest's report means: done, another question (a fix round or the sign-off), or give up.

    In "Fix Issues and Retest" a green report ends the task. In the sign-off, a green report sends the
    review back to the customer, so it is another question as well.
    """
    if report.green:
        return Outcome.ASK_AGAIN if in_sign_off else Outcome.SUCCEED
    if rounds_used >= max_rounds:
        return Outcome.EXHAUSTED
    return Outcome.ASK_AGAIN


@dataclass(frozen=True)
class KnownIssue:
    """Failures accepted with a reason instead of fixed."""

    task_id: str
    question: int
    accepted_by: str
    accepted_at: datetime | None
    reason: str


def _answered_order(answer: GateAnswer) -> tuple[bool, float, int]:
    at = answer.responded_at
    return (at is None, at.timestamp() if at is not None else 0.0, answer.question)


def known_issues(answers: Iterable[GateAnswer]) -> list[KnownIssue]:
    """Every valid "Accept with known issues" answer, oldest first."""
    return [
        KnownIssue(
            answer.task_id,
            answer.question,
            answer.responded_by,
            answer.responded_at,
            answer.text("known_issues_reason"),
        )
        for answer in sorted(answers, key=_answered_order)
        if answer.option == ACCEPT and not answer_problems(answer)
    ]


# --- what the gate shows: facts here, wording in fix_request.md.j2 and sign_off.md.j2 -------------


def environment_title(environment: str) -> str:
    return ENVIRONMENT_TITLES.get(environment, environment)


def _rounds(history: LoopHistory) -> list[tuple[RoundReport, RecordedFix | None]]:
    """Each test round after the baseline with the fix recorded for it (the latest, if several)."""
    fixes = {fix.round: fix for fix in history.fixes}
    return [(report, fixes.get(report.round)) for report in history.reports if report.round >= 1]


def fix_request_body(
    decision: Decision,
    history: LoopHistory,
    *,
    host: str,
    install_path: str,
    database: str,
    issues: Sequence[KnownIssue] = (),
) -> str:
    """The gate body of a fix round: the report, the loop so far and how to answer."""
    rounds = _rounds(history)
    return render_body(
        "fix_request.md.j2",
        decision=decision,
        env=environment_title(history.environment),
        rounds=rounds,
        show_rounds=len(rounds) > 1 or bool(history.fixes),
        issues=issues,
        host=host,
        install_path=install_path,
        database=database,
    )


def sign_off_body(
    decision: Decision,
    history: LoopHistory,
    *,
    version: str,
    customer_contacts: Sequence[str],
    issues: Sequence[KnownIssue] = (),
) -> str:
    """The gate body of the sign-off question: the hand-over facts the customer signs."""
    return render_body(
        "sign_off.md.j2",
        decision=decision,
        env=environment_title(history.environment),
        history=history,
        version=version,
        customer_contacts=customer_contacts,
        issues=issues,
    )
