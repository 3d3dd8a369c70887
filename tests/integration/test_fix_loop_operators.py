"""Fix and retest, customer sign-off and the transfer of fixes, against the real estate and a real ledger.

The operators are driven the way Airflow drives them: a review task asks by raising the request for a
run of the review DAG (which the task runner would create before deferring the task); the answer is
recorded by the review DAG's own operator, as when a consultant answers; ``execute_complete`` then
gets the event the deferred task resumes with -- each call on a fresh operator, as each resumption is
a new process. Upstream tasks (Dev baseline, sanity test, backup) are the real operators.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskAwaitingInput
from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.comms import CreateHITLDetailPayload
from pydantic import TypeAdapter
from question_driver import ReviewTask, review_operator

from managed_upgrade.config import TestCase, load_customer_config
from managed_upgrade.ledger import Ledger
from managed_upgrade.operations.fix_bundle import BundleFile, FixBundle, SqlScript, new_provenance
from managed_upgrade.operations.settings_snapshot import ReapplyReport, merge_settings
from managed_upgrade.review.review_loop import (
    ABORT,
    ACCEPT,
    EXHAUSTED_OPTIONS,
    FIX_OPTIONS,
    REJECTED,
    RETEST,
    SIGN_OFF_OPTIONS,
    SIGNED_OFF,
)
from managed_upgrade.review.review_runs import QUESTION_TASK_ID
from managed_upgrade_airflow.gates.questions import ReviewQuestion
from managed_upgrade_airflow.operators.backup_environment import BackupEnvironmentOperator
from managed_upgrade_airflow.operators.customer_sign_off import CustomerSignOffOperator
from managed_upgrade_airflow.operators.fix_and_retest import FixAndRetestOperator
from managed_upgrade_airflow.operators.sanity_test import SanityTestOperator
from managed_upgrade_airflow.operators.transfer_fixes import TransferFixesOperator

pytestmark = pytest.mark.integration

CUSTOMERS = Path(__file__).resolve().parents[2] / "include" / "customers"
DAG_ID = "managed_upgrade__acme"  # the task context's dag id
REPORT_SETTING = "report.export.format=xlsx"
CURRENCY_QUERY = "SELECT value FROM crm_settings WHERE key = 'currency.default'"
TEST_CASES = [
    {
        "id": "crm_status",
        "title": "CRM reports a healthy installation",
        "kind": "command",
        "argv": ["bin/crm", "status"],
        "expect": {"stdout_contains": '"ok": true'},
    },
    {
        "id": "default_currency",
        "title": "Default currency is EUR",
        "kind": "sql",
        "query": CURRENCY_QUERY,
        "expect": {"rows": [["EUR"]]},
    },
    {
        "id": "export_format",
        "title": "Reports export as xlsx",
        "kind": "command",
        "argv": ["grep", "-qx", REPORT_SETTING, "settings/report.properties"],
    },
]


# --- the task runner's side -----------------------------------------------------------------------


@dataclass
class SupervisorComms:
    """Stands where the task runner's channel to the Airflow API is: keeps the messages tasks send."""

    sent: list[Any] = field(default_factory=list)

    def send(self, msg: Any) -> None:
        self.sent.append(msg)

    @property
    def hitl_requests(self) -> list[CreateHITLDetailPayload]:
        return [msg for msg in self.sent if isinstance(msg, CreateHITLDetailPayload)]


@pytest.fixture
def comms(monkeypatch) -> SupervisorComms:
    recorder = SupervisorComms()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", recorder, raising=False)
    return recorder


# --- the estate -----------------------------------------------------------------------------------


@dataclass
class Estate:
    config: Any
    installations: dict[str, Any]
    dsns: dict[str, str]
    run_id: str

    def path(self, env: str, relative: str) -> Path:
        return self.installations[env].install_path / relative

    def currency(self, env: str) -> str:
        with psycopg2.connect(self.dsns[env]) as connection, connection.cursor() as cursor:
            cursor.execute(CURRENCY_QUERY)
            return cursor.fetchone()[0]

    def break_like_the_upgrade(self, env: str) -> None:
        """What the (simulated) upgrade did: dropped a customer settings file and reset the currency."""
        self.path(env, "settings/report.properties").unlink(missing_ok=True)
        with psycopg2.connect(self.dsns[env]) as connection, connection.cursor() as cursor:
            cursor.execute("UPDATE crm_settings SET value = 'USD' WHERE key = 'currency.default'")


