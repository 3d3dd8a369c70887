"""Test: runs the customer's test cases on an environment, before the upgrade (the baseline) or after it.

``preparation.verify_test_cases_dev`` runs them on Dev before anything changes (round 0): that
report is the baseline every later round is compared with. ``<env>.sanity_test`` runs them after the
upgrade, the re-applied settings (and on UAT/Prod the transferred fixes) as round 1, judged against
the Dev baseline so a case that already failed before is shown as pre-existing and not blamed on
the upgrade. Every round is saved in the ledger by
:func:`~managed_upgrade_airflow.testcase_executors.run_environment_tests`.

The cases come from the customer, so every round runs them sandboxed: commands only of the
installation or the environment's ``allowed_programs``, as its non-root service user, with a timeout and
an output cap; queries parsed again and run as the read-only role of ``test_db_conn_id`` (refused on
prod without one); http checks only to ``http_hosts``. A refused case is an ``error`` result, not a
task failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from managed_upgrade.verification.runner import DEFAULT_TIMEOUT
from managed_upgrade_airflow.ledger_access import LEDGER_CONN_ID
from managed_upgrade_airflow.testcase_executors import (
    BASELINE_ENVIRONMENT,
    BASELINE_ROUND,
    load_baseline,
    report_xcom,
    run_environment_tests,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig

SANITY_ROUND = 1
"""The first round after the upgrade; retests of the fix loop continue from here."""


class SanityTestOperator(BaseOperator):
    """Run the customer's test cases on ``environment`` and keep the report; XCom: a compact summary.

    Failing cases do **not** fail this task. In the baseline round a failing case is a fact about
    the system before the upgrade, for the consultant to review, not an error. After the upgrade the
    failures are the input of ``<env>.fix_and_retest`` downstream, which shows them to the
    consultant, loops over fixes and retests, and ends green, accepted with known issues, or
    aborted; failing here would stop the run before that loop could start and make the Airflow
    task state say "broken" where the process says "fix it". The task fails only if the
    environment cannot be reached (SSH host or config database), before any case ran; that is
    worth a retry.

    XCom: ``{environment, round, headline, summary: {total, passed, failed, errors, regressions,
    pre_existing, fixed, blocking}, failing: [case ids], blocking: [case ids the fix loop must
    address; none in the baseline], compared_with_baseline, report_ref: {dag_id, run_id,
    environment, round}}``; the full report (JSON, JUnit XML, markdown) is in the ledger under
    ``report_ref``.

    :param config: the customer config (test cases, environment connections)
    :param environment: ``dev``, ``uat`` or ``prod``
    :param baseline: run the baseline round 0 (Dev only, before the upgrade) instead of round 1
    :param case_timeout: seconds each case may take
    :param ledger_conn_id: the project's ledger
    """

    template_fields: Sequence[str] = ()
    ui_color = "#f3e8fd"

    def __init__(
        self,
        *,
        config: CustomerConfig,
        environment: str,
        baseline: bool = False,
        case_timeout: float = DEFAULT_TIMEOUT,
        ledger_conn_id: str = LEDGER_CONN_ID,
        **kwargs: Any,
    ) -> None:
        config.environment(environment)  # unknown names fail when the DAG is built, not at run time
        if baseline and environment != BASELINE_ENVIRONMENT:
            raise ValueError(
                f"the baseline round runs on {BASELINE_ENVIRONMENT} before the upgrade, not on {environment}"
            )
        super().__init__(**kwargs)
        self.config = config
        self.environment = environment
        self.baseline = baseline
        self.case_timeout = case_timeout
        self.ledger_conn_id = ledger_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        if self.baseline:
            round_number, reference = BASELINE_ROUND, None
        else:
            round_number = SANITY_ROUND
            reference = load_baseline(ti.dag_id, ti.run_id, ledger_conn_id=self.ledger_conn_id)
            if reference is None:
                self.log.warning(
                    "No Dev baseline (round %d) in the ledger for this run: every failing case counts "
                    "as blocking, none as pre-existing.",
                    BASELINE_ROUND,
                )
        report = run_environment_tests(
            self.config,
            self.environment,
            round_number=round_number,
            baseline=reference,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            ledger_conn_id=self.ledger_conn_id,
            timeout=self.case_timeout,
        )
        self.log.info("%s\n%s", "Baseline" if self.baseline else "Sanity test", report.to_markdown())
        if self.baseline and not report.all_passed:
            self.log.warning(
                "%d case(s) fail on %s before the upgrade; they count as pre-existing in later rounds. "
                "Review them in preparation.review_test_case_verification.",
                sum(result.failing for result in report.results),
                self.environment,
            )
        elif report.blocking_failures:
            self.log.warning(
                "%d case(s) to fix on %s: %s; fix_and_retest takes over.",
                len(report.blocking_failures),
                self.environment,
                ", ".join(result.id for result in report.blocking_failures),
            )
        return report_xcom(report, ti.dag_id, ti.run_id)
