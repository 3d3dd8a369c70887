"""Runs a customer's test cases on a real environment and keeps every round's report in the ledger.

:mod:`managed_upgrade.testcase_runner` judges test cases without knowing how they reach an
environment; this module is the production side of that contract: :class:`SshCommandExecutor`
runs a case's argv over the environment's SSH connection (``cd <install path> && shlex.join(argv)``,
the whole command bounded by the case timeout) and :class:`PostgresSqlExecutor` runs a case's query
in a ``READ ONLY`` transaction with ``SET LOCAL statement_timeout`` on the environment's config
database. :func:`run_environment_tests` is the one function every test round calls (the Dev
baseline, each sanity test, each retest): it runs the round, compares it with the baseline, and saves
it in the ledger as JSON, JUnit XML and markdown, so reviews, hand-overs and the completion summary
read the same report back with :func:`load_report` / :func:`load_baseline`.
"""

from __future__ import annotations

import logging
import select
import shlex
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.errors

from managed_upgrade.database import DbTarget
from managed_upgrade.errors import OperationError
from managed_upgrade.remote import RemoteHost
from managed_upgrade.testcase_report import TestReport
from managed_upgrade.testcase_runner import DEFAULT_TIMEOUT, CommandResult, HttpClient, run_test_cases
from managed_upgrade_airflow.hooks.crm_environment import CrmEnvironmentHook
from managed_upgrade_airflow.ledger_access import LEDGER_CONN_ID, open_ledger

if TYPE_CHECKING:
    from managed_upgrade.config import CustomerConfig
    from managed_upgrade.ledger import Ledger

log = logging.getLogger(__name__)

BASELINE_ENVIRONMENT = "dev"
BASELINE_ROUND = 0
"""The baseline is round 0 on Dev ("Verify Test Cases in the Development Environment")."""

OUTPUT_LIMIT = 4 * 1024 * 1024
"""Bytes of a command's stdout (and of its stderr) kept; the rest is read and dropped."""

MAX_ROWS = 10_000
"""Rows a test-case query may return; more is an error (a test case compares a small result)."""

_WAIT_SLICE = 0.25
"""Longest single wait for channel activity: bounds how late exit status or the deadline are noticed."""


class EnvironmentUnreachableError(OperationError):
    """The environment's host or configuration database cannot be reached; no case was run."""


# --- commands over SSH ----------------------------------------------------------------------------


class SshCommandExecutor:
    """:class:`~managed_upgrade.testcase_runner.CommandExecutor` on a :class:`RemoteHost`'s SSH session.

    The remote command line is ``cd <quoted cwd> && <shlex.join(argv)>``: relative programs such as
    ``bin/crm`` resolve in the installation and no argument is read as shell syntax. ``timeout`` bounds
    the whole command (not just the wait for output); when it runs out the channel is closed and
    :class:`TimeoutError` raised (the remote process gets EOF/SIGPIPE; it is not killed otherwise).
    """

    def __init__(self, host: RemoteHost, output_limit: int = OUTPUT_LIMIT) -> None:
        self.host = host
        self.output_limit = output_limit

    def run(self, argv: Sequence[str], cwd: str, timeout: float) -> CommandResult:
        argv = list(argv)
        if not argv or not all(isinstance(arg, str) for arg in argv):
            raise TypeError(f"argv must be a non-empty list of str, got {argv!r}")
        command = f"cd {shlex.quote(cwd)} && {shlex.join(argv)}"
        log.info("%s$ %s", self.host.label, command)
        started = time.monotonic()
        deadline = started + timeout
        transport = self.host.client.get_transport()
        if transport is None or not transport.is_active():
            raise OperationError(f"{self.host.label}: SSH connection is closed")
        channel = transport.open_session(timeout=timeout)
        stdout, stderr = _Capped(self.output_limit), _Capped(self.output_limit)
        try:
            channel.exec_command(command)
            channel.shutdown_write()
            while True:
                while channel.recv_ready():
                    stdout.add(channel.recv(65536))
                while channel.recv_stderr_ready():
                    stderr.add(channel.recv_stderr(65536))
                finished = channel.exit_status_ready() and (channel.eof_received or channel.closed)
                if finished and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{argv[0]} still running")
                if channel.eof_received:  # all output is in; only the exit status is still to come
                    channel.status_event.wait(min(remaining, _WAIT_SLICE))
                else:
                    select.select([channel], [], [], min(remaining, _WAIT_SLICE))
            exit_code = channel.recv_exit_status()
        finally:
            channel.close()
        return CommandResult(exit_code, stdout.text(), stderr.text(), time.monotonic() - started)


