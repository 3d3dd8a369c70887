"""Runs a customer's test cases on a real environment and keeps every round's report in the ledger.

:mod:`managed_upgrade.verification.runner` judges test cases without knowing how they reach an
environment; this module is the production side of that contract:

- :class:`SshCommandExecutor` runs a case's argv over the environment's SSH connection as
  ``cd <install path> && exec timeout <T> <shlex.join(argv)>``: only a program the environment allows
  (checked again here), never as root (a root login drops to ``nobody`` with ``setpriv
  --no-new-privs``, or the case is refused), killed on the host when its time is up, its output capped;
- :class:`PostgresSqlExecutor` runs a case's query (checked again by the parser) in a ``READ ONLY``
  transaction with ``statement_timeout``/``lock_timeout``, as the environment's read-only test role
  (``test_db_conn_id``; a superuser there is refused). Without a test role, sql cases run over
  ``db_conn_id`` on dev and uat (with a warning) and are refused on prod (:data:`SQL_NEEDS_TEST_ROLE`).

:func:`run_environment_tests` is the one function every test round calls (the Dev baseline, each
sanity test, each retest): it runs the round, compares it with the baseline, and saves it in the
ledger as JSON, JUnit XML and markdown, so reviews, hand-overs and the completion summary read the
same report back with :func:`load_report` / :func:`load_baseline`.
"""

from __future__ import annotations

import logging
import math
import select
import shlex
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.errors

from managed_upgrade.errors import OperationError
from managed_upgrade.sandbox.readonly_sql import require_single_select
from managed_upgrade.transport.database import DbTarget
from managed_upgrade.transport.remote import RemoteHost
from managed_upgrade.verification.report import TestReport
from managed_upgrade.verification.runner import (
    DEFAULT_TIMEOUT,
    CommandResult,
    Confinement,
    HttpClient,
    RefusedCaseError,
    run_test_cases,
)
from managed_upgrade_airflow.hooks.crm_environment import CrmEnvironmentHook
from managed_upgrade_airflow.ledger_access import LEDGER_CONN_ID, open_ledger

if TYPE_CHECKING:
    from managed_upgrade.config import CustomerConfig, Environment
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

KILL_GRACE = 2
"""Seconds the host's ``timeout`` waits after TERM before it KILLs a case's program."""

UNPRIVILEGED_USER = "nobody"
"""Whom a command case runs as when the SSH login is root (the service user should not be root)."""

SQL_NEEDS_TEST_ROLE = frozenset({"prod"})
"""Environments whose sql cases run only as a read-only test role (``test_db_conn_id``), never as
``db_conn_id``."""

LOCK_TIMEOUT_MS = 2000
"""How long a test query waits for a lock before it fails."""

_PROBE = (
    'printf "%s\\n" "$(id -u)" "$(id -u nobody 2>/dev/null)" "$(id -g nobody 2>/dev/null)" '
    '"$(command -v setpriv)" "$(command -v timeout)"'
)
"""One round trip learning the login's uid, nobody's ids and whether setpriv/timeout exist."""


class EnvironmentUnreachableError(OperationError):
    """The environment's host or configuration database cannot be reached; no case was run."""


# --- commands over SSH ----------------------------------------------------------------------------