@pytest.fixture
def setup(estate, isolated_customer, ledger_dsn, task_context) -> Estate:
    config = load_customer_config(CUSTOMERS / "acme.yaml")
    cases = tuple(TypeAdapter(TestCase).validate_python(case) for case in TEST_CASES)
    config = config.model_copy(update={"test_cases": cases})
    config, installations = isolated_customer(config, dev="10.2.0", uat="10.2.0")
    dsns = {env: estate.pg_dsn(installation.db_name) for env, installation in installations.items()}
    world = Estate(config, installations, dsns, run_id=f"manual__{uuid.uuid4().hex[:8]}")
    for env in installations:
        world.path(env, "settings/report.properties").write_text(REPORT_SETTING + "\n")
    baseline = SanityTestOperator(
        task_id="verify_test_cases_dev", config=config, environment="dev", baseline=True
    )
    assert (
        baseline.execute(task_context("preparation.verify_test_cases_dev", run_id=world.run_id))["blocking"]
        == []
    )
    return world


def sanity_test(world: Estate, env: str, task_context) -> dict[str, Any]:
    operator = SanityTestOperator(task_id="sanity_test", config=world.config, environment=env)
    return operator.execute(task_context(f"{env}.sanity_test", run_id=world.run_id))


@contextmanager
def ledger(ledger_dsn: str) -> Iterator[Ledger]:
    connection = psycopg2.connect(ledger_dsn)
    try:
        yield Ledger(connection)
    finally:
        connection.close()


def review(world: Estate, task_context, cls=FixAndRetestOperator, env="dev", **xcoms) -> ReviewTask:
    activity = "customer_sign_off" if cls is CustomerSignOffOperator else "fix_and_retest"
    return ReviewTask(
        make=lambda: cls(task_id=activity, config=world.config, environment=env),
        task_id=f"{env}.{activity}",
        run_id=world.run_id,
        task_context=task_context,
        xcoms=xcoms,
    )


# --- fix and retest -------------------------------------------------------------------------------


