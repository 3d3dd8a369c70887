"""Customer test cases against real systems: commands over SSH on the simulated estate, SQL on PostgreSQL.

A baseline round, a simulated upgrade that breaks one thing and fixes another, then a sanity round
judged against the baseline -- what "Verify test cases in Dev" and "Test" do in a real run. The small
executors below stand in for the operators' adapters: argv joined with ``shlex.join`` under ``cd`` of
the install path, SQL in a READ ONLY transaction with a statement timeout.
"""

from __future__ import annotations

import shlex
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import closing
from typing import Any

import paramiko
import psycopg2
import psycopg2.errors
import pytest
import yaml
from psycopg2 import sql as pgsql
from pydantic import TypeAdapter

from managed_upgrade.config import TestCase
from managed_upgrade.sandbox.readonly_sql import require_single_select
from managed_upgrade.verification.report import BaselineOutcome, CaseStatus
from managed_upgrade.verification.runner import CommandResult, Confinement, run_test_cases

pytestmark = pytest.mark.integration

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
TOOLS = Confinement(allowed_programs=("cat", "printf", "test", "sleep", "false"))
"""The environment's allow-list for these cases (bin/crm is the installation's own)."""


class SshCommands:
    """CommandExecutor over one paramiko client; the deadline covers the whole command."""

    def __init__(self, client: paramiko.SSHClient) -> None:
        self.client = client

    def run(self, argv: Sequence[str], cwd: str, timeout: float) -> CommandResult:
        started = time.monotonic()
        transport = self.client.get_transport()
        assert transport is not None
        channel = transport.open_session(timeout=timeout)
        stdout, stderr = bytearray(), bytearray()
        try:
            channel.exec_command(f"cd {shlex.quote(cwd)} && {shlex.join(argv)}")
            while not (channel.exit_status_ready() and channel.eof_received):
                while channel.recv_ready():
                    stdout += channel.recv(65536)
                while channel.recv_stderr_ready():
                    stderr += channel.recv_stderr(65536)
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"{argv[0]} still running")
                time.sleep(0.01)
            while channel.recv_ready():
                stdout += channel.recv(65536)
            while channel.recv_stderr_ready():
                stderr += channel.recv_stderr(65536)
            exit_code = channel.recv_exit_status()
        finally:
            channel.close()
        return CommandResult(
            exit_code,
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace"),
            time.monotonic() - started,
        )