class SshCommandExecutor:
    """:class:`~managed_upgrade.verification.runner.CommandExecutor` on a :class:`RemoteHost`'s SSH session.

    The remote command line is ``cd <quoted cwd> && exec [setpriv ...] [timeout ...] <shlex.join(argv)>``:
    relative programs such as ``bin/crm`` resolve in the installation, no argument is read as shell
    syntax, and ``exec`` hands the program to ``timeout`` (no shell builtin can be reached). The
    program is checked against ``allowed_programs``
    (:func:`~managed_upgrade.config.test_cases.program_problem`)
    before anything runs. The first run learns the login's uid: as root, every case runs as
    :data:`UNPRIVILEGED_USER` through ``setpriv --no-new-privs`` (refused when setpriv is missing).
    ``timeout`` bounds the whole command (not just the wait for output): when it runs out the channel
    is closed and :class:`TimeoutError` raised; the host's ``timeout`` kills the program a second
    later. stdout and stderr are kept up to ``output_limit`` bytes each.
    """

    def __init__(
        self,
        host: RemoteHost,
        output_limit: int = OUTPUT_LIMIT,
        allowed_programs: Collection[str] = (),
    ) -> None:
        self.host = host
        self.output_limit = output_limit
        self.confinement = Confinement(allowed_programs=tuple(allowed_programs))
        self._prefix: list[str] | None = None
        self._has_timeout = True
        self.login_uid: int | None = None

    def run(self, argv: Sequence[str], cwd: str, timeout: float) -> CommandResult:
        argv = list(argv)
        if not argv or not all(isinstance(arg, str) for arg in argv):
            raise TypeError(f"argv must be a non-empty list of str, got {argv!r}")
        self.confinement.check_program(argv)
        remote_seconds = math.ceil(timeout) + 1  # the local deadline comes first; this kills leftovers
        wrapped = [*self.prefix(), *self._timeout_wrapper(remote_seconds), *argv]
        command = f"cd {shlex.quote(cwd)} && exec {shlex.join(wrapped)}"
        log.info("%s$ %s", self.host.label, command)
        started = time.monotonic()
        exit_code, stdout, stderr = self._exec(command, started + timeout, argv[0])
        return CommandResult(exit_code, stdout, stderr, time.monotonic() - started)

    def prefix(self) -> list[str]:
        """What runs the program unprivileged: nothing for a non-root login, ``setpriv ...`` for root."""
        if self._prefix is None:
            self._learn_host()
        assert self._prefix is not None
        return self._prefix

    def _timeout_wrapper(self, seconds: int) -> list[str]:
        if not self._has_timeout:
            return []
        return ["timeout", f"--kill-after={KILL_GRACE}", str(seconds)]

    def _learn_host(self) -> None:
        exit_code, stdout, stderr = self._exec(_PROBE, time.monotonic() + 30, "id")
        lines = [*stdout.splitlines(), "", "", "", "", ""]
        if exit_code != 0 or not lines[0].strip().isdigit():
            raise OperationError(f"{self.host.label}: cannot learn the login's uid (id -u): {stderr.strip()}")
        self.login_uid = int(lines[0])
        self._has_timeout = bool(lines[4].strip())
        if self.login_uid != 0:
            self._prefix = []
            return
        uid, gid, setpriv = lines[1].strip(), lines[2].strip(), lines[3].strip()
        if not (uid.isdigit() and gid.isdigit() and setpriv):
            raise RefusedCaseError(
                f"{self.host.label}: the SSH login is root and the host lacks setpriv or a "
                f"'{UNPRIVILEGED_USER}' user; command test cases never run as root (log in as the "
                "environment's service user)"
            )
        log.warning(
            "%s: the SSH login is root; command test cases run as %s (uid %s) instead. Give the "
            "environment a non-root service user.",
            self.host.label,
            UNPRIVILEGED_USER,
            uid,
        )
        self._prefix = [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--no-new-privs",
            "--",
        ]

    def _exec(self, command: str, deadline: float, program: str) -> tuple[int, str, str]:
        transport = self.host.client.get_transport()
        if transport is None or not transport.is_active():
            raise OperationError(f"{self.host.label}: SSH connection is closed")
        channel = transport.open_session(timeout=max(deadline - time.monotonic(), 1.0))
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
                    raise TimeoutError(f"{program} still running")
                if channel.eof_received:  # all output is in; only the exit status is still to come
                    channel.status_event.wait(min(remaining, _WAIT_SLICE))
                else:
                    select.select([channel], [], [], min(remaining, _WAIT_SLICE))
            exit_code = channel.recv_exit_status()
        finally:
            channel.close()
        return exit_code, stdout.text(), stderr.text()


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
    """:class:`~managed_upgrade.verification.runner.SqlExecutor` on an environment's config database.

    Each query is checked again by :func:`~managed_upgrade.sandbox.readonly_sql.require_single_select` and
    runs in its own ``READ ONLY`` transaction, rolled back afterwards, with ``SET LOCAL
    statement_timeout`` from the case's timeout, a short ``lock_timeout``, ``pg_catalog`` first on the
    search path and ``standard_conforming_strings`` on (so the server reads the text as the parser
    did); a cancelled statement raises :class:`TimeoutError`. With ``read_only_role`` the login must
    not be a superuser (checked on connecting): the database role is the last line of defence, a
    write or a file or network function hidden anywhere fails for lack of privileges. One connection
    is opened on first use and reused; a broken one is replaced on the next query.

    :param database: a :class:`DbTarget` or a callable returning a new psycopg2 connection
    :param read_only_role: the connection is the environment's read-only test role
    """

    def __init__(
        self,
        database: DbTarget | Callable[[], Any],
        max_rows: int = MAX_ROWS,
        *,
        read_only_role: bool = False,
    ) -> None:
        self._connect: Callable[[], Any] = database.connect if isinstance(database, DbTarget) else database
        self.max_rows = max_rows
        self.read_only_role = read_only_role
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
            try:
                connection.set_session(readonly=True, autocommit=False)
                if self.read_only_role:
                    _refuse_privileged_login(connection)
            except BaseException:
                connection.close()
                raise
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
        require_single_select(sql)
        connection = self.connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL statement_timeout = %s", (max(int(timeout * 1000), 1),))
                cursor.execute("SET LOCAL lock_timeout = %s", (LOCK_TIMEOUT_MS,))
                cursor.execute("SET LOCAL standard_conforming_strings = on")
                cursor.execute(
                    "SELECT set_config('search_path', 'pg_catalog, ' || current_setting('search_path'), true)"
                )
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