def test_fixes_on_dev_make_the_retest_green_and_transfer_to_uat(setup, task_context, ledger_dsn):
    world = setup
    world.break_like_the_upgrade("dev")
    assert sanity_test(world, "dev", task_context)["blocking"] == ["default_currency", "export_format"]
    task = review(world, task_context)

    first = task.ask()
    assert first.number == 1
    assert first.options == FIX_OPTIONS
    assert first.subject == "Fix and retest Development: round 1, 2 to fix (1 of 3 passed)"
    assert "**1 of 3 passed** on dev, round 1" in first.body
    assert "Fix round 1 of at most 5 for this task" in first.body
    assert set(first.fields) == {
        "fix_description",
        "fix_files",
        "fix_sql",
        "known_issues_reason",
        "abort_reason",
    }
    assert first.assigned_users == ("carla",)
    assert first.customer_wait is False

    # Round 1: the consultant restores the settings file on the Dev host; the currency is still wrong.
    world.path("dev", "settings/report.properties").write_text(REPORT_SETTING + "\n")
    second = task.answer_and_ask_again(
        RETEST, fix_description="Restore the report export setting", fix_files=["settings/report.properties"]
    )
    assert second.number == 2
    assert second.subject == "Fix and retest Development: round 2, 1 to fix (2 of 3 passed)"
    assert "**2 of 3 passed** on dev, round 2" in second.body
    assert (
        "| 1 | 1 of 3 passed, **2 to fix** | by carla: Restore the report export setting; files"
        in second.body
    )

    # Round 2: the SQL of the fix runs on Dev when the consultant asks for the retest.
    result = task.answer(
        RETEST,
        fix_description="Default currency back to EUR",
        fix_files=[],
        fix_sql="UPDATE crm_settings SET value = 'EUR' WHERE key = 'currency.default';",
    )
    assert result == {
        "environment": "dev",
        "round": 3,
        "headline": "3 of 3 passed",
        "blocking": 0,
        "fix_rounds": [1, 2],
        "outcome": "green",
        "known_issues": "",
        "decided_by": "carla",
        "decided_at": "2027-02-01T11:00:00+00:00",
    }
    assert world.currency("dev") == "EUR"
    with ledger(ledger_dsn) as store:
        rows = store.test_reports(DAG_ID, world.run_id, "dev")
        fixes = store.fixes(DAG_ID, world.run_id, "dev")
    assert [(row["round"], row["report"]["summary"]["blocking"]) for row in rows] == [
        (0, 0),
        (1, 2),
        (2, 1),
        (3, 0),
    ]
    assert [(row["round"], row["recorded_by"], row["description"]) for row in fixes] == [
        (1, "carla", "Restore the report export setting"),
        (2, "carla", "Default currency back to EUR"),
    ]
    assert [item["path"] for item in fixes[0]["bundle"]["files"]] == ["settings/report.properties"]

    # Transfer fixes from Development: UAT, upgraded and broken the same way, gets both rounds.
    world.break_like_the_upgrade("uat")
    transfer = TransferFixesOperator(task_id="transfer_fixes", config=world.config, environment="uat")
    transferred = transfer.execute(task_context("uat.transfer_fixes", run_id=world.run_id))
    assert transferred["outcome"] == "applied"
    assert transferred["rounds"] == ["dev#1", "dev#2"]
    assert transferred["applied"]["files"] == [
        {
            "path": "settings/report.properties",
            "sha256": fixes[0]["bundle"]["files"][0]["sha256"],
            "replaced": False,
        }
    ]
    assert transferred["applied"]["sql_statements"] == 1
    assert world.path("uat", "settings/report.properties").read_text() == REPORT_SETTING + "\n"
    assert world.currency("uat") == "EUR"
    uat = sanity_test(world, "uat", task_context)
    assert (uat["headline"], uat["blocking"]) == ("3 of 3 passed", [])

    # Production takes the fixes of Dev and UAT (none were made on UAT here).
    prod = TransferFixesOperator(task_id="transfer_fixes", config=world.config, environment="prod")
    assert prod.source_environments == ("dev", "uat")


def test_a_green_sanity_test_needs_no_fixes_and_no_question(setup, task_context):
    world = setup
    sanity_test(world, "dev", task_context)
    result = review(world, task_context).execute()
    assert (result["outcome"], result["round"], result["fix_rounds"]) == ("no_fixes_needed", 1, [])


def test_accept_without_a_reason_is_refused_and_asked_again(setup, task_context, ledger_dsn):
    world = setup
    world.break_like_the_upgrade("dev")
    sanity_test(world, "dev", task_context)
    task = review(world, task_context)
    task.ask()

    again = task.answer_and_ask_again(ACCEPT, known_issues_reason="   ")
    assert again.number == 2
    assert again.body.startswith(
        "> **The previous answer (Accept with known issues, by carla at 2027-02-01 10:00 UTC) was refused: "
        "Accept with known issues needs a reason"
    )
    result = task.answer(ACCEPT, known_issues_reason="Currency is set by the customer after go-live (Alice)")
    assert result["outcome"] == "accepted_with_known_issues"
    assert result["known_issues"] == "Currency is set by the customer after go-live (Alice)"
    assert result["blocking"] == 2
    with ledger(ledger_dsn) as store:
        answers = store.gate_answers(DAG_ID, world.run_id)
    assert [(row["try_number"], row["question"], row["chosen_options"]) for row in answers] == [
        (1, 1, [ACCEPT]),
        (1, 2, [ACCEPT]),
    ]


