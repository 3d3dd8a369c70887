"""Initiation tasks against real systems: the estate's Dev host and DB, a throwaway ledger, an SMTP sink.

Operators are called the way the task runner calls them (``execute`` / ``execute_complete`` with a
context); the context is minimal: the run's conf, the task instance's ids and its XCom pulls.
The ledger, SMTP sink and context fixtures are shared with the other operator tests (tests/conftest.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from airflow.sdk.exceptions import AirflowFailException
from psycopg2 import sql

from managed_upgrade.config import load_customer_config
from managed_upgrade.ledger import Ledger
from managed_upgrade.sla.plan import make_customer_plan
from managed_upgrade.verification.report import CaseResult, TestReport
from managed_upgrade_airflow.gates.initiation import (
    INVENTORY_TASK_ID,
    VERIFY_TEST_CASES_TASK_ID,
    AcknowledgeRequestGate,
    RespondToRequestGate,
    ReviewTestCaseVerificationGate,
    fenced,
)
from managed_upgrade_airflow.operators.inventory import InventoryDevSystemOperator, collect_database_facts
from managed_upgrade_airflow.operators.request_case import CreateRequestCaseOperator, request_case_defaults
from managed_upgrade_airflow.run_settings_xcom import REQUEST_CASE_TASK_ID

pytestmark = pytest.mark.integration

CUSTOMERS = Path(__file__).resolve().parents[2] / "include" / "customers"
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
DAG_ID = "managed_upgrade__acme"


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config():
    return load_customer_config(CUSTOMERS / "acme.yaml")


def _ledger_rows(dsn: str, query: str, *args: Any) -> list[tuple]:
    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, args)
            return cursor.fetchall()
    finally:
        connection.close()


def _answer(options: list[str], params: dict[str, Any], user: str = "carla") -> dict[str, Any]:
    return {
        "chosen_options": options,
        "params_input": params,
        "responded_at": datetime(2027, 1, 11, 9, 30, tzinfo=UTC),
        "responded_by_user": {"id": user, "name": user},
    }


# --- create_request_case ---------------------------------------------------------------------


def test_request_case_accepts_config_defaults_records_the_run_and_returns_settings(
    config, ledger_dsn, task_context, fixed_today
):
    """Triggered "today" (a fixed day, not the wall clock): the plan starts at the run's start and
    counts business days in the customer's calendar, whatever kind of day today is."""
    calendar = type(config.calendar).model_validate(fixed_today.calendar_settings)
    config = config.model_copy(update={"calendar": calendar})
    operator = CreateRequestCaseOperator(task_id="create_request_case", config=config)
    context = task_context(REQUEST_CASE_TASK_ID, run_started_at=fixed_today.now)
    result = operator.execute(context)
    assert result == {**request_case_defaults(config), "seconds_per_business_day": None}
    assert result["case_id"] == "ACME-1042" and result["target_version"] == "11.0.0"
    query = "SELECT dag_id, customer_id, conf FROM managed_upgrade.runs WHERE run_id = %s"
    rows = _ledger_rows(ledger_dsn, query, context["ti"].run_id)
    assert rows == [(DAG_ID, "acme", result)]
    plan = _ledger_rows(
        ledger_dsn,
        "SELECT activity_key, planned_start, planned_finish FROM managed_upgrade.planned_activities"
        " WHERE run_id = %s",
        context["ti"].run_id,
    )
    planned = {key: (start, finish) for key, start, finish in plan}
    assert set(planned) == {activity.key for activity in config.process_model().activities}
    expected = make_customer_plan(config, fixed_today.now)
    assert planned == {a.key: (a.planned_start, a.planned_finish) for a in expected.activities}
    assert planned["initiation.create_request_case"] == (fixed_today.now, fixed_today.now)
    assert planned["initiation.respond_to_request"] == (fixed_today.now, fixed_today.one_business_day_later)
    assert planned["closure.send_completion"][1] == max(finish for _, finish in planned.values())