def _refuse_privileged_login(connection: Any) -> None:
    """A test role that is a superuser (or may bypass row security) is no read-only role: refuse it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_user, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb"
            " FROM pg_roles WHERE rolname = current_user"
        )
        row = cursor.fetchone()
    connection.rollback()
    if row is None or any(row[1:]):
        who = row[0] if row else "the login"
        raise RefusedCaseError(
            f"the test database connection logs in as {who}, which is a superuser or may create roles or "
            "databases; test_db_conn_id must be a read-only role (SELECT grants only)"
        )


class RefusingSqlExecutor:
    """:class:`~managed_upgrade.verification.runner.SqlExecutor` that runs nothing and says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def query(self, sql: str, timeout: float) -> list[tuple[Any, ...]]:
        raise RefusedCaseError(self.reason)


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
    confinement = Confinement.of(env)
    with ExitStack() as stack:
        hook = stack.enter_context(CrmEnvironmentHook(env.ssh_conn_id, env.db_conn_id, label=environment))
        try:
            host = hook.get_conn()
        except Exception as error:
            raise EnvironmentUnreachableError(
                f"{environment}: cannot reach the host over SSH connection {env.ssh_conn_id}: "
                f"{type(error).__name__}: {error}"
            ) from error
        sql = _sql_executor(stack, env, environment, hook, any(case.kind == "sql" for case in cases))
        report = run_test_cases(
            cases,
            environment=environment,
            install_path=env.install_path,
            commands=SshCommandExecutor(host, allowed_programs=confinement.allowed_programs),
            sql=sql,
            http=http,
            timeout=timeout,
            round=round_number,
            confinement=confinement,
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


def _sql_executor(
    stack: ExitStack, env: Environment, environment: str, hook: CrmEnvironmentHook, needed: bool
) -> PostgresSqlExecutor | RefusingSqlExecutor:
    """The read-only test role's executor; the fallback to ``db_conn_id`` (dev, uat) or a refusal (prod).

    Connected right away when sql cases will run (an unreachable database fails the round before any
    case ran); without sql cases no connection is looked up at all.
    """
    if not needed:
        return RefusingSqlExecutor(f"{environment} runs no sql test case")
    if env.test_db_conn_id is not None:
        conn_id = env.test_db_conn_id
        test_hook = CrmEnvironmentHook(env.ssh_conn_id, conn_id, label=environment)
        sql = stack.enter_context(PostgresSqlExecutor(test_hook.db_target(), read_only_role=True))
    elif environment in SQL_NEEDS_TEST_ROLE:
        return RefusingSqlExecutor(
            f"{environment} has no test_db_conn_id: sql test cases run on {environment} only as a "
            "read-only database role (see README, 'Sandboxing customer test cases')"
        )
    else:
        conn_id = env.db_conn_id
        log.warning(
            "%s has no test_db_conn_id: its sql test cases run as db_conn_id %s, protected only by the "
            "query check and a READ ONLY transaction. Give it a read-only role.",
            environment,
            conn_id,
        )
        sql = stack.enter_context(PostgresSqlExecutor(hook.db_target()))
    try:
        sql.connection()
    except psycopg2.Error as error:
        raise EnvironmentUnreachableError(
            f"{environment}: cannot reach the config database of connection {conn_id}: {str(error).strip()}"
        ) from error
    except RefusedCaseError as error:  # a superuser behind test_db_conn_id: its sql cases are refused
        log.error("%s: %s", environment, error)
        return RefusingSqlExecutor(f"{conn_id}: {error}")
    return sql


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