def test_a_retest_that_cannot_be_carried_out_changes_nothing_and_says_why(setup, task_context, ledger_dsn):
    world = setup
    world.break_like_the_upgrade("dev")
    sanity_test(world, "dev", task_context)
    task = review(world, task_context)
    task.ask()

    refused = task.answer_and_ask_again(
        RETEST,
        fix_description="Currency and report",
        fix_files=["settings/report.properties", "settings/../../../etc/passwd"],
        fix_sql="UPDATE crm_settings SET value = 'EUR' WHERE key = 'currency.default';",
    )
    assert "was refused: fix file path 'settings/../../../etc/passwd' has a '..' segment" in refused.body

    refused = task.answer_and_ask_again(
        RETEST,
        fix_description="Currency and report",
        fix_files=["settings/report.properties"],
        fix_sql="UPDATE crm_settings SET value = 'EUR' WHERE key = 'currency.default';",
    )
    assert f"settings/report.properties: not found under {world.installations['dev'].install_path}" in (
        refused.body
    )
    assert world.currency("dev") == "USD"  # its SQL did not run either

    after = task.answer_and_ask_again(
        RETEST,
        fix_description="Currency",
        fix_sql="UPDATE crm_settings SET value = 'EUR' WHERE key = 'currency.default';\n"
        "UPDATE no_such_table SET a = 1;",
    )
    assert "the SQL of fix dev round 1 failed on database" in after.body
    assert "at line 2: 'UPDATE no\\_such\\_table SET a = 1;'" in after.body  # markdown-escaped
    assert world.currency("dev") == "USD"  # rolled back as a whole
    assert after.number == 4
    assert "was refused: it could not be carried out (the task log after question 3 says why)" in after.body
    with ledger(ledger_dsn) as store:
        assert store.fixes(DAG_ID, world.run_id) == []


def test_when_the_rounds_are_used_up_the_task_fails_naming_the_last_report(setup, task_context):
    world = setup
    world.config = world.config.model_copy(
        update={"fix_loop": world.config.fix_loop.model_copy(update={"max_rounds": 1})}
    )
    world.break_like_the_upgrade("dev")
    sanity_test(world, "dev", task_context)
    task = review(world, task_context)
    assert task.make().max_questions == 6
    task.ask()
    world.path("dev", "settings/report.properties").write_text(REPORT_SETTING + "\n")

    with pytest.raises(AirflowFailException) as failure:
        task.answer(RETEST, fix_description="report setting", fix_files=["settings/report.properties"])
    message = str(failure.value)
    assert "Development: still 1 failing after 1 fix rounds (the maximum is 1)" in message
    assert f"last report: dev round 2, 2 of 3 passed (ledger test_reports of run {world.run_id})" in message

    task.try_number += 1  # a person clears the task: only accepting or aborting is left
    cleared = task.ask()
    assert (cleared.number, cleared.try_number) == (2, 2)
    assert cleared.options == EXHAUSTED_OPTIONS
    assert set(cleared.fields) == {"known_issues_reason", "abort_reason"}
    assert "**All 1 fix rounds of this task are used.**" in cleared.body


def test_a_fix_recorded_before_a_crash_is_retested_by_the_next_try(setup, task_context, ledger_dsn):
    world = setup
    world.break_like_the_upgrade("dev")
    sanity_test(world, "dev", task_context)
    task = review(world, task_context)
    # Try 1 recorded the fix and ran its SQL, then the worker died before the retest.
    with psycopg2.connect(world.dsns["dev"]) as connection, connection.cursor() as cursor:
        cursor.execute("UPDATE crm_settings SET value = 'EUR' WHERE key = 'currency.default'")
    world.path("dev", "settings/report.properties").write_text(REPORT_SETTING + "\n")
    files = [BundleFile.of("settings/report.properties", (REPORT_SETTING + "\n").encode(), 0o644)]
    scripts = [SqlScript.of("dev", 1, "UPDATE crm_settings SET value = 'EUR' WHERE key = 'currency.default'")]
    provenance = new_provenance(
        environment="dev", round_number=1, task_id=task.task_id, question=1, recorded_by="carla",
        recorded_at=datetime(2027, 2, 1, tzinfo=UTC), description="both", files=files, sql=scripts,
    )  # fmt: skip
    with ledger(ledger_dsn) as store:
        bundle = FixBundle.create(files, scripts, [provenance]).to_dict()
        store.record_fix(DAG_ID, world.run_id, "dev", 1, "carla", "both", bundle)

    task.try_number = 2
    result = task.execute()
    assert (result["outcome"], result["round"], result["fix_rounds"]) == ("green", 2, [1])


# --- abort ----------------------------------------------------------------------------------------


