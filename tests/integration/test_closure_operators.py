"""Closure: "latest version running on all the environments" is checked on the hosts, then announced.

Three fresh installations (Dev, UAT, Prod) of 10.2.0 are upgraded by the estate's installer to the
run's target version, 11.1.0 (set at trigger time; the config says 11.0.0). The run's facts that
other tasks record (backups, test rounds, a fix, sign-offs, activity events) are written to a
throwaway ledger through the ledger's own API; the completion e-mail goes to a real SMTP server.

No wall clock: the run's facts sit at fixed instants, and the completion is sent on a fixed "today"
(``fixed_today``: a weekday, a weekend day, a holiday eve, a DST change day) in a customer calendar
with a DST zone and public holidays, through the operator's ``clock``.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from airflow.sdk.exceptions import AirflowFailException

from managed_upgrade.config import load_customer_config
from managed_upgrade.ledger import Ledger
from managed_upgrade_airflow.ledger_access import open_ledger
from managed_upgrade_airflow.operators.closure import (
    VERIFY_TASK_ID,
    SendCompletionOperator,
    VerifyTargetVersionsOperator,
    stage_durations,
)
from managed_upgrade_airflow.operators.request_case import request_case_defaults
from managed_upgrade_airflow.run_settings_xcom import REQUEST_CASE_TASK_ID
from managed_upgrade_airflow.testcase_executors import (
    EnvironmentUnreachableError,
    load_baseline,
    run_environment_tests,
)

pytestmark = pytest.mark.integration

CUSTOMERS = Path(__file__).resolve().parents[2] / "include" / "customers"
DAG_ID = "managed_upgrade__acme"
TARGET = "11.1.0"
T0 = datetime(2026, 1, 12, 7, tzinfo=UTC)
"""Start of the run's recorded activity: Monday 08:00 in Berlin, weeks before every fixed "today".
Dev's sign-off waits on the customer from T0 + 20 h to T0 + 30 h, Tuesday 04:00-14:00 there: business
time in any calendar with Monday-Friday working days. The sign-offs are 20 days after T0."""
RUN_STARTED = T0 - timedelta(days=14)
SIGNED_OFF = f"carla, {(T0 + timedelta(days=20)).date().isoformat()}"
NOW = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)
"""When the completion is sent in the tests that do not vary "today"."""


@pytest.fixture(scope="module")
def config():
    return load_customer_config(CUSTOMERS / "acme.yaml")


@pytest.fixture
def settings_xcom(config):
    return {**request_case_defaults(config), "target_version": TARGET}


def _verify(config, context) -> dict[str, Any]:
    operator = VerifyTargetVersionsOperator.for_customer(config, task_id="verify_target_versions")
    return operator.execute(context)


def _record_run_facts(ledger: Ledger, run_id: str, settings: dict[str, Any]) -> None:
    """What the earlier tasks of the run leave in the ledger (besides the test reports)."""
    ledger.record_run(DAG_ID, run_id, "acme", settings)
    for env in ("dev", "uat", "prod"):
        ledger.record_backup(f"{env}-before", DAG_ID, run_id, "acme", env, f"/backups/{env}/1", "10.2.0", {})
        ledger.record_gate_answer(
            DAG_ID, run_id, f"{env}.customer_sign_off", 1, "carla", T0 + timedelta(days=20), ["Sign off"], {}
        )
    ledger.record_backup(
        "dev-other-run", DAG_ID, "an_older_run", "acme", "dev", "/backups/dev/0", "9.0.0", {}
    )
    ledger.record_fix(DAG_ID, run_id, "dev", 1, "carla", "Set password.min_length back to 12", {"sql": []})
    events = [
        ("dev.backup_environment", "ready", T0),
        ("dev.hand_over_environment", "finished", T0 + timedelta(hours=20)),
        ("dev.customer_sign_off", "waiting_on_customer", T0 + timedelta(hours=20)),
        ("dev.customer_sign_off", "resumed", T0 + timedelta(hours=30)),
        ("dev.customer_sign_off", "finished", T0 + timedelta(hours=30, minutes=30)),
    ]
    for key, event, at in events:
        ledger.record_event(DAG_ID, run_id, key, event, at=at)


def test_all_environments_on_the_target_are_verified_and_the_completion_summarises_the_run(
    config,
    isolated_customer,
    upgrade_installation,
    ledger_dsn,
    smtp_sink,
    settings_xcom,
    task_context,
    fixed_today,
):
    calendar = type(config.calendar).model_validate(fixed_today.calendar_settings)
    config = config.model_copy(update={"calendar": calendar})
    config, installations = isolated_customer(config, dev="10.2.0", uat="10.2.0", prod="10.2.0")
    context = task_context(VERIFY_TASK_ID, **{REQUEST_CASE_TASK_ID: settings_xcom})
    run_id = context["ti"].run_id
    run_environment_tests(config, "dev", round_number=0, baseline=None, dag_id=DAG_ID, run_id=run_id)
    for installation in installations.values():
        upgrade_installation(installation, TARGET)
    baseline = load_baseline(DAG_ID, run_id)
    for env in ("dev", "uat", "prod"):
        run_environment_tests(config, env, round_number=1, baseline=baseline, dag_id=DAG_ID, run_id=run_id)
    with open_ledger() as ledger:
        _record_run_facts(ledger, run_id, settings_xcom)

    verified = _verify(config, context)

    assert verified["target_version"] == TARGET
    for env in ("dev", "uat", "prod"):
        assert verified["environments"][env] == {
            "version": TARGET,
            "schema_version": TARGET,
            "crm_status_ok": True,
            "reachable": True,
            "problem": None,
        }

    completion = SendCompletionOperator(task_id="send_completion", config=config, clock=fixed_today.clock)
    summary = completion.execute(
        task_context(
            "closure.send_completion",
            run_id=run_id,
            run_started_at=RUN_STARTED,
            **{REQUEST_CASE_TASK_ID: settings_xcom, VERIFY_TASK_ID: verified},
        )
    )

    assert len(smtp_sink.messages) == 1
    message = smtp_sink.messages[0]
    assert message["Subject"] == (
        f"[ACME-1042] ACME Corporation: Managed Upgrade complete - Aurea CRM {TARGET} on all environments"
    )
    assert message["To"] == "alice.admin@acme.example"
    assert message["Cc"] == "carla@platinum.example, pete@platinum.example"
    assert message["Message-ID"] == summary["email"]["message_id"]
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert f"the latest version of Aurea CRM, {TARGET}, is running on all the environments" in text
    for title in ("Development", "UAT", "Production"):
        row = next(line for line in text.splitlines() if line.startswith(title))
        assert row.split()[1:4] == ["10.2.0", TARGET, "3"], row
        assert row.endswith(SIGNED_OFF)

    assert summary["target_version"] == TARGET and summary["case_id"] == "ACME-1042"
    dev = summary["environments"]["dev"]
    assert dev["version"] == TARGET and dev["previous_version"] == "10.2.0"
    assert [backup["backup_id"] for backup in dev["backups"]] == ["dev-before"]
    assert [(r["round"], r["headline"], r["blocking"]) for r in dev["test_rounds"]] == [
        (0, "3 of 3 passed", 0),
        (1, "3 of 3 passed", 0),
    ]
    assert [(fix["round"], fix["recorded_by"]) for fix in dev["fixes"]] == [(1, "carla")]
    assert dev["signed_off"]["by"] == "carla" and dev["signed_off"]["options"] == ["Sign off"]
    assert dev["duration"]["elapsed_hours"] == 30.5
    assert dev["duration"]["customer_wait_hours"] == 10.0
    assert summary["environments"]["uat"]["fixes"] == []
    assert [r["round"] for r in summary["environments"]["prod"]["test_rounds"]] == [1]
    now = fixed_today.now
    assert summary["completed_at"] == now.isoformat()
    assert summary["duration"]["source"] == "ledger_events"
    assert summary["duration"]["run_started_at"] == RUN_STARTED.isoformat()
    assert summary["duration"]["elapsed_hours"] == round((now - RUN_STARTED).total_seconds() / 3600, 2)
    # Development is still open (its upgrade and tests have no events here): its clock runs until now,
    # on the customer's business days; the sign-off wait is the customer's, not the budget's.
    development = next(u for u in summary["schedule"]["units"] if u["budget_unit"] == "development")
    business = fixed_today.calendar
    waited = business.business_days_between(T0 + timedelta(hours=20), T0 + timedelta(hours=30))
    assert waited == 10 / 24
    assert development["actual_start"] == T0.isoformat() and development["status"] == "running"
    assert development["customer_wait_days"] == round(waited, 2)
    assert development["consumed_days"] == round(business.business_days_between(T0, now) - waited, 2)
    assert summary["schedule"]["misses"] == [
        u["budget_unit"] for u in summary["schedule"]["units"] if u["missed"]
    ]

    with psycopg2.connect(ledger_dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT summary, finished_at FROM managed_upgrade.runs WHERE dag_id = %s AND run_id = %s",
            (DAG_ID, run_id),
        )
        stored, finished_at = cursor.fetchone()
    connection.close()
    assert stored == json.loads(json.dumps(summary))
    assert finished_at is not None

    # The task cleared or retried after it finished: the customer is not mailed a second time.
    again = completion.execute(
        task_context(
            "closure.send_completion",
            run_id=run_id,
            run_started_at=RUN_STARTED,
            **{REQUEST_CASE_TASK_ID: settings_xcom, VERIFY_TASK_ID: verified},
        )
    )
    assert len(smtp_sink.messages) == 1
    assert again == stored


def test_verify_fails_naming_each_environment_that_is_off_and_completion_is_not_announced(
    config, isolated_customer, upgrade_installation, ledger_dsn, smtp_sink, settings_xcom, task_context
):
    config, installations = isolated_customer(config, dev="10.2.0", uat="10.2.0", prod="10.2.0")
    upgrade_installation(installations["dev"], TARGET)
    upgrade_installation(installations["uat"], TARGET)
    (installations["uat"].install_path / "lib" / f"crm-core-{TARGET}.jar").unlink()
    context = task_context(VERIFY_TASK_ID, **{REQUEST_CASE_TASK_ID: settings_xcom})

    with pytest.raises(AirflowFailException) as failure:
        _verify(config, context)

    message = str(failure.value)
    assert message.startswith(f"2 of 3 environments do not run the target version {TARGET} (uat, prod):")
    assert f"  - prod: VERSION says 10.2.0, not the target {TARGET}; crm status" not in message
    assert f"  - prod: VERSION says 10.2.0, not the target {TARGET}" in message
    assert f"  - uat: crm status NOT ok: lib/crm-core-{TARGET}.jar missing" in message
    assert "dev:" not in message

    completion = SendCompletionOperator(task_id="send_completion", config=config)
    with pytest.raises(
        AirflowFailException, match=r"cannot announce completion: uat: .*; prod: VERSION says 10\.2\.0"
    ):
        completion.execute(
            task_context(
                "closure.send_completion",
                run_id=context["ti"].run_id,
                **{REQUEST_CASE_TASK_ID: settings_xcom},
            )
        )
    assert smtp_sink.messages == []


def test_an_unreachable_environment_fails_verify_so_that_it_is_retried(
    config, isolated_customer, airflow_connections, estate, ledger_dsn, settings_xcom, task_context
):
    config, _ = isolated_customer(config, dev=TARGET, uat=TARGET, prod=TARGET)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    dead = airflow_connections.add("dead_prod_ssh", {**estate.ssh_connection("prod"), "port": closed_port})
    prod = config.environments.prod.model_copy(update={"ssh_conn_id": dead})
    config = config.model_copy(update={"environments": config.environments.model_copy(update={"prod": prod})})

    with pytest.raises(
        EnvironmentUnreachableError, match=rf"\(prod\):\n  - prod: cannot reach prod over {dead}"
    ):
        _verify(config, task_context(VERIFY_TASK_ID, **{REQUEST_CASE_TASK_ID: settings_xcom}))


def test_completion_without_ledger_facts_reports_what_is_known(
    config, isolated_customer, ledger_dsn, smtp_sink, settings_xcom, task_context
):
    """Installations already on the target, no verify XCom, no events: versions are asked live,
    the previous version comes from the config, the duration from the run's start."""
    config, _ = isolated_customer(config, dev=TARGET, uat=TARGET, prod=TARGET)
    context = task_context(
        "closure.send_completion",
        run_started_at=NOW - timedelta(hours=5),
        **{REQUEST_CASE_TASK_ID: settings_xcom},
    )
    with open_ledger() as ledger:
        ledger.record_run(DAG_ID, context["ti"].run_id, "acme", settings_xcom)

    completion = SendCompletionOperator(task_id="send_completion", config=config, clock=lambda: NOW)
    summary = completion.execute(context)

    assert {env: s["version"] for env, s in summary["environments"].items()} == dict.fromkeys(
        ("dev", "uat", "prod"), TARGET
    )
    assert summary["environments"]["uat"]["previous_version"] == config.versions.current
    assert summary["environments"]["uat"]["backups"] == []
    assert summary["environments"]["uat"]["signed_off"] is None
    assert summary["duration"]["source"] == "dag_run"
    assert summary["duration"]["elapsed_hours"] == 5.0
    assert summary["completed_at"] == NOW.isoformat()
    assert "stages" not in summary["duration"]
    assert len(smtp_sink.messages) == 1