def test_request_case_takes_trigger_form_overrides(config, ledger_dsn, task_context):
    operator = CreateRequestCaseOperator(task_id="create_request_case", config=config)
    conf = {
        "target_version": "11.1.0",
        "deadline": "2027-04-30",
        "seconds_per_business_day": 2,
        "case_id": "",
    }
    started = datetime(2027, 1, 16, 23, 59, 30, tzinfo=UTC)  # a Saturday night: rehearsals have no weekends
    context = task_context(REQUEST_CASE_TASK_ID, conf, run_started_at=started)
    result = operator.execute(context)
    assert result["target_version"] == "11.1.0"
    assert result["deadline"] == "2027-04-30"
    assert result["seconds_per_business_day"] == 2.0
    assert result["case_id"] == "ACME-1042"  # an empty form field keeps the config's value
    # rehearsal: the plan runs on the compressed clock, 2 s per business day
    [(start, finish)] = _ledger_rows(
        ledger_dsn,
        "SELECT planned_start, planned_finish FROM managed_upgrade.planned_activities"
        " WHERE activity_key = 'initiation.respond_to_request' AND run_id = %s",
        context["ti"].run_id,
    )
    assert (start, finish) == (started, started + timedelta(seconds=2))


def test_request_case_fails_listing_every_problem_and_records_nothing(config, ledger_dsn, task_context):
    operator = CreateRequestCaseOperator(task_id="create_request_case", config=config)
    context = task_context(REQUEST_CASE_TASK_ID, {"target_version": "10.1.0", "deadline": "2027-01-05"})
    with pytest.raises(AirflowFailException) as failure:
        operator.execute(context)
    message = str(failure.value)
    assert "2 problems" in message
    assert "target_version: 10.1.0 is not newer than the installed 10.2.0" in message
    assert "deadline: 2027-01-05 is before ideal_start 2027-01-11" in message
    assert _ledger_rows(ledger_dsn, "SELECT count(*) FROM managed_upgrade.runs") == [(0,)]


def test_request_case_rejects_malformed_values_and_ineligible_customers(config, ledger_dsn, task_context):
    operator = CreateRequestCaseOperator(task_id="create_request_case", config=config)
    with pytest.raises(AirflowFailException, match=r"case_id: not a valid case id: .*\(got 'acme 1'\)"):
        operator.execute(task_context(REQUEST_CASE_TASK_ID, {"case_id": "acme 1"}))
    not_platinum = config.model_copy(update={"platinum_support": False})
    operator = CreateRequestCaseOperator(task_id="create_request_case", config=not_platinum)
    with pytest.raises(AirflowFailException, match="not a Platinum Support member"):
        operator.execute(task_context(REQUEST_CASE_TASK_ID))


# --- inventory_dev_system ----------------------------------------------------------------------


@pytest.fixture
def isolated_dev_config(config, isolated_customer):
    """The acme config with its Dev environment pointed at a fresh installation of 10.2.0."""
    isolated, installations = isolated_customer(config, dev="10.2.0")
    return isolated, installations["dev"]


def test_inventory_of_a_healthy_dev_system(isolated_dev_config, task_context):
    config, installation = isolated_dev_config
    before = {path: path.stat().st_mtime_ns for path in installation.install_path.rglob("*")}
    result = InventoryDevSystemOperator(task_id="inventory_dev_system", config=config).execute(
        task_context(INVENTORY_TASK_ID)
    )
    inventory = result["inventory"]
    assert inventory["findings"] == []
    assert inventory["version"] == "10.2.0"
    assert inventory["crm_status"]["ok"] is True
    assert "core" in [module["name"] for module in inventory["modules"]]
    assert "session.timeout.minutes" in inventory["settings"]["system.properties"]
    assert inventory["database"]["schema_version"] == "10.2.0"
    assert inventory["database"]["tables"]["public.crm_accounts"] == 20
    assert inventory["database"]["tables"]["public.crm_contacts"] == 40
    assert inventory["disk"]["install_kib"] > 0
    assert inventory["disk"]["filesystem"]["available_kib"] > 0
    assert "Installed version: **10.2.0**" in result["markdown"]
    json.dumps(result)
    after = {path: path.stat().st_mtime_ns for path in installation.install_path.rglob("*")}
    assert after == before  # read-only: nothing created, removed or modified


def test_inventory_flags_a_drifted_installation(isolated_dev_config, task_context):
    config, installation = isolated_dev_config
    (installation.install_path / "VERSION").write_text("10.1.0\n")
    result = InventoryDevSystemOperator(task_id="inventory_dev_system", config=config).execute(
        task_context(INVENTORY_TASK_ID)
    )
    findings = result["inventory"]["findings"]
    assert any("installed version 10.1.0 differs" in finding for finding in findings)
    assert any("reports a broken installation" in finding for finding in findings)
    assert any("config DB schema is 10.2.0 but VERSION says 10.1.0" in finding for finding in findings)
    assert "**BROKEN**" in result["markdown"]