def test_abort_restores_the_version_that_ran_before_the_upgrade(setup, task_context, upgrade_installation):
    world = setup
    env = world.config.environment("dev")
    backup = BackupEnvironmentOperator.for_environment(
        world.config, "dev", task_id="backup_environment", ledger_conn_id=None
    ).execute(task_context("dev.backup_environment", run_id=world.run_id))
    upgrade_installation(world.installations["dev"], "11.0.0")
    world.break_like_the_upgrade("dev")
    assert world.path("dev", "VERSION").read_text().strip() == "11.0.0"
    sanity_test(world, "dev", task_context)
    task = review(world, task_context, **{"dev.backup_environment": backup})
    task.ask()

    with pytest.raises(AirflowFailException) as failure:
        task.answer(ABORT, abort_reason="Upgrade breaks the ERP sync; customer wants to wait for 11.0.1")
    message = str(failure.value)
    assert message.startswith(
        "Development aborted by carla at 2027-02-01T10:00:00+00:00 (Upgrade breaks the ERP sync; "
        "customer wants to wait for 11.0.1): the environment was restored to version 10.2.0 from backup "
        f"{backup['backup_id']} (VERSION and `bin/crm status` verified)."
    )
    assert world.path("dev", "VERSION").read_text().strip() == "10.2.0"
    assert world.currency("dev") == "EUR"
    assert world.path("dev", "settings/report.properties").read_text() == REPORT_SETTING + "\n"
    assert env.install_path == str(world.installations["dev"].install_path)


def test_abort_without_a_backup_says_the_environment_was_not_restored(setup, task_context):
    world = setup
    world.break_like_the_upgrade("dev")
    sanity_test(world, "dev", task_context)
    task = review(world, task_context)
    task.ask()
    with pytest.raises(
        AirflowFailException,
        match=r"no backup id in the XCom of dev\.backup_environment: the environment was NOT restored",
    ):
        task.answer(ABORT)


# --- customer sign-off ----------------------------------------------------------------------------


def test_a_rejection_becomes_a_fix_round_and_the_sign_off_is_asked_again(setup, task_context, ledger_dsn):
    world = setup
    sanity_test(world, "dev", task_context)
    hand_over = {"version": "11.0.0", "report": {"round": 1, "headline": "3 of 3 passed"}}
    settings = ReapplyReport(base="10.2.0")
    merge_settings(
        "system.properties", {"log.level": "WARN"}, {"log.level": "DEBUG"}, {"log.level": "INFO"}, settings
    )
    xcoms = {"dev.hand_over_environment": hand_over, "dev.reapply_settings": settings.summary()}
    task = review(world, task_context, cls=CustomerSignOffOperator, **xcoms)

    question = task.ask()
    assert question.options == SIGN_OFF_OPTIONS
    assert question.subject == "Customer sign-off of the Development environment (ACME Corporation)"
    assert "| Version running | 11.0.0 |" in question.body
    assert "### Customer settings after the upgrade" in question.body  # the customer signs these too
    assert "| Compared against | the defaults of 10.2.0 |" in question.body
    assert "the new release changed the default from `INFO` to `DEBUG`" in question.body
    assert set(question.fields) == {"customer_contact", "feedback"}
    assert question.fields["customer_contact"]["default"] == "Alice Admin <alice.admin@acme.example>"
    assert question.customer_wait is True  # the customer has the ball

    fix = task.answer_and_ask_again(
        REJECTED,
        customer_contact="Alice Admin",
        feedback="The welcome banner still shows the old product name",
    )
    assert fix.options == FIX_OPTIONS
    assert fix.subject == "Fix Development after the customer's rejection: round 1 (3 of 3 passed)"
    assert "> The welcome banner still shows the old product name" in fix.body
    assert "customer_contact" not in fix.fields and "fix_files" in fix.fields
    assert fix.customer_wait is False  # the consultant has it

    world.path("dev", "settings/banner.properties").write_text("banner.title=Aurea CRM 11\n")
    again = task.answer_and_ask_again(
        RETEST, fix_description="New banner title", fix_files=["settings/banner.properties"]
    )
    assert (again.number, again.options) == (3, SIGN_OFF_OPTIONS)
    assert "| Fix rounds | 1 |" in again.body
    result = task.answer(SIGNED_OFF, customer_contact="Alice Admin", feedback="Looks good")
    assert result["outcome"] == "signed_off"
    assert (result["customer_contact"], result["recorded_by"], result["version"]) == (
        "Alice Admin",
        "carla",
        "11.0.0",
    )
    assert (result["round"], result["fix_rounds"], result["known_issues"]) == (2, [1], [])
    assert result["signed_off_at"] == "2027-02-01T12:00:00+00:00"

    with ledger(ledger_dsn) as store:
        fixes = store.fixes(DAG_ID, world.run_id, "dev")
    assert [(row["round"], row["bundle"]["provenance"][0]["task_id"]) for row in fixes] == [
        (1, "dev.customer_sign_off")
    ]


