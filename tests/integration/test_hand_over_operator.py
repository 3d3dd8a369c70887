"""Hand over Development: the customer hears about an upgrade only when the environment really runs it.

A fresh Dev installation of 10.2.0 gets its baseline, is upgraded by the estate's installer to the
run's target version (11.1.0, set at trigger time; the config says 11.0.0), gets its sanity round,
and is handed over: the e-mail goes through a real SMTP server on 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException
from pydantic import TypeAdapter

from managed_upgrade.config import TestCase, load_customer_config
from managed_upgrade_airflow.operators.hand_over import HandOverEnvironmentOperator
from managed_upgrade_airflow.operators.request_case import request_case_defaults
from managed_upgrade_airflow.run_settings_xcom import REQUEST_CASE_TASK_ID
from managed_upgrade_airflow.testcase_executors import load_baseline, run_environment_tests

pytestmark = pytest.mark.integration

CUSTOMERS = Path(__file__).resolve().parents[2] / "include" / "customers"
DAG_ID = "managed_upgrade__acme"
TARGET = "11.1.0"
KNOWN_ISSUES = "The currency report waits for the customer's FX feed."
HAND_OVER = {"task_id": "hand_over_environment", "environment": "dev"}


@pytest.fixture(scope="module")
def config():
    return load_customer_config(CUSTOMERS / "acme.yaml")


@pytest.fixture
def settings_xcom(config):
    """What create_request_case pushed: the config's request, with ops' target version from the form."""
    return {**request_case_defaults(config), "target_version": TARGET}


def test_hand_over_sends_the_latest_report_to_the_customer_when_the_target_runs(
    config, isolated_customer, upgrade_installation, ledger_dsn, smtp_sink, settings_xcom, task_context
):
    config, installations = isolated_customer(config, dev="10.2.0")
    context = task_context(
        "dev.hand_over_environment",
        **{
            REQUEST_CASE_TASK_ID: settings_xcom,
            "dev.fix_and_retest": {"known_issues": KNOWN_ISSUES},
        },
    )
    run_id = context["ti"].run_id
    run_environment_tests(config, "dev", round_number=0, baseline=None, dag_id=DAG_ID, run_id=run_id)
    upgrade_installation(installations["dev"], TARGET)
    run_environment_tests(
        config, "dev", round_number=1, baseline=load_baseline(DAG_ID, run_id), dag_id=DAG_ID, run_id=run_id
    )

    xcom = HandOverEnvironmentOperator(config=config, **HAND_OVER).execute(context)

    customers = ["alice.admin@acme.example"]
    copies = ["carla@platinum.example", "pete@platinum.example"]
    assert xcom["environment"] == "dev"
    assert xcom["version"] == TARGET
    assert xcom["report"] == {"round": 1, "headline": "3 of 3 passed"}
    assert (xcom["to"], xcom["cc"]) == (customers, copies)

    assert len(smtp_sink.messages) == 1
    message = smtp_sink.messages[0]
    assert message["Message-ID"] == xcom["message_id"]
    assert sorted(smtp_sink.recipients[0]) == sorted(customers + copies)
    assert message["Subject"] == (
        f"[ACME-1042] ACME Corporation: Development environment upgraded to {TARGET} - ready for your testing"
    )
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert f"Your Development environment now runs Aurea CRM {TARGET}." in text
    assert "CRM reports a healthy installation" in text
    assert KNOWN_ISSUES in text


def test_pre_existing_failures_are_marked_as_such_in_the_hand_over(
    config, isolated_customer, upgrade_installation, ledger_dsn, smtp_sink, settings_xcom, task_context
):
    extra = TypeAdapter(TestCase).validate_python(
        {
            "id": "loyalty_module",
            "title": "Loyalty module installed",
            "kind": "command",
            "argv": ["test", "-d", "modules/loyalty"],
        }
    )
    config = config.model_copy(update={"test_cases": (*config.test_cases, extra)})
    config, installations = isolated_customer(config, dev="10.2.0")
    context = task_context("dev.hand_over_environment", **{REQUEST_CASE_TASK_ID: settings_xcom})
    run_id = context["ti"].run_id
    run_environment_tests(config, "dev", round_number=0, baseline=None, dag_id=DAG_ID, run_id=run_id)
    upgrade_installation(installations["dev"], TARGET)
    run_environment_tests(
        config, "dev", round_number=1, baseline=load_baseline(DAG_ID, run_id), dag_id=DAG_ID, run_id=run_id
    )

    xcom = HandOverEnvironmentOperator(config=config, **HAND_OVER).execute(context)

    assert xcom["report"]["headline"] == "3 of 4 passed"
    text = smtp_sink.messages[0].get_body(preferencelist=("plain",)).get_content()
    assert "Loyalty module installed" in text
    assert "failed (failed before the upgrade too)" in text
    assert "1 failed before the upgrade as well (not caused by it)." in text
    assert "still fail" not in text


def test_hand_over_refuses_an_environment_not_on_the_target_version(
    config, isolated_customer, ledger_dsn, smtp_sink, settings_xcom, task_context
):
    config, _ = isolated_customer(config, dev="10.2.0")
    context = task_context("dev.hand_over_environment", **{REQUEST_CASE_TASK_ID: settings_xcom})
    run_environment_tests(
        config, "dev", round_number=1, baseline=None, dag_id=DAG_ID, run_id=context["ti"].run_id
    )
    operator = HandOverEnvironmentOperator(config=config, **HAND_OVER)

    with pytest.raises(AirflowFailException) as failure:
        operator.execute(context)

    message = str(failure.value)
    assert message.startswith("not handing over dev: dev: ")
    assert f"should run {TARGET}: VERSION says 10.2.0" in message
    assert "The customer was not told" in message
    assert smtp_sink.messages == []


def test_hand_over_needs_a_test_report_of_the_environment(
    config, isolated_customer, upgrade_installation, ledger_dsn, smtp_sink, settings_xcom, task_context
):
    config, installations = isolated_customer(config, dev="10.2.0")
    upgrade_installation(installations["dev"], TARGET)
    context = task_context("dev.hand_over_environment", **{REQUEST_CASE_TASK_ID: settings_xcom})
    operator = HandOverEnvironmentOperator(config=config, **HAND_OVER)

    with pytest.raises(AirflowFailException, match="no test report of dev in the ledger"):
        operator.execute(context)
    assert smtp_sink.messages == []


def test_hand_over_without_run_settings_fails_clearly(config, ledger_dsn, smtp_sink, task_context):
    operator = HandOverEnvironmentOperator(task_id="hand_over_environment", config=config, environment="uat")
    with pytest.raises(AirflowFailException, match=f"no run settings in the XCom of {REQUEST_CASE_TASK_ID}"):
        operator.execute(task_context("uat.hand_over_environment"))
