"""Verify test cases in Dev, upgrade, Test: the customer's cases on real environments, judged and kept.

The baseline runs on a fresh Dev installation of 10.2.0; the estate's vendor installer then upgrades
it to 11.0.0 (which resets a customer setting and adds the analytics module) and the sanity test runs
round 1 against the baseline. Reports are read back from a throwaway ledger database.
"""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from managed_upgrade.config import TestCase, load_customer_config
from managed_upgrade.verification.report import BaselineOutcome, TestReport
from managed_upgrade_airflow.ledger_access import open_ledger
from managed_upgrade_airflow.operators.sanity_test import SanityTestOperator
from managed_upgrade_airflow.testcase_executors import EnvironmentUnreachableError, load_baseline, load_report

pytestmark = pytest.mark.integration

CUSTOMERS = Path(__file__).resolve().parents[2] / "include" / "customers"
DAG_ID = "managed_upgrade__acme"

EXTRA_CASES = [
    {
        "id": "password_policy",
        "title": "Passwords need 12 characters",
        "kind": "sql",
        "query": "SELECT value FROM crm_settings WHERE key = 'password.min_length'",
        "expect": {"scalar": "12"},
    },
    {
        "id": "loyalty_module",
        "title": "Loyalty module installed",
        "kind": "command",
        "argv": ["test", "-f", "modules/loyalty/module.yaml"],
    },
    {
        "id": "analytics_module",
        "title": "Analytics module installed",
        "kind": "command",
        "argv": ["test", "-f", "modules/analytics/module.yaml"],
    },
    {
        "id": "prod_only",
        "title": "Only on production",
        "kind": "command",
        "argv": ["false"],
        "environments": ["prod"],
    },
]


@pytest.fixture(scope="module")
def config():
    """acme with its three own cases plus a setting the installer resets, a module that never
    existed, a module 11.0.0 brings, and a case for production only."""
    acme = load_customer_config(CUSTOMERS / "acme.yaml")
    extra = tuple(TypeAdapter(TestCase).validate_python(case) for case in EXTRA_CASES)
    return acme.model_copy(update={"test_cases": acme.test_cases + extra})


def _ledger_reports(run_id: str, environment: str | None = None) -> list[dict[str, Any]]:
    with open_ledger() as ledger:
        return ledger.test_reports(DAG_ID, run_id, environment)


def test_baseline_then_sanity_test_on_dev_after_a_real_upgrade(
    config, isolated_customer, upgrade_installation, ledger_dsn, task_context
):
    config, installations = isolated_customer(config, dev="10.2.0")
    baseline_task = SanityTestOperator(
        task_id="verify_test_cases_dev", config=config, environment="dev", baseline=True
    )
    context = task_context("preparation.verify_test_cases_dev")
    run_id = context["ti"].run_id

    baseline_xcom = baseline_task.execute(context)

    assert baseline_xcom["round"] == 0
    assert baseline_xcom["headline"] == "4 of 6 passed"
    assert sorted(baseline_xcom["failing"]) == ["analytics_module", "loyalty_module"]
    assert baseline_xcom["blocking"] == [] and baseline_xcom["summary"]["blocking"] == 0
    assert baseline_xcom["compared_with_baseline"] is False
    assert baseline_xcom["report_ref"] == {
        "dag_id": DAG_ID,
        "run_id": run_id,
        "environment": "dev",
        "round": 0,
    }
    assert "prod_only" not in json.dumps(baseline_xcom)

    upgrade_installation(installations["dev"], "11.0.0")

    sanity = SanityTestOperator(task_id="sanity_test", config=config, environment="dev")
    xcom = sanity.execute(task_context("dev.sanity_test", run_id=run_id))

    assert xcom["round"] == 1
    assert xcom["compared_with_baseline"] is True
    assert xcom["blocking"] == ["password_policy"]
    assert xcom["summary"] == {
        "total": 6,
        "passed": 4,
        "failed": 2,
        "errors": 0,
        "regressions": 1,
        "pre_existing": 1,
        "fixed": 1,
        "blocking": 1,
    }

    rows = _ledger_reports(run_id, "dev")
    assert [row["round"] for row in rows] == [0, 1]
    report = TestReport.from_dict(rows[1]["report"])
    outcome = {result.id: result.baseline for result in report.results}
    assert outcome == {
        "crm_status": BaselineOutcome.STILL_PASSING,
        "single_schema_version": BaselineOutcome.STILL_PASSING,
        "default_currency": BaselineOutcome.STILL_PASSING,
        "password_policy": BaselineOutcome.REGRESSION,
        "loyalty_module": BaselineOutcome.PRE_EXISTING,
        "analytics_module": BaselineOutcome.FIXED,
    }
    assert report.result("password_policy").message == "expected '12', got '8'"
    assert '"version": "11.0.0"' in report.result("crm_status").output
    assert report.baseline is not None and report.baseline.round == 0

    suite = ET.fromstring(rows[1]["junit_xml"].split("\n", 1)[1])
    types = {
        case.get("name").split(":")[0]: case[0].get("type") for case in suite.iter("testcase") if len(case)
    }
    assert types["password_policy"] == "regression"  # pragma: allowlist secret
    assert types["loyalty_module"] == "pre_existing"
    assert "| `loyalty_module` Loyalty module installed | failed (pre-existing) |" in rows[1]["markdown"]
    assert rows[1]["markdown"].startswith("**4 of 6 passed** on dev, round 1, compared with the dev baseline")

    assert load_report(DAG_ID, run_id, "dev") == report  # latest round
    assert load_baseline(DAG_ID, run_id).round == 0


