"""The fix-and-retest loop: one task per activity whose single try asks question after question.

"Fix Issues and Retest" and "Customer Sign-off" share everything but their first question, so the
machinery lives here once: reading the loop's state from the ledger, deciding the next step (by
:mod:`managed_upgrade.review.review_loop`), writing the question, then carrying out the answer: capture and
record a fix, run the retest, accept known issues, or abort with a restore -- and ask the next
question, until the loop ends. Asking (a run of the review DAG, waited for deferred) and resuming
are :class:`~managed_upgrade_airflow.gates.question_loop.QuestionLoopOperator`'s.

Any real error fails the task. Clearing it starts a new try that reads the ledger and continues where
the loop stood, running a retest that a crash left undone; questions keep their numbers.

Answers are checked by :func:`~managed_upgrade.review.review_loop.answer_problems`, not by the form
schema, so a wrong answer (no reason, a path climbing out of the install folder, a missing file)
is asked again with the reason on top of the next question instead of failing a weeks-long run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

from managed_upgrade.errors import OperationError
from managed_upgrade.messages import templating
from managed_upgrade.operations.fix_bundle import (
    BundleTooLargeError,
    FixApplyError,
    FixBundle,
    FixCaptureError,
    SqlScript,
    capture_files,
    new_provenance,
    sql_transaction,
)
from managed_upgrade.operations.restore import restore_backup
from managed_upgrade.review.review_loop import (
    ABORT,
    ACCEPT,
    RETEST,
    Action,
    AnswerRefused,
    Decision,
    GateAnswer,
    LoopHistory,
    Outcome,
    Question,
    RetestRequested,
    RoundReport,
    after_retest,
    answer_problems,
    environment_title,
    fix_request,
    fix_request_body,
    known_issues,
    question_limit,
)
from managed_upgrade.verification.report import TestReport
from managed_upgrade.verification.runner import DEFAULT_TIMEOUT
from managed_upgrade_airflow.gates.question_loop import QuestionLoopOperator
from managed_upgrade_airflow.gates.questions import ReviewQuestion, form_field_specs, optional_text
from managed_upgrade_airflow.hooks.crm_environment import CrmEnvironmentHook
from managed_upgrade_airflow.ledger_access import open_ledger
from managed_upgrade_airflow.testcase_executors import load_baseline, run_environment_tests

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig


def fix_form_fields() -> dict[str, Param]:
    """Form fields of a fix round (fresh objects: Airflow mutates a Param when it validates it)."""
    return {
        "fix_description": optional_text(
            "Fix description", "What you changed and why (required for Retest); recorded with the fix."
        ),
        "fix_files": Param(
            [], type="array", items={"type": "string"}, title="Files changed",
            description="Files you changed on the host, relative to the install folder, one per line "
            "(e.g. settings/custom.properties). They are captured with their checksums.",
        ),
        "fix_sql": optional_text(
            "SQL for the config database",
            "Runs when you choose Retest, in one transaction (no BEGIN/COMMIT); the same SQL "
            "runs on UAT and Production when fixes are transferred.",
        ),
        "known_issues_reason": optional_text(
            "Known issues: reason",
            "Required for 'Accept with known issues': why the failures may stay, who agreed.",
        ),
        "abort_reason": optional_text("Abort: reason", "Why you abort (for 'Abort and restore')."),
    }  # fmt: skip


def sign_off_form_fields(config: CustomerConfig) -> dict[str, Param]:
    contacts = [f"{contact.name} <{contact.email}>" for contact in config.contacts.customer]
    return {
        "customer_contact": Param(
            contacts[0] if contacts else "", type="string", title="Customer contact",
            description="Who signed off or rejected on the customer's side.",
        ),
        "feedback": optional_text(
            "Customer feedback", "What the customer said; required when they reject (what must be fixed)."
        ),
    }  # fmt: skip


def _when(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


class ReviewGate(QuestionLoopOperator):
    """Base of ``<env>.fix_and_retest`` and ``<env>.customer_sign_off`` (see the module docstring).

    :param config: the customer config (environment connections, test cases, ``fix_loop.max_rounds``,
        consultants as the users who answer)
    :param environment: ``dev``, ``uat`` or ``prod``
    :param backup_task_id: the task whose XCom ``backup_id`` is restored on abort
        (default ``<environment>.backup_environment``)
    :param case_timeout: seconds each test case of a retest may take
    :param answer_poll_seconds: how often the deferred task looks whether its question was answered
        (default: 1 s in a rehearsal run, 30 s otherwise)
    """

    in_sign_off: ClassVar[bool] = False

    def __init__(
        self,
        *,
        config: CustomerConfig,
        environment: str,
        backup_task_id: str | None = None,
        case_timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        config.environment(environment)  # unknown names fail when the DAG is built
        super().__init__(config=config, **kwargs)
        self.environment = environment
        self.backup_task_id = backup_task_id or f"{environment}.backup_environment"
        self.case_timeout = case_timeout

    # --- state ----------------------------------------------------------------------------------

    @property
    def env(self) -> Any:
        return self.config.environment(self.environment)

    @property
    def title(self) -> str:
        return environment_title(self.environment)

    @property
    def max_rounds(self) -> int:
        return int(self.config.fix_loop.max_rounds)

    @property
    def max_questions(self) -> int:
        return question_limit(self.max_rounds, in_sign_off=self.in_sign_off)

    def load_history(self, context: Context) -> LoopHistory:
        ti = context["ti"]
        with open_ledger() as ledger:
            reports = ledger.test_reports(ti.dag_id, ti.run_id, self.environment)
            fixes = ledger.fixes(ti.dag_id, ti.run_id, self.environment)
            answers = ledger.gate_answers(ti.dag_id, ti.run_id)
        return LoopHistory.from_ledger(self.environment, ti.task_id, reports, fixes, answers)

    def environment_issues(self, context: Context) -> list[Any]:
        """Known issues accepted on this environment by either review task of this run."""
        ti = context["ti"]
        with open_ledger() as ledger:
            rows = ledger.gate_answers(ti.dag_id, ti.run_id)
        prefix = f"{self.environment}."
        return known_issues(GateAnswer.from_ledger(row) for row in rows if row["task_id"].startswith(prefix))

    def decide(self, history: LoopHistory, question: int) -> Decision:
        raise NotImplementedError

    # --- the loop -------------------------------------------------------------------------------

    def next_question(self, context: Context, refusal: str | None = None) -> Any:
        """Retest what a crash left untested, then succeed or ask the next question.

        ``refusal`` says why the previous answer could not be carried out; the next question shows it.
        """
        history = self.load_history(context)
        number = history.next_question
        decision = self.decide(history, number)
        if decision.action is Action.RETEST and decision.pending_fix is not None:
            self.log.info(
                "Fix round %d was recorded but not retested (the task ended first): retesting now.",
                decision.pending_fix.round,
            )
            self.retest(context, decision.pending_fix.round + 1)
            history = self.load_history(context)
            decision = self.decide(history, number)
        if decision.action is Action.SUCCEED:
            return self.when_green(context, decision, history)
        if decision.action is not Action.ASK or decision.question is None:
            raise AirflowFailException(f"{self.environment}: the review loop is stuck at {decision}")
        if number > self.max_questions:
            raise AirflowFailException(
                f"{self.title}: {self.max_questions} questions asked without an answer that ends the review "
                f"(fix rounds used: {len(history.fixes_by_task)} of {self.max_rounds}). Clear this task "
                "to continue with the next question."
            )
        question = self.review_question(context, decision, history, number, refusal)
        self.log.info(
            "Question %d asks for %s (options %s) on %s round %d: %s",
            number,
            decision.question.value,
            ", ".join(decision.options),
            self.environment,
            decision.report.round,
            decision.report.headline,
        )
        raise self.ask_question(context, question)

    def review_question(
        self,
        context: Context,
        decision: Decision,
        history: LoopHistory,
        number: int,
        refusal: str | None = None,
    ) -> ReviewQuestion:
        """Subject, options, form fields and body of question ``number``."""
        if decision.question is Question.FIX:
            env = self.env
            subject = self.fix_subject(decision)
            fields = fix_form_fields()
            if RETEST not in decision.options:
                fields = {name: fields[name] for name in ("known_issues_reason", "abort_reason")}
            body = fix_request_body(
                decision,
                history,
                host=env.ssh_conn_id,
                install_path=env.install_path,
                database=env.db_conn_id,
                issues=self.environment_issues(context),
            )
            customer_wait = False
        else:
            subject, fields, body = self.sign_off_question(context, decision, history)
            customer_wait = True
        if refusal:  # after the note saying that the previous answer was refused
            note, _, rest = body.partition("\n\n") if body.startswith("> ") else ("", "", body)
            why = templating.render_body("review_refusal.md.j2", refusal=refusal)
            body = "\n\n".join(part for part in (note, why, rest) if part)
        return self.question(
            context,
            number,
            subject=subject,
            body=body,
            options=tuple(decision.options),
            customer_wait=customer_wait,
            fields=form_field_specs(fields),
        )

    def fix_subject(self, decision: Decision) -> str:
        return templating.render_body("fix_request.subject.txt.j2", env=self.title, report=decision.report)

    def sign_off_question(
        self, context: Context, decision: Decision, history: LoopHistory
    ) -> tuple[str, dict[str, Param], str]:
        raise NotImplementedError

    # --- the answer -----------------------------------------------------------------------------

    def answer_to(self, context: Context, number: int) -> GateAnswer | None:
        return self.load_history(context).answer_to(number)

    def carry_out(self, context: Context, answer: GateAnswer) -> Any:
        history = self.load_history(context)
        try:
            return self.on_answer(context, answer, history)
        except AnswerRefused as refused:
            self.log.warning("%s", refused)
            # problems with the answer itself are named by the next question's note already
            shown = bool(answer_problems(answer, self.decide(history, answer.question).options))
            return self.next_question(context, refusal=None if shown else str(refused))
        except RetestRequested as going_on:
            self.log.info("%s", going_on)
            return self.next_question(context)

    def on_answer(self, context: Context, given: GateAnswer, history: LoopHistory) -> Any:
        decision = self.decide(history, given.question)
        problems = answer_problems(given, decision.options)
        if problems:
            raise AnswerRefused(
                f"{self.environment}: answer of {given.responded_by} refused: {'; '.join(problems)}"
            )
        if given.option == ABORT:
            raise self.abort_and_restore(context, given)
        if given.option == RETEST:
            return self.fix_round(context, given, decision)
        if given.option == ACCEPT:
            return self.accepted(context, given, decision)
        return self.on_sign_off_answer(context, given, decision)

    def fix_round(self, context: Context, answer: GateAnswer, decision: Decision) -> Any:
        """Capture and record the fix, run its SQL here, retest; then succeed or ask again."""
        ti = context["ti"]
        request = fix_request(answer)
        round_number = decision.fix_round
        env = self.env
        with CrmEnvironmentHook(env.ssh_conn_id, env.db_conn_id, label=self.environment) as hook:
            host = hook.get_conn()
            try:
                files = capture_files(host, env.install_path, request.files)
                scripts = (SqlScript.of(self.environment, round_number, request.sql),) if request.sql else ()
                provenance = new_provenance(
                    environment=self.environment,
                    round_number=round_number,
                    task_id=ti.task_id,
                    question=answer.question,
                    recorded_by=answer.responded_by,
                    # the ledger stamps every answer it records; a bare one is recorded now
                    recorded_at=answer.responded_at or datetime.now(UTC),
                    description=request.description,
                    files=files,
                    sql=scripts,
                )
                bundle = FixBundle.create(files, scripts, [provenance])
                with (
                    sql_transaction(hook.db_target(), scripts, self.environment) as statements,
                    open_ledger() as ledger,
                ):
                    ledger.record_fix(
                        ti.dag_id,
                        ti.run_id,
                        self.environment,
                        round_number,
                        answer.responded_by,
                        request.description,
                        bundle.to_dict(),
                    )
            except (FixCaptureError, FixApplyError, BundleTooLargeError) as error:
                raise AnswerRefused(str(error)) from error
        self.log.info(
            "Recorded fix round %d of %s by %s: %d file(s) %s, %d SQL statement(s) run; bundle %s",
            round_number,
            self.environment,
            answer.responded_by,
            len(files),
            [item.path for item in files],
            statements,
            bundle.checksum,
        )
        report = self.retest(context, round_number + 1)
        retested = RoundReport(report.round, len(report.blocking_failures), report.headline)
        history = self.load_history(context)
        used = len(history.fixes_by_task)
        outcome = after_retest(retested, used, self.max_rounds, in_sign_off=self.in_sign_off)
        if outcome is Outcome.SUCCEED:
            return self.when_green(context, decision, history, answer=answer)
        if outcome is Outcome.EXHAUSTED:
            raise AirflowFailException(
                f"{self.title}: still {retested.blocking} failing after {used} fix rounds (the maximum "
                f"is {self.max_rounds}); last report: {self.environment} round {report.round}, "
                f"{report.headline} (ledger test_reports of run {ti.run_id}). Clear this task to accept "
                "the failures with a reason or to abort and restore."
            )
        if retested.green:
            raise RetestRequested(
                f"{self.environment} round {report.round} is green ({report.headline}) after the fix of "
                f"{answer.responded_by}; the next question asks for the customer's sign-off again"
            )
        raise RetestRequested(
            f"{self.environment} round {report.round}: {report.headline}, {retested.blocking} still to fix "
            f"after fix round {round_number}; the next question asks for the next fix"
        )

    def retest(self, context: Context, round_number: int) -> TestReport:
        ti = context["ti"]
        return run_environment_tests(
            self.config,
            self.environment,
            round_number=round_number,
            baseline=load_baseline(ti.dag_id, ti.run_id),
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            timeout=self.case_timeout,
        )

    def accepted(self, context: Context, answer: GateAnswer, decision: Decision) -> Any:
        raise NotImplementedError

    def when_green(
        self, context: Context, decision: Decision, history: LoopHistory, answer: GateAnswer | None = None
    ) -> Any:
        raise NotImplementedError

    def on_sign_off_answer(self, context: Context, answer: GateAnswer, decision: Decision) -> Any:
        raise AnswerRefused(f"{answer.option!r} is not an answer to this question")

    def abort_and_restore(self, context: Context, answer: GateAnswer) -> AirflowFailException:
        """Restore the backup taken just before this environment's upgrade; returns the failure to raise."""
        reason = answer.text("abort_reason") or answer.text("feedback") or "no reason given"
        who = f"{self.title} aborted by {answer.responded_by} at {_when(answer.responded_at)} ({reason})"
        backup = context["ti"].xcom_pull(task_ids=self.backup_task_id)
        backup_id = backup.get("backup_id") if isinstance(backup, dict) else None
        if not backup_id:
            return AirflowFailException(
                f"{who}, but there is no backup id in the XCom of {self.backup_task_id}: the environment "
                "was NOT restored. Restore it by hand from its latest backup."
            )
        env = self.env
        try:
            with CrmEnvironmentHook(env.ssh_conn_id, env.db_conn_id, label=self.environment) as hook:
                result = restore_backup(
                    hook.get_conn(),
                    env.install_path,
                    env.backup_path,
                    backup_id,
                    hook.db_target(),
                    allowed_roots=env.allowed_roots,
                )
        except (OperationError, ValueError) as error:
            return AirflowFailException(
                f"!!! {who}, and the RESTORE FAILED from backup {backup_id}: {error} -- manual recovery "
                "needed"
            )
        self.log.info("%s restored from %s in %.1fs", self.environment, backup_id, result.seconds)
        return AirflowFailException(
            f"{who}: the environment was restored to version {result.version} from backup {backup_id} "
            "(VERSION and `bin/crm status` verified). The run stops here."
        )

    # --- shared result --------------------------------------------------------------------------

    def loop_facts(self, history: LoopHistory, decision: Decision) -> dict[str, Any]:
        latest = history.latest_report or decision.report
        return {
            "environment": self.environment,
            "round": latest.round,
            "headline": latest.headline,
            "blocking": latest.blocking,
            "fix_rounds": [fix.round for fix in history.fixes_by_task],
        }
