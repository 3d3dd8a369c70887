"""Retries for the tasks that may run again: after a crash or an outage, never after their own verdict.

A worker killed mid-task (its heartbeat lost) or a host, database or mail server briefly gone
should not fail a weeks-long upgrade. Only tasks whose second run repeats nothing visible get
retries: reading an environment, running its test cases (the report is replaced), taking a backup
(a new one; a half-written one stays ``.partial`` until retention removes it) and the customer
e-mails that the ledger keeps from going out twice (:mod:`.customer_outbox`). Applying fixes,
re-applying settings and the human gates are not retried: their second run would be a second
change or a second question.

A killed worker raises nothing: the scheduler retries it by the count alone. When the task itself
raises, :class:`RetryOnOutage` decides: an outage anywhere in the exception's chain (connection
refused, reset, timed out, an SSH or database connection lost) is retried; anything else is the
task's own finding about the environment (a full disk, a wrong version, a failed check) and fails at
once for a person to look at, as it did before retries existed.

Upgrading and staging have retries of their own, built for their resumable work
(:mod:`.dag_factory`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import RetryDecision, RetryPolicy

from managed_upgrade.process.model import Activity
from managed_upgrade_airflow.testcase_executors import EnvironmentUnreachableError

if TYPE_CHECKING:
    from airflow.sdk import Context

CRASH_SAFE_ACTIVITIES = frozenset(
    {
        "initiation.inventory_dev_system",
        "preparation.verify_test_cases_dev",
        "preparation.backup_configuration_files",
        "*.backup_environment",
        "*.sanity_test",
        "*.hand_over_environment",
        "closure.verify_target_versions",
        "closure.send_completion",
    }
)
"""Activity keys (``*.`` for an activity id in every environment stage) that may run again."""

CRASH_RETRIES = 2
CRASH_RETRY_DELAY = timedelta(seconds=30)
"""Long enough for a restarted worker, host or database to be back; short against a business day."""


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _refused(error: BaseException) -> bool:
    import paramiko

    return isinstance(error, (paramiko.AuthenticationException, paramiko.BadHostKeyException))


def is_outage(error: BaseException) -> bool:
    """True for a lost, refused or timed-out connection to a host, database or mail server."""
    import paramiko
    import psycopg2

    return not _refused(error) and isinstance(
        error,
        (
            EnvironmentUnreachableError,
            ConnectionError,
            TimeoutError,
            EOFError,
            paramiko.SSHException,
            paramiko.ssh_exception.NoValidConnectionsError,
            psycopg2.OperationalError,
            psycopg2.InterfaceError,
        ),
    )


class RetryOnOutage(RetryPolicy):
    """Retry when an outage is in the exception's chain; fail at once otherwise, and always when a
    login or host key was refused (a person must fix those, another try changes nothing)."""

    def evaluate(
        self,
        exception: BaseException,
        try_number: int,
        max_tries: int,
        context: Context | None = None,
    ) -> RetryDecision:
        chain = list(_chain(exception))
        refused = next((error for error in chain if _refused(error)), None)
        if refused is not None:
            return RetryDecision.fail(reason=f"refused ({type(refused).__name__}): not retried")
        outage = next((error for error in chain if is_outage(error)), None)
        if outage is not None:
            return RetryDecision.retry(reason=f"an outage, worth another try: {type(outage).__name__}")
        return RetryDecision.fail(reason=f"the task's own failure ({type(exception).__name__}): not retried")

    def serialize(self) -> dict[str, Any]:
        return {"__type": type(self).__name__}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> RetryOnOutage:
        return cls()


def crash_retries(activity: Activity) -> dict[str, Any]:
    """The retry arguments of ``activity``'s task: retries on crash and outage, or none (``{}``)."""
    if activity.key not in CRASH_SAFE_ACTIVITIES and f"*.{activity.id}" not in CRASH_SAFE_ACTIVITIES:
        return {}
    return {"retries": CRASH_RETRIES, "retry_delay": CRASH_RETRY_DELAY, "retry_policy": RetryOnOutage()}