@pytest.fixture
def scratch_dsn() -> Iterator[str]:
    name = f"mu_scratch_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def test_database_inventory_runs_read_only(scratch_dsn):
    """A config DB whose schema-version view writes when read: the inventory's read must be refused."""
    connection = psycopg2.connect(scratch_dsn)
    with connection, connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE reads (at timestamptz);"
            "CREATE FUNCTION log_read() RETURNS text LANGUAGE sql VOLATILE AS"
            " $$ INSERT INTO reads VALUES (now()); SELECT '10.2.0'::text $$;"
            "CREATE VIEW crm_schema_version AS SELECT log_read() AS version"
        )
    with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
        collect_database_facts(connection)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM reads")
        assert cursor.fetchone() == (0,)
    connection.close()


def test_inventory_refuses_an_unknown_environment(config):
    with pytest.raises(KeyError, match="staging"):
        InventoryDevSystemOperator(task_id="inventory_dev_system", config=config, environment="staging")


# --- gates -------------------------------------------------------------------------------------


@pytest.fixture
def settings_xcom(config) -> dict[str, Any]:
    return {**request_case_defaults(config), "seconds_per_business_day": None}


def test_respond_to_request_shows_the_draft_and_sends_the_receipt(
    config, ledger_dsn, smtp_sink, settings_xcom, task_context
):
    gate = RespondToRequestGate(task_id="respond_to_request", config=config)
    assert gate.assigned_users == [{"id": "carla", "name": "carla"}]
    context = task_context("initiation.respond_to_request", **{REQUEST_CASE_TASK_ID: settings_xcom})
    body = gate.render_body(context)
    assert "| Case | ACME-1042 |" in body
    assert "will be in touch within 1 business day" in body
    assert "alice.admin@acme.example" in body

    result = gate.execute_complete(
        context, _answer([gate.OPTION], {"information_gathered": "VPN access <ok>"})
    )

    assert len(smtp_sink.messages) == 1
    sent = smtp_sink.messages[0]
    assert smtp_sink.recipients[0] == [
        "alice.admin@acme.example",
        "carla@platinum.example",
        "pete@platinum.example",
    ]
    assert sent["Message-ID"] == result["email"]["message_id"]
    assert "VPN access <ok>" in sent.get_body(preferencelist=("plain",)).get_content()
    assert "VPN access &lt;ok&gt;" in sent.get_body(preferencelist=("html",)).get_content()
    assert result["responded_by"] == "carla"
    answers = _ledger_rows(
        ledger_dsn,
        "SELECT task_id, responded_by, chosen_options, params_input FROM managed_upgrade.gate_answers",
    )
    assert answers == [
        ("initiation.respond_to_request", "carla", [gate.OPTION], {"information_gathered": "VPN access <ok>"})
    ]


def test_acknowledge_request_previews_next_steps_and_sends_them(
    config, ledger_dsn, smtp_sink, settings_xcom, task_context
):
    gate = AcknowledgeRequestGate(task_id="acknowledge_request_formally", config=config)
    assert gate.assigned_users == [{"id": "pete", "name": "pete"}]
    context = task_context("initiation.acknowledge_request_formally", **{REQUEST_CASE_TASK_ID: settings_xcom})
    body = gate.render_body(context)
    assert "Planned total: 39 business days" in body
    assert "```text\n" in body

    result = gate.execute_complete(
        context, _answer([gate.OPTION], {"kickoff_note": "Kick-off Monday 10:00"}, "pete")
    )

    text = smtp_sink.messages[0].get_body(preferencelist=("plain",)).get_content()
    assert "formally acknowledge receipt of your Platinum Service Request ACME-1042" in text
    assert "Kick-off Monday 10:00" in text
    assert result["email"]["kind"] == "request_acknowledged"


def test_gate_without_run_settings_fails_clearly(config, ledger_dsn, task_context):
    gate = RespondToRequestGate(task_id="respond_to_request", config=config)
    with pytest.raises(AirflowFailException, match=f"no run settings in the XCom of {REQUEST_CASE_TASK_ID}"):
        gate.render_body(task_context("initiation.respond_to_request"))