class _Capped:
    """Bytes collected up to a limit; what is beyond it is counted and noted, not kept."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        self.data += chunk[: max(room, 0)]
        self.dropped += max(len(chunk) - max(room, 0), 0)

    def text(self) -> str:
        text = self.data.decode("utf-8", errors="replace")
        return text + (f"\n… [{self.dropped} more bytes not kept]" if self.dropped else "")


# --- SQL on the config database -------------------------------------------------------------------


class PostgresSqlExecutor:
    """:class:`~managed_upgrade.testcase_runner.SqlExecutor` on an environment's config database.

    Each query runs in its own ``READ ONLY`` transaction, rolled back afterwards, with ``SET LOCAL
    statement_timeout`` from the case's timeout (it covers lock waits too); a cancelled statement
    raises :class:`TimeoutError`. The read-only transaction is the second line of defence behind
    :func:`~managed_upgrade.readonly_sql.require_single_select`: a write hidden in a function fails.
    One connection is opened on first use and reused; a broken one is replaced on the next query.

    :param database: a :class:`DbTarget` or a callable returning a new psycopg2 connection
    """

    def __init__(self, database: DbTarget | Callable[[], Any], max_rows: int = MAX_ROWS) -> None:
        self._connect: Callable[[], Any] = database.connect if isinstance(database, DbTarget) else database
        self.max_rows = max_rows
        self._connection: Any = None

    def __enter__(self) -> PostgresSqlExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def connection(self) -> Any:
        """The open connection (opened now if needed): also how callers check the database is reachable."""
        if self._connection is None or self._connection.closed:
            connection = self._connect()
            connection.set_session(readonly=True, autocommit=False)
            self._connection = connection
        return self._connection

    def _end_transaction(self) -> None:
        """Roll back (nothing is ever kept); a connection that cannot even do that is dropped."""
        if self._connection is None or self._connection.closed:
            return
        try:
            self._connection.rollback()
        except psycopg2.Error:
            self.close()

    def query(self, sql: str, timeout: float) -> list[tuple[Any, ...]]:
        connection = self.connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL statement_timeout = %s", (max(int(timeout * 1000), 1),))
                try:
                    cursor.execute(sql)
                except psycopg2.errors.QueryCanceled as error:
                    raise TimeoutError(str(error).strip()) from error
                if cursor.description is None:
                    raise ValueError("the statement returned no result set")
                rows = cursor.fetchmany(self.max_rows + 1)
        except psycopg2.OperationalError:
            self.close()  # the server went away: reconnect for the next case
            raise
        finally:
            self._end_transaction()
        if len(rows) > self.max_rows:
            raise ValueError(
                f"the query returned more than {self.max_rows} rows; a test case should select a small result"
            )
        return rows


# --- one test round -------------------------------------------------------------------------------


def run_environment_tests(
    config: CustomerConfig,
    environment: str,
    *,
    round_number: int,
    baseline: TestReport | None,
    dag_id: str,
    run_id: str,
    ledger_conn_id: str = LEDGER_CONN_ID,
    timeout: float = DEFAULT_TIMEOUT,
    http: HttpClient | None = None,
) -> TestReport:
    """Run the config's test cases for ``environment`` as round ``round_number``, save and return it.

    The report is compared with ``baseline`` when one is given (``None`` for the baseline round
    itself) and saved in the ledger under ``(dag_id, run_id, environment, round_number)``; saving the
    same round again replaces it (a task retry). Failing cases are results, not exceptions; only an
    unreachable environment raises :class:`EnvironmentUnreachableError` (before any case ran).
    """
    env = config.environment(environment)
    cases = config.test_cases_for(environment)
    with ExitStack() as stack:
        hook = stack.enter_context(CrmEnvironmentHook(env.ssh_conn_id, env.db_conn_id, label=environment))
        try:
            host = hook.get_conn()
        except Exception as error:
            raise EnvironmentUnreachableError(
                f"{environment}: cannot reach the host over SSH connection {env.ssh_conn_id}: "
                f"{type(error).__name__}: {error}"
            ) from error
        sql = stack.enter_context(PostgresSqlExecutor(hook.db_target()))
        if any(case.kind == "sql" for case in cases):
            try:
                sql.connection()
            except psycopg2.Error as error:
                raise EnvironmentUnreachableError(
                    f"{environment}: cannot reach the config database of connection {env.db_conn_id}: "
                    f"{str(error).strip()}"
                ) from error
        report = run_test_cases(
            cases,
            environment=environment,
            install_path=env.install_path,
            commands=SshCommandExecutor(host),
            sql=sql,
            http=http,
            timeout=timeout,
            round=round_number,
        )
    if baseline is not None:
        report = report.compare_to(baseline)
    with open_ledger(ledger_conn_id) as ledger:
        save_report(ledger, dag_id, run_id, report)
    log.info(
        "%s round %d: %s; saved in the ledger for %s/%s",
        environment,
        round_number,
        report.headline,
        dag_id,
        run_id,
    )
    return report


def save_report(ledger: Ledger, dag_id: str, run_id: str, report: TestReport) -> None:
    """Store ``report`` in all three forms (JSON, JUnit XML, markdown) under its environment and round."""
    ledger.save_test_report(
        dag_id,
        run_id,
        report.environment,
        report.round,
        report.to_dict(),
        report.to_junit_xml(),
        report.to_markdown(),
    )


def load_report(
    dag_id: str,
    run_id: str,
    environment: str,
    round_number: int | None = None,
    *,
    ledger_conn_id: str = LEDGER_CONN_ID,
) -> TestReport | None:
    """The saved report of ``environment``'s round ``round_number`` (the latest round when ``None``).

    ``None`` when no such report was saved in this run.
    """
    with open_ledger(ledger_conn_id) as ledger:
        rows = ledger.test_reports(dag_id, run_id, environment)
    if round_number is not None:
        rows = [row for row in rows if row["round"] == round_number]
    if not rows:
        return None
    latest = max(rows, key=lambda row: row["round"])
    return TestReport.from_dict(latest["report"])


def load_baseline(dag_id: str, run_id: str, *, ledger_conn_id: str = LEDGER_CONN_ID) -> TestReport | None:
    """This run's baseline: Dev round 0 (``None`` if the baseline round has not been saved)."""
    return load_report(dag_id, run_id, BASELINE_ENVIRONMENT, BASELINE_ROUND, ledger_conn_id=ledger_conn_id)


def report_xcom(report: TestReport, dag_id: str, run_id: str) -> dict[str, Any]:
    """Compact summary for XCom; the full report stays in the ledger, found by ``report_ref``.

    ``failing`` lists every failing case; ``blocking`` those the fix loop must address. The baseline
    round (round 0, not compared) has nothing to fix: its failures are facts about the system before
    the upgrade, so its ``blocking`` is empty (and ``summary.blocking`` 0).
    """
    is_baseline = report.round == BASELINE_ROUND and report.baseline is None
    blocking = [] if is_baseline else [result.id for result in report.blocking_failures]
    summary = report.summary.model_dump(mode="json")
    summary["blocking"] = len(blocking)
    return {
        "environment": report.environment,
        "round": report.round,
        "headline": report.headline,
        "summary": summary,
        "failing": [result.id for result in report.results if result.failing],
        "blocking": blocking,
        "compared_with_baseline": report.baseline is not None,
        "report_ref": {
            "dag_id": dag_id,
            "run_id": run_id,
            "environment": report.environment,
            "round": report.round,
        },
    }
