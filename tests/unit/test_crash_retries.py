"""Which tasks run again after a crash, and which failures are worth another try."""

from __future__ import annotations

import paramiko
import psycopg2
import pytest
from airflow.sdk import RetryAction
from airflow.serialization.serialized_objects import DagSerialization

from managed_upgrade.config import DEFAULT_CUSTOMERS_DIR, load_customer_configs
from managed_upgrade.errors import BackupError, ChecksumMismatchError
from managed_upgrade_airflow.crash_retries import CRASH_RETRIES, CRASH_SAFE_ACTIVITIES, RetryOnOutage
from managed_upgrade_airflow.dag_factory import build_dag
from managed_upgrade_airflow.email_sender import EmailDeliveryError
from managed_upgrade_airflow.testcase_executors import EnvironmentUnreachableError


@pytest.fixture(scope="module")
def acme_dag():
    configs, _ = load_customer_configs(DEFAULT_CUSTOMERS_DIR)
    return build_dag(configs["acme"])


def _raised(error: BaseException, cause: BaseException | None = None) -> BaseException:
    """``error`` as Python leaves it after ``raise error from cause``."""
    try:
        raise error from cause
    except BaseException as raised:
        return raised


def _decision(error: BaseException) -> RetryAction:
    return RetryOnOutage().evaluate(error, try_number=1, max_tries=CRASH_RETRIES + 1).action


RETRY_SAFE = [
    "initiation.inventory_dev_system",
    "preparation.verify_test_cases_dev",
    "dev.backup_environment",
    "uat.sanity_test",
    "prod.hand_over_environment",
    "closure.verify_target_versions",
    "closure.send_completion",
]
NOT_RETRIED = [
    "initiation.create_request_case",
    "initiation.respond_to_request",
    "initiation.analyse_questionnaire_and_system",
    "preparation.review_test_case_verification",
    "dev.reapply_settings",
    "uat.transfer_fixes",
    "prod.fix_and_retest",
    "prod.customer_sign_off",
]


@pytest.mark.parametrize("task_id", RETRY_SAFE)
def test_tasks_that_repeat_nothing_visible_are_retried_on_crash_and_outage_only(acme_dag, task_id):
    task = acme_dag.get_task(task_id)
    assert task.retries == CRASH_RETRIES
    assert isinstance(task.retry_policy, RetryOnOutage)


@pytest.mark.parametrize("task_id", NOT_RETRIED)
def test_changes_and_questions_are_not_retried(acme_dag, task_id):
    task = acme_dag.get_task(task_id)
    assert task.retries == 0
    assert task.retry_policy is None


def test_the_mapped_preparation_backups_carry_the_policy_into_the_serialized_dag(acme_dag):
    serialized = {
        t["__var"]["task_id"]: t["__var"] for t in DagSerialization.to_dict(acme_dag)["dag"]["tasks"]
    }
    backups = serialized["preparation.backup_configuration_files"]["partial_kwargs"]
    assert backups["retries"] == CRASH_RETRIES and backups["has_retry_policy"] is True
    assert serialized["dev.sanity_test"]["has_retry_policy"] is True
    assert serialized["dev.reapply_settings"].get("has_retry_policy", False) is False


def test_upgrade_and_staging_keep_their_own_retries(acme_dag):
    assert acme_dag.get_task("dev.upgrade_environment").retries == 2
    assert acme_dag.get_task("preparation.stage_upgrade_files").retries == 3
    assert not {"*.upgrade_environment", "preparation.stage_upgrade_files"} & CRASH_SAFE_ACTIVITIES


@pytest.mark.parametrize(
    "error",
    [
        EnvironmentUnreachableError("uat: cannot connect to crm-uat:22"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
        paramiko.SSHException("Error reading SSH protocol banner"),
        paramiko.ssh_exception.NoValidConnectionsError({("127.0.0.1", 22): ConnectionRefusedError()}),
        psycopg2.OperationalError("server closed the connection unexpectedly"),
        _raised(BackupError("uat: tar of /opt/crm stopped"), EOFError()),
        _raised(
            EmailDeliveryError("sending handover message failed"), ConnectionRefusedError(111, "refused")
        ),
    ],
    ids=lambda error: type(error).__name__,
)
def test_an_outage_anywhere_in_the_chain_is_worth_another_try(error):
    assert _decision(error) is RetryAction.RETRY


@pytest.mark.parametrize(
    "error",
    [
        BackupError("uat: not enough space for a backup of /opt/crm in /backup"),
        ChecksumMismatchError("crm.tar", "uat", "aa", "bb"),
        ValueError("connection crm_uat_db must give host and schema"),
        paramiko.AuthenticationException("Authentication failed"),
        _raised(
            EnvironmentUnreachableError("uat: login refused"), paramiko.AuthenticationException("denied")
        ),
        _raised(
            BackupError("uat: host key changed"),
            paramiko.BadHostKeyException(
                "crm-uat", paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)
            ),
        ),
    ],
    ids=lambda error: type(error).__name__,
)
def test_the_tasks_own_findings_and_refused_logins_fail_at_once(error):
    assert _decision(error) is RetryAction.FAIL