def test_gate_rejects_an_answer_with_unknown_options_or_params(config, ledger_dsn, task_context):
    gate = ReviewTestCaseVerificationGate(task_id="review_test_case_verification", config=config)
    context = task_context("preparation.review_test_case_verification")
    with pytest.raises(ValueError, match="not in"):
        gate.execute_complete(context, _answer(["Ship it"], {}))
    with pytest.raises(ValueError, match="does not match params"):
        gate.execute_complete(context, _answer([gate.APPROVE], {"mood": "good"}))
    assert _ledger_rows(ledger_dsn, "SELECT count(*) FROM managed_upgrade.gate_answers") == [(0,)]


def _baseline() -> TestReport:
    now = datetime(2027, 1, 18, 10, tzinfo=UTC)
    return TestReport(
        environment="dev",
        round=0,
        started_at=now,
        finished_at=now,
        results=(
            CaseResult(id="crm_status", title="CRM healthy", kind="command", status="passed", duration=0.2),
            CaseResult(id="default_currency", title="Currency EUR", kind="sql", status="failed", duration=0.1,
                       message="expected [['EUR']], got [['USD']]"),
        ),
    )  # fmt: skip


def test_review_gate_shows_the_baseline_from_the_ledger(config, ledger_dsn, task_context):
    gate = ReviewTestCaseVerificationGate(task_id="review_test_case_verification", config=config)
    context = task_context("preparation.review_test_case_verification")
    ti = context["ti"]
    report = _baseline()
    connection = psycopg2.connect(ledger_dsn)
    try:
        ledger = Ledger(connection)
        ledger.save_test_report(
            DAG_ID, ti.run_id, "dev", 1, report.to_dict(), "<x/>", "round one, not the baseline"
        )
        ledger.save_test_report(
            DAG_ID, ti.run_id, "dev", 0, report.to_dict(), report.to_junit_xml(), "BASELINE MD"
        )
    finally:
        connection.close()
    body = gate.render_body(context)
    assert "BASELINE MD" in body and "round one" not in body

    result = gate.execute_complete(
        context, _answer([gate.APPROVE], {"review_notes": "currency case fails today"})
    )
    assert result["chosen_options"] == [gate.APPROVE]


def test_review_gate_falls_back_to_the_verification_xcom_and_can_abort(config, ledger_dsn, task_context):
    gate = ReviewTestCaseVerificationGate(task_id="review_test_case_verification", config=config)
    context = task_context(
        "preparation.review_test_case_verification", **{VERIFY_TEST_CASES_TASK_ID: _baseline().to_dict()}
    )
    body = gate.render_body(context)
    assert "**1 of 2 passed** on dev, round 0" in body
    assert "| `default_currency` Currency EUR | **failed** | expected \\[\\['EUR'\\]\\], got" in body

    with pytest.raises(
        AirflowFailException, match=r"review by carla at .*: test cases do not cover the ERP sync"
    ):
        gate.execute_complete(
            context, _answer(["Abort upgrade"], {"review_notes": "test cases do not cover the ERP sync"})
        )


def test_email_preview_fence_outlasts_backticks_in_the_text():
    text = "uses ``` and ```` inside"
    block = fenced(text)
    assert block.startswith("`````text\n") and block.endswith("\n`````")
    assert fenced("plain") == "```text\nplain\n```"


def test_gates_in_a_dag_with_trigger_params_keep_their_own_form_fields(config):
    """The DAG's trigger-form params must neither hide the gate's fields nor show up in its form."""
    from airflow.sdk import DAG, Param, TaskGroup

    trigger_form = {"case_id": Param("ACME-1042", type="string"), "analysis_notes": Param("x", type="string")}
    with DAG("managed_upgrade__acme", schedule=None, params=trigger_form), TaskGroup("initiation"):
        gates = {
            "respond": RespondToRequestGate(task_id="respond_to_request", config=config),
            "acknowledge": AcknowledgeRequestGate(task_id="acknowledge_request_formally", config=config),
            "review": ReviewTestCaseVerificationGate(task_id="review_test_case_verification", config=config),
            "custom": ReviewTestCaseVerificationGate(
                task_id="custom", config=config, params={"only": Param("", type="string")}
            ),
        }
    fields = {name: sorted(gate.serialized_params) for name, gate in gates.items()}
    assert fields == {
        "respond": ["information_gathered"],
        "acknowledge": ["kickoff_note"],
        "review": ["review_notes"],
        "custom": ["only"],
    }
    review_notes = gates["review"].serialized_params["review_notes"]
    assert review_notes["value"] is None  # may stay empty: the UI form keeps its buttons enabled
    assert review_notes["schema"]["type"] == ["null", "string"]
    assert gates["respond"].serialized_params["information_gathered"]["schema"]["format"] == "multiline"
