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
from managed_upgrade_airflow.email_sender import EmailDeliveryError
from managed_upgrade_airflow.ledger_access import open_ledger
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
    config, context = _handed_over_context(
        config,
        isolated_customer,
        upgrade_installation,
        settings_xcom,
        task_context,
        **{"dev.fix_and_retest": {"known_issues": KNOWN_ISSUES}},
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
    config, context = _handed_over_context(
        config, isolated_customer, upgrade_installation, settings_xcom, task_context
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


def _handed_over_context(
    config, isolated_customer, upgrade_installation, settings_xcom, task_context, **xcoms
):
    """Dev upgraded to the target with its baseline and sanity round: ready to be handed over."""
    config, installations = isolated_customer(config, dev="10.2.0")
    context = task_context("dev.hand_over_environment", **{REQUEST_CASE_TASK_ID: settings_xcom, **xcoms})
    run_id = context["ti"].run_id
    run_environment_tests(config, "dev", round_number=0, baseline=None, dag_id=DAG_ID, run_id=run_id)
    upgrade_installation(installations["dev"], TARGET)
    run_environment_tests(
        config, "dev", round_number=1, baseline=load_baseline(DAG_ID, run_id), dag_id=DAG_ID, run_id=run_id
    )
    return config, context


def test_a_hand_over_run_again_after_the_mail_went_out_does_not_mail_the_customer_twice(
    config, isolated_customer, upgrade_installation, ledger_dsn, smtp_sink, settings_xcom, task_context
):
    config, context = _handed_over_context(
        config, isolated_customer, upgrade_installation, settings_xcom, task_context
    )

    first = HandOverEnvironmentOperator(config=config, **HAND_OVER).execute(context)
    again = HandOverEnvironmentOperator(config=config, **HAND_OVER).execute(context)

    assert len(smtp_sink.messages) == 1
    assert first["delivery"] == "sent" and again["delivery"] == "already_sent"
    assert again["message_id"] == first["message_id"] == smtp_sink.messages[0]["Message-ID"]
    with open_ledger() as ledger:
        (row,) = ledger.customer_emails(context["ti"].dag_id, context["ti"].run_id)
    assert row["email_key"] == "dev.hand_over_environment" and row["attempts"] == 1
    assert row["sent"]["message_id"] == first["message_id"] and row["sent_at"] is not None


def test_a_hand_over_that_died_while_sending_sends_again_under_the_same_message_id(
    config, isolated_customer, upgrade_installation, ledger_dsn, smtp_sink, settings_xcom, task_context
):
    config, context = _handed_over_context(
        config, isolated_customer, upgrade_installation, settings_xcom, task_context
    )
    ti = context["ti"]
    claimed_id = "<interrupted.try@platinum.example>"
    with open_ledger() as ledger:  # what a try killed between the claim and the mark leaves behind
        ledger.claim_customer_email(ti.dag_id, ti.run_id, "dev.hand_over_environment", claimed_id)

    xcom = HandOverEnvironmentOperator(config=config, **HAND_OVER).execute(context)

    assert xcom["delivery"] == "resent" and xcom["message_id"] == claimed_id
    assert [message["Message-ID"] for message in smtp_sink.messages] == [claimed_id]
    with open_ledger() as ledger:
        (row,) = ledger.customer_emails(ti.dag_id, ti.run_id)
    assert row["attempts"] == 2 and row["sent"]["message_id"] == claimed_id


def test_a_hand_over_that_failed_to_send_leaves_the_mail_claimed_but_unsent(
    config, isolated_customer, upgrade_installation, ledger_dsn, smtp_sink, settings_xcom, task_context
):
    config, context = _handed_over_context(
        config, isolated_customer, upgrade_installation, settings_xcom, task_context
    )
    ti = context["ti"]
    operator = HandOverEnvironmentOperator(
        config=config, smtp_conn_id="smtp_nowhere", **HAND_OVER
    )  # a connection nobody defined: the send fails after the claim

    with pytest.raises(EmailDeliveryError, match="smtp_nowhere"):
        operator.execute(context)

    with open_ledger() as ledger:
        (row,) = ledger.customer_emails(ti.dag_id, ti.run_id)
    assert row["sent_at"] is None and row["sent"] is None
    retried = HandOverEnvironmentOperator(config=config, **HAND_OVER).execute(context)
    assert retried["delivery"] == "resent" and retried["message_id"] == row["message_id"]
    assert len(smtp_sink.messages) == 1