def test_uat_sanity_test_is_judged_against_the_dev_baseline(
    config, isolated_customer, upgrade_installation, ledger_dsn, task_context
):
    config, installations = isolated_customer(config, dev="10.2.0", uat="10.2.0")
    run_id = task_context("x")["ti"].run_id
    SanityTestOperator(
        task_id="verify_test_cases_dev", config=config, environment="dev", baseline=True
    ).execute(task_context("preparation.verify_test_cases_dev", run_id=run_id))
    upgrade_installation(installations["uat"], "11.0.0")

    xcom = SanityTestOperator(task_id="sanity_test", config=config, environment="uat").execute(
        task_context("uat.sanity_test", run_id=run_id)
    )

    assert xcom["environment"] == "uat"
    assert xcom["blocking"] == ["password_policy"]
    assert xcom["summary"]["pre_existing"] == 1
    report = load_report(DAG_ID, run_id, "uat", 1)
    assert report.baseline is not None and report.baseline.environment == "dev"
    assert report.result("loyalty_module").baseline is BaselineOutcome.PRE_EXISTING
    assert load_report(DAG_ID, run_id, "dev", 1) is None  # Dev itself was not retested


def test_without_a_baseline_every_failure_blocks(config, isolated_customer, ledger_dsn, task_context):
    config, _ = isolated_customer(config, dev="10.2.0")
    xcom = SanityTestOperator(task_id="sanity_test", config=config, environment="dev").execute(
        task_context("dev.sanity_test")
    )
    assert xcom["compared_with_baseline"] is False
    assert sorted(xcom["blocking"]) == ["analytics_module", "loyalty_module"]


def test_an_unreachable_environment_fails_the_task_before_any_case_runs(
    config, isolated_customer, airflow_connections, estate, ledger_dsn, task_context
):
    config, _ = isolated_customer(config, dev="10.2.0")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    dead = airflow_connections.add("dead_dev_ssh", {**estate.ssh_connection("dev"), "port": closed_port})
    dev = config.environments.dev.model_copy(update={"ssh_conn_id": dead})
    config = config.model_copy(update={"environments": config.environments.model_copy(update={"dev": dev})})
    context = task_context("preparation.verify_test_cases_dev")

    operator = SanityTestOperator(
        task_id="verify_test_cases_dev", config=config, environment="dev", baseline=True
    )
    with pytest.raises(
        EnvironmentUnreachableError, match=rf"dev: cannot reach the host over SSH connection {dead}"
    ):
        operator.execute(context)
    assert _ledger_reports(context["ti"].run_id) == []


def test_an_unreachable_config_database_fails_the_task_too(
    config, isolated_customer, airflow_connections, estate, ledger_dsn, task_context
):
    config, installations = isolated_customer(config, dev="10.2.0")
    missing_db = airflow_connections.add(
        "missing_dev_db", {**estate.db_connection(installations["dev"].db_name), "schema": "crm_no_such_db"}
    )
    missing_test_db = airflow_connections.add(  # what the sql cases use: the read-only role's connection
        "missing_dev_test_db",
        {**estate.test_db_connection(installations["dev"].db_name), "schema": "crm_no_such_db"},
    )
    dev = config.environments.dev.model_copy(
        update={"db_conn_id": missing_db, "test_db_conn_id": missing_test_db}
    )
    config = config.model_copy(update={"environments": config.environments.model_copy(update={"dev": dev})})
    with pytest.raises(EnvironmentUnreachableError, match=r"crm_no_such_db"):
        SanityTestOperator(task_id="sanity_test", config=config, environment="dev").execute(
            task_context("dev.sanity_test")
        )


def test_the_baseline_runs_only_on_dev_and_environments_are_checked_when_the_dag_is_built(config):
    with pytest.raises(ValueError, match="baseline round runs on dev"):
        SanityTestOperator(task_id="t", config=config, environment="uat", baseline=True)
    with pytest.raises(KeyError, match="unknown environment 'qa'"):
        SanityTestOperator(task_id="t", config=config, environment="qa")


def test_the_saved_report_replaces_a_retried_round(config, isolated_customer, ledger_dsn, task_context):
    """A retry of the same round overwrites its report instead of adding a second one."""
    config, _ = isolated_customer(config, dev="10.2.0")
    context = task_context("dev.sanity_test")
    operator = SanityTestOperator(task_id="sanity_test", config=config, environment="dev")
    operator.execute(context)
    operator.execute(context)
    rows = _ledger_reports(context["ti"].run_id)
    assert [(row["environment"], row["round"]) for row in rows] == [("dev", 1)]
