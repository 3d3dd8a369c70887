"""<Environment> > Fix Issues and Retest: the consultant fixes failures until the environment is green.

One task whose tries are the fix rounds (see :mod:`managed_upgrade.review_loop` for why). A try reads
the environment's latest test report from the ledger: with no blocking failure it succeeds at once
("no fixes needed"); otherwise it asks the consultant, with the report and the rounds so far, to fix
on the host and answer "Retest" (the fix is captured, its SQL run, the tests run again),
"Accept with known issues" (reason required) or "Abort and restore". The shared machinery is
:class:`~managed_upgrade_airflow.review_gates.ReviewGate`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from managed_upgrade.review_loop import (
    FIX_OPTIONS,
    Decision,
    GateAnswer,
    LoopHistory,
    decide_fix_and_retest,
    environment_title,
    fix_loop_retries,
)
from managed_upgrade_airflow.review_gates import ReviewGate, fix_form_fields

if TYPE_CHECKING:
    from managed_upgrade.config import CustomerConfig


def _when(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else None


class FixAndRetestOperator(ReviewGate):
    """``<env>.fix_and_retest``: fix rounds as tries, up to ``config.fix_loop.max_rounds``.

    ``retries`` defaults to ``max_rounds`` plus a few for refused answers; the retry policy retries
    only a requested retest or a refused answer. Answered by the config's consultants.

    XCom on success: ``{environment, outcome: "no_fixes_needed" | "green" | "accepted_with_known_issues",
    round, headline, blocking, fix_rounds: [rounds this task recorded], known_issues: str (the reason
    when accepted, else ""), decided_by, decided_at}``. Abort fails the task (``AirflowFailException``)
    after restoring the backup of ``<env>.backup_environment``.

    :param config: / :param environment: / :param backup_task_id: / :param case_timeout: see
        :class:`~managed_upgrade_airflow.review_gates.ReviewGate`
    """

    ui_color = "#fce8e6"

    def __init__(self, *, config: CustomerConfig, environment: str, **kwargs: Any) -> None:
        title = environment_title(environment)
        kwargs.setdefault("subject", f"Fix and retest {title} ({config.name})")
        kwargs.setdefault("options", list(FIX_OPTIONS))
        kwargs.setdefault("retries", fix_loop_retries(config.fix_loop.max_rounds))
        super().__init__(config=config, environment=environment, form_fields=fix_form_fields(), **kwargs)

    def decide(self, history: LoopHistory, try_number: int) -> Decision:
        return decide_fix_and_retest(history, try_number, self.max_rounds)

    def when_green(
        self, context: Any, decision: Decision, history: LoopHistory, answer: GateAnswer | None = None
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

    def accepted(self, context: Any, answer: GateAnswer, decision: Decision) -> dict[str, Any]:
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