class ReadOnlySql:
    """SqlExecutor: one READ ONLY transaction per query, rolled back, with a statement timeout."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def query(self, sql: str, timeout: float) -> list[tuple[Any, ...]]:
        with closing(psycopg2.connect(self.dsn, connect_timeout=5)) as conn:
            conn.set_session(readonly=True)
            with conn.cursor() as cursor:
                cursor.execute("SET LOCAL statement_timeout = %s", (max(int(timeout * 1000), 1),))
                try:
                    cursor.execute(sql)
                except psycopg2.errors.QueryCanceled as error:
                    raise TimeoutError(str(error).strip()) from error
                rows = cursor.fetchall()
            conn.rollback()
        return rows


class NoCommands:
    def run(self, argv: Sequence[str], cwd: str, timeout: float) -> CommandResult:
        raise AssertionError("no command expected in this test")


def cases(config_yaml: str) -> list[Any]:
    """Test cases written as in a customer config (each titled after its id), validated by its schema."""
    adapter = TypeAdapter(TestCase)
    specs = yaml.safe_load(textwrap.dedent(config_yaml))
    return [adapter.validate_python({"title": spec["id"].replace("_", " "), **spec}) for spec in specs]


# --- over SSH on the estate ---------------------------------------------------------------------


def test_baseline_then_sanity_round_over_ssh_and_the_config_db(estate: Any, fresh_installation: Any) -> None:
    installation = fresh_installation(env="dev")
    install_path = str(installation.install_path)
    db_dsn = estate.pg_dsn(installation.db_name)
    test_cases = cases(
        """
        - {id: crm_status, kind: command, argv: [bin/crm, status], expect: {stdout_contains: '"ok": true'}}
        - {id: version_file, kind: command, argv: [cat, VERSION], expect: {stdout_regex: '^10\\.2\\.0$'}}
        - id: argv_stays_argv
          kind: command
          argv: [printf, '%s,', two  words, --x=1]
          expect: {stdout_contains: 'two  words,--x=1,'}
        - {id: loyalty_module, kind: command, argv: [test, -f, modules/loyalty/module.yaml]}
        - {id: custom_settings_file, kind: command, argv: [test, -f, settings/custom.properties]}
        - id: password_policy
          kind: sql
          query: SELECT value FROM crm_settings WHERE key = 'password.min_length'
          expect: {scalar: '12'}
        - {id: accounts_kept, kind: sql, query: select count(*) from crm_accounts;, expect: {scalar: 20}}
        - {id: sneaky_copy, kind: sql, query: SELECT 0, expect: {scalar: 0}}
        - {id: hangs, kind: command, argv: [sleep, '4'], environments: [dev]}
        - {id: prod_only, kind: command, argv: ['false'], environments: [prod]}
        """
    )
    # The loader refuses SELECT INTO; a case that skipped it is refused again right before running.
    index = next(i for i, case in enumerate(test_cases) if case.id == "sneaky_copy")
    test_cases[index] = test_cases[index].model_copy(
        update={"query": "SELECT * INTO crm_settings_copy FROM crm_settings"}
    )
    with closing(estate.ssh_connect("dev")) as client:
        commands, sql = SshCommands(client), ReadOnlySql(db_dsn)
        baseline = run_test_cases(
            test_cases,
            environment="dev",
            install_path=install_path,
            commands=commands,
            sql=sql,
            timeout=2,
            confinement=TOOLS,
        )

        # What an upgrade might do: reset a customer setting, and (by luck) add a missing file.
        with closing(psycopg2.connect(db_dsn)) as conn, conn, conn.cursor() as cursor:
            cursor.execute("UPDATE crm_settings SET value = '8' WHERE key = 'password.min_length'")
        (installation.install_path / "settings" / "custom.properties").write_text("theme=dark\n")

        after = run_test_cases(
            test_cases,
            environment="dev",
            install_path=install_path,
            commands=commands,
            sql=sql,
            timeout=2,
            round=1,
            confinement=TOOLS,
        ).compare_to(baseline)

    status = {result.id: result.status.value for result in baseline.results}
    assert status == {
        "crm_status": "passed",
        "version_file": "passed",
        "argv_stays_argv": "passed",
        "loyalty_module": "failed",
        "custom_settings_file": "failed",
        "password_policy": "passed",  # pragma: allowlist secret
        "accounts_kept": "passed",
        "sneaky_copy": "error",
        "hangs": "error",
    }
    assert baseline.result("loyalty_module").message == "exit code 1, expected 0"
    assert baseline.result("sneaky_copy").message == (
        "query refused before running: SELECT INTO would create a table"
    )
    # Cut off at its timeout, not left to finish (that message only comes from the timeout); no upper
    # bound in seconds, which a busy machine could break.
    assert baseline.result("hangs").message == "timed out after 2 s (sleep still running)"
    assert baseline.result("hangs").duration >= 2
    assert '"version": "10.2.0"' in baseline.result("crm_status").output

    outcome = {result.id: result.baseline for result in after.results}
    assert outcome["password_policy"] is BaselineOutcome.REGRESSION
    assert outcome["custom_settings_file"] is BaselineOutcome.FIXED
    assert outcome["loyalty_module"] is BaselineOutcome.PRE_EXISTING
    assert outcome["crm_status"] is BaselineOutcome.STILL_PASSING
    assert after.result("password_policy").message == "expected '12', got '8'"
    assert [result.id for result in after.blocking_failures] == ["password_policy"]
    assert after.result("password_policy").status is CaseStatus.FAILED

    with closing(psycopg2.connect(db_dsn)) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT to_regclass('crm_settings_copy')")
        assert cursor.fetchone() == (None,), "the rejected SELECT INTO must not have run"

    suite = ET.fromstring(after.to_junit_xml())
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("9", "2", "2")
    markdown = after.to_markdown()
    assert markdown.startswith("**5 of 9 passed** on dev, round 1, compared with the dev baseline")
    assert (
        "| `password_policy` password policy | **failed** (regression) | expected '12', got '8' |" in markdown
    )
    assert "| `loyalty_module` loyalty module | failed (pre-existing) | exit code 1, expected 0 |" in markdown


# --- SQL expectations on a temporary database ---------------------------------------------------


@pytest.fixture
def temporary_database() -> Iterator[str]:
    name = f"mu_testcases_{uuid.uuid4().hex[:12]}"
    with closing(psycopg2.connect(PG_ADMIN_DSN, connect_timeout=5)) as admin:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    try:
        with closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cursor:
            cursor.execute(
                "CREATE TABLE crm_settings (key text PRIMARY KEY, value text, ratio numeric(4,2),"
                " since date, active boolean);"
                "INSERT INTO crm_settings VALUES"
                " ('currency.default', 'EUR', 1.50, '2025-01-31', true),"
                " ('mail.sender', NULL, NULL, NULL, false)"
            )
        yield dsn
    finally:
        with closing(psycopg2.connect(PG_ADMIN_DSN, connect_timeout=5)) as admin:
            admin.autocommit = True
            with admin.cursor() as cursor:
                cursor.execute(
                    pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name))
                )


def test_sql_expectations_and_the_read_only_guard_on_postgresql(temporary_database: str) -> None:
    test_cases = cases(
        """
        - id: typed_rows
          kind: sql
          query: SELECT key, value, ratio, since, active FROM crm_settings ORDER BY key
          expect:
            rows:
              - [currency.default, EUR, 1.5, '2025-01-31', true]
              - [mail.sender, null, null, null, false]
        - id: unordered
          kind: sql
          query: SELECT key FROM crm_settings ORDER BY key DESC
          expect: {rows: [[currency.default], [mail.sender]]}
        - id: cte
          kind: sql
          query: WITH eur AS (SELECT key FROM crm_settings WHERE value = 'EUR') SELECT count(*) FROM eur
          expect: {scalar: 1}
        - {id: missing_table, kind: sql, query: SELECT count(*) FROM crm_nothing, expect: {scalar: 0}}
        - id: slow
          kind: sql
          query: SELECT count(*) FROM generate_series(1, 1000000000)
          expect: {scalar: null}
        - {id: data_modifying_cte, kind: sql, query: SELECT 0, expect: {scalar: 0}}
        """
    )
    test_cases[-1] = test_cases[-1].model_copy(  # skipped the loader, which refuses it too
        update={"query": "WITH gone AS (DELETE FROM crm_settings RETURNING key) SELECT count(*) FROM gone"}
    )
    report = run_test_cases(
        test_cases,
        environment="uat",
        install_path="/nonexistent",
        commands=NoCommands(),
        sql=ReadOnlySql(temporary_database),
        timeout=0.5,
    )
    by_id = {result.id: result for result in report.results}
    assert by_id["typed_rows"].status is CaseStatus.PASSED, by_id["typed_rows"].message
    assert by_id["typed_rows"].output.splitlines()[1] == "('currency.default', 'EUR', 1.50, 2025-01-31, True)"
    assert by_id["unordered"].status is CaseStatus.FAILED
    assert "different order" in by_id["unordered"].message
    assert by_id["cte"].status is CaseStatus.PASSED
    assert by_id["missing_table"].status is CaseStatus.ERROR
    assert 'relation "crm_nothing" does not exist' in by_id["missing_table"].message
    assert by_id["slow"].status is CaseStatus.ERROR  # cut by the server's statement timeout, not waited for
    assert by_id["slow"].message.startswith(
        "timed out after 0.5 s (canceling statement due to statement timeout"
    )
    assert by_id["data_modifying_cte"].message == (
        "query refused before running: WITH gone AS (DELETE ...) modifies data; WITH parts must be SELECTs"
    )
    with closing(psycopg2.connect(temporary_database)) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM crm_settings")
        assert cursor.fetchone() == (2,)


@pytest.mark.parametrize(
    ("query", "value"),
    [
        ("SELECT E'a\\';b' || $$;c$$ || ';d' /* ; */ AS \"x;y\" -- ;\n;", "a';b;c;d"),
        ("select 'it''s' /* outer /* nested ; */ still comment ; */", "it's"),
        ("select $tag$ ; delete from crm_settings; $tag$", " ; delete from crm_settings; "),
        ("(select 'x') union all (select 'y' where false)", "x"),
    ],
)
def test_what_the_guard_accepts_postgresql_runs_as_one_statement(
    temporary_database: str, query: str, value: str
) -> None:
    """The guard's lexer and the server agree on where literals and comments end."""
    assert require_single_select(query) == query
    assert ReadOnlySql(temporary_database).query(query, timeout=5) == [(value,)]


def test_the_read_only_transaction_stops_writes_the_guard_does_not_know(temporary_database: str) -> None:
    """Defence in depth: the guard refuses a write hidden in a function call (it is not an allowed
    function); sent past the guard, the write still fails in the READ ONLY transaction."""
    with closing(psycopg2.connect(temporary_database)) as conn, conn, conn.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION wipe() RETURNS int LANGUAGE sql AS 'DELETE FROM crm_settings RETURNING 1'"
        )
    hidden_write = cases("- {id: hidden_write, kind: sql, query: SELECT 1, expect: {scalar: 1}}")[0]
    report = run_test_cases(
        [hidden_write.model_copy(update={"query": "SELECT wipe()"})],
        environment="dev",
        install_path="/nonexistent",
        commands=NoCommands(),
        sql=ReadOnlySql(temporary_database),
        timeout=5,
    )
    assert report.results[0].status is CaseStatus.ERROR
    assert report.results[0].message.startswith("query refused before running: function wipe is not in")
    with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
        ReadOnlySql(temporary_database).query("SELECT wipe()", timeout=5)
    with closing(psycopg2.connect(temporary_database)) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM crm_settings")
        assert cursor.fetchone() == (2,)