def test_a_rejection_without_feedback_is_asked_again(setup, task_context):
    world = setup
    sanity_test(world, "dev", task_context)
    task = review(
        world,
        task_context,
        cls=CustomerSignOffOperator,
        **{"dev.hand_over_environment": {"version": "11.0.0"}},
    )
    task.ask()
    again = task.answer_and_ask_again(REJECTED, customer_contact="Alice", feedback="")
    assert again.options == SIGN_OFF_OPTIONS
    assert "Rejected: fix and retest needs the customer's feedback" in again.body


# --- transfer -------------------------------------------------------------------------------------


def record(
    ledger_dsn: str, run_id: str, round_number: int, files=(), sql: str = "", environment: str = "dev"
) -> dict:
    scripts = [SqlScript.of(environment, round_number, sql)] if sql else []
    provenance = new_provenance(
        environment=environment, round_number=round_number, task_id=f"{environment}.fix_and_retest",
        question=round_number, recorded_by="carla", recorded_at=datetime(2027, 2, 1, tzinfo=UTC),
        description=f"fix {round_number}", files=list(files), sql=scripts,
    )  # fmt: skip
    bundle = FixBundle.create(files, scripts, [provenance]).to_dict()
    with ledger(ledger_dsn) as store:
        store.record_fix(DAG_ID, run_id, environment, round_number, "carla", "x", bundle)
    return bundle


def transfer(world: Estate, task_context, environment: str = "uat") -> dict[str, Any]:
    operator = TransferFixesOperator(task_id="transfer_fixes", config=world.config, environment=environment)
    return operator.execute(task_context(f"{environment}.transfer_fixes", run_id=world.run_id))


def test_nothing_to_transfer_when_no_fix_was_recorded(setup, task_context):
    assert transfer(setup, task_context) == {
        "environment": "uat",
        "sources": ["dev"],
        "rounds": [],
        "bundle": None,
        "applied": None,
        "outcome": "nothing_to_transfer",
    }


def test_a_corrupt_bundle_in_the_ledger_is_refused_before_uat_is_touched(setup, task_context, ledger_dsn):
    world = setup
    world.break_like_the_upgrade("uat")
    record(ledger_dsn, world.run_id, 1, [BundleFile.of("settings/report.properties", b"x=1\n", 0o644)])
    with psycopg2.connect(ledger_dsn) as connection, connection.cursor() as cursor:
        cursor.execute(  # someone edits the stored file's content
            "UPDATE managed_upgrade.fixes SET bundle = jsonb_set(bundle, '{files,0,content}', %s::jsonb)",
            ('"' + "eD0y" + 'Cg=="',),
        )
    with pytest.raises(AirflowFailException) as failure:
        transfer(world, task_context)
    message = str(failure.value)
    assert message.startswith(
        "not transferring fixes to UAT: the fix of dev round 1 (recorded by carla) is not a valid"
    )
    assert "content has sha256" in message and message.endswith("nothing was applied")
    assert not world.path("uat", "settings/report.properties").exists()


