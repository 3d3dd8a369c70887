"""<Environment> > Fix Issues and Retest: the consultant fixes failures until the environment is green.

One task runs all fix rounds (see :mod:`managed_upgrade.review.review_loop` for why). It reads the
environment's latest test report from the ledger: with no blocking failure it succeeds at once
("no fixes needed"); otherwise it asks the consultant, with the report and the rounds so far, to fix
on the host and answer "Retest" (the fix is captured, its SQL run, the tests run again, and the next
round asked if failures remain), "Accept with known issues" (reason required) or "Abort and restore".
The shared machinery is :class:`~managed_upgrade_airflow.gates.review.ReviewGate`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from managed_upgrade.review.review_loop import Decision, GateAnswer, LoopHistory, decide_fix_and_retest
from managed_upgrade_airflow.gates.review import ReviewGate

if TYPE_CHECKING:
    from airflow.sdk import Context


def _when(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else None


class FixAndRetestOperator(ReviewGate):
    """``<env>.fix_and_retest``: up to ``config.fix_loop.max_rounds`` fix rounds, answered by consultants.

    XCom on success: ``{environment, outcome: "no_fixes_needed" | "green" | "accepted_with_known_issues",
    round, headline, blocking, fix_rounds: [rounds this task recorded], known_issues: str (the reason
    when accepted, else ""), decided_by, decided_at}``. Abort fails the task (``AirflowFailException``)
    after restoring the backup of ``<env>.backup_environment``.

    :param config: / :param environment: / :param backup_task_id: / :param case_timeout: see
        :class:`~managed_upgrade_airflow.gates.review.ReviewGate`
    """

    ui_color = "#fce8e6"

    def decide(self, history: LoopHistory, question: int) -> Decision:
        return decide_fix_and_retest(history, question, self.max_rounds)

    def when_green(
        self, context: Context, decision: Decision, history: LoopHistory, answer: GateAnswer | None = None
    ) -> dict[str, Any]:
        facts = self.loop_facts(history, decision)
        outcome = "green" if facts["fix_rounds"] else "no_fixes_needed"
        self.log.info("%s is green (%s): %s", self.environment, facts["headline"], outcome)
        return {
            **facts,
            "outcome": outcome,
            "known_issues": "",
            "decided_by": answer.responded_by if answer else None,
            "decided_at": _when(answer.responded_at) if answer else None,
        }

    def accepted(self, context: Context, answer: GateAnswer, decision: Decision) -> dict[str, Any]:
        reason = answer.text("known_issues_reason")
        self.log.info(
            "%s accepted with known issues by %s (%d failing): %s",
            self.environment,
            answer.responded_by,
            decision.report.blocking,
            reason,
        )
        return {
            **self.loop_facts(self.load_history(context), decision),
            "outcome": "accepted_with_known_issues",
            "known_issues": reason,
            "decided_by": answer.responded_by,
            "decided_at": _when(answer.responded_at),
        }