def test_stage_durations_pair_waits_per_activity_and_span_the_stage():
    events = [
        {"activity_key": "uat.upgrade_environment", "event": "started", "at": T0 + timedelta(hours=1)},
        {"activity_key": "uat.backup_environment", "event": "ready", "at": T0},
        {
            "activity_key": "uat.customer_sign_off",
            "event": "waiting_on_customer",
            "at": T0 + timedelta(hours=2),
        },
        {"activity_key": "uat.customer_sign_off", "event": "resumed", "at": T0 + timedelta(hours=5)},
        {
            "activity_key": "uat.customer_sign_off",
            "event": "waiting_on_customer",
            "at": T0 + timedelta(hours=6),
        },
        {"activity_key": "uat.customer_sign_off", "event": "resumed", "at": T0 + timedelta(hours=7)},
        {"activity_key": "uat.customer_sign_off", "event": "finished", "at": T0 + timedelta(hours=8)},
        {"activity_key": "prod.backup_environment", "event": "ready", "at": T0 + timedelta(hours=9)},
    ]
    durations = stage_durations(events)
    assert durations["uat"] == {
        "started_at": T0.isoformat(),
        "finished_at": (T0 + timedelta(hours=8)).isoformat(),
        "elapsed_hours": 8.0,
        "customer_wait_hours": 4.0,
    }
    assert durations["prod"]["elapsed_hours"] is None  # started, not finished