def test_a_fix_that_fails_on_uat_stops_it_and_applies_nothing(setup, task_context, ledger_dsn):
    world = setup
    world.break_like_the_upgrade("uat")
    report_file = BundleFile.of("settings/report.properties", (REPORT_SETTING + "\n").encode(), 0o644)
    record(
        ledger_dsn,
        world.run_id,
        1,
        [report_file],
        "UPDATE crm_settings SET value = 'EUR' WHERE key = 'currency.default';",
    )
    record(ledger_dsn, world.run_id, 2, sql="UPDATE crm_dev_only_table SET x = 1;")
    with pytest.raises(AirflowFailException) as failure:
        transfer(world, task_context)
    message = str(failure.value)
    assert message.startswith(
        "transferring the fixes of dev#1, dev#2 to UAT failed: uat: the SQL of fix dev round 2"
    )
    assert "line 1: 'UPDATE crm_dev_only_table SET x = 1;'" in message
    assert not world.path("uat", "settings/report.properties").exists()
    assert world.currency("uat") == "USD"


def test_transfer_is_only_to_later_environments(setup):
    with pytest.raises(ValueError, match="fixes are transferred from dev, not to it"):
        TransferFixesOperator(task_id="t", config=setup.config, environment="dev")
    with pytest.raises(ValueError, match="uat can take fixes from dev, not 'prod'"):
        TransferFixesOperator(
            task_id="t", config=setup.config, environment="uat", source_environments=["prod"]
        )


# --- who answers, and the review DAG's question ----------------------------------------------------


def test_an_answer_from_someone_not_assigned_is_not_carried_out_and_the_question_is_asked_again(
    setup, task_context, ledger_dsn
):
    world = setup
    world.break_like_the_upgrade("dev")
    sanity_test(world, "dev", task_context)
    task = review(world, task_context)
    task.ask()
    again = task.answer_and_ask_again(ACCEPT, user="mallory", known_issues_reason="ship it")
    assert (again.number, again.options) == (2, FIX_OPTIONS)
    with ledger(ledger_dsn) as store:
        assert store.fixes(DAG_ID, world.run_id) == []


FEEDBACK = {"type": "string"}


def test_the_review_dag_opens_exactly_the_question_its_run_was_given(task_context, comms):
    question = ReviewQuestion(
        dag_id=DAG_ID, run_id="manual__1", task_id="uat.customer_sign_off", try_number=1, number=3,
        customer_id="acme", subject="Customer sign-off of the UAT environment (ACME Corporation)",
        body="| Version running | 11.0.0 |", options=SIGN_OFF_OPTIONS, assigned_users=("carla", "dan"),
        customer_wait=True,
        fields={"feedback": {"default": "", "description": "What the customer said", "schema": FEEDBACK}},
    )  # fmt: skip
    assert question.review_run_id == "uat.customer_sign_off.q3__managed_upgrade__acme__manual__1"
    context = task_context(QUESTION_TASK_ID, run_id=question.review_run_id)
    context["dag_run"].conf = question.to_conf()
    context["ti"].id = uuid.uuid4()
    with pytest.raises(TaskAwaitingInput):
        review_operator("acme").execute(context)
    (request,) = comms.hitl_requests
    assert (request.subject, request.body, request.options) == (
        question.subject,
        question.body,
        list(SIGN_OFF_OPTIONS),
    )
    assert [user.id for user in request.assigned_users] == ["carla", "dan"]
    assert request.params["feedback"]["schema"] == {"type": "string"}
    assert request.params["feedback"]["description"] == "What the customer said"


def test_a_review_run_made_by_hand_is_refused_with_a_clear_message(task_context):
    context = task_context(QUESTION_TASK_ID)
    context["dag_run"].conf = {"subject": "Approve my change"}
    with pytest.raises(ValueError, match=r"lacks dag_id, run_id, task_id.*not by hand"):
        review_operator("acme").execute(context)


def test_a_review_dag_refuses_a_question_for_another_customer(task_context, comms):
    """globex's review DAG never opens acme's question: its consultants would see and answer it."""
    question = ReviewQuestion(
        dag_id=DAG_ID, run_id="manual__1", task_id="dev.fix_and_retest", try_number=1, number=1,
        customer_id="acme", subject="Fix?", body="", options=FIX_OPTIONS, assigned_users=("carla",),
    )  # fmt: skip
    context = task_context(QUESTION_TASK_ID, run_id=question.review_run_id)
    context["dag_run"].conf = question.to_conf()
    with pytest.raises(ValueError, match=r"managed_upgrade_review__globex asks only for its own customer"):
        review_operator("globex").execute(context)
    assert comms.hitl_requests == []
