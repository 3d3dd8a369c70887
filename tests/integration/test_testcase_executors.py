"""The production test-case executors on the estate: argv stays argv over SSH, timeouts bound whole
commands and queries, and the config database is only ever read."""

from __future__ import annotations

import time
from contextlib import closing

import psycopg2
import pytest
from pydantic import TypeAdapter

from managed_upgrade.config import TestCase
from managed_upgrade.testcase_runner import run_test_case
from managed_upgrade_airflow.testcase_executors import PostgresSqlExecutor, SshCommandExecutor

pytestmark = pytest.mark.integration


@pytest.fixture
def dev(fresh_installation, remote_host, db_target):
    installation = fresh_installation("dev", "10.2.0")
    return installation, remote_host("dev"), db_target(installation.db_name)


def test_commands_run_in_the_install_path_and_no_argument_reaches_a_shell(dev):
    installation, host, _ = dev
    commands = SshCommandExecutor(host)
    result = commands.run(["cat", "VERSION"], cwd=str(installation.install_path), timeout=10)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "10.2.0\n", "")
    tricky = ["printf", "%s|", "$(touch pwned)", "a b", "; rm -rf ~", "'quoted'"]
    result = commands.run(tricky, cwd=str(installation.install_path), timeout=10)
    assert result.stdout == "$(touch pwned)|a b|; rm -rf ~|'quoted'|"
    assert not (installation.install_path / "pwned").exists()
    failed = commands.run(["sh", "-c", "echo oops >&2; exit 7"], cwd="/", timeout=10)
    assert (failed.exit_code, failed.stderr) == (7, "oops\n")


def test_the_timeout_bounds_the_whole_command_even_while_it_keeps_printing(dev):
    _, host, _ = dev
    commands = SshCommandExecutor(host)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="sh still running"):
        commands.run(["sh", "-c", "while :; do echo tick; sleep 0.05; done"], cwd="/", timeout=1)
    assert time.monotonic() - started < 2
    assert commands.run(["true"], cwd="/", timeout=5).exit_code == 0  # the session is still usable


def test_huge_output_is_capped_not_buffered(dev):
    _, host, _ = dev
    result = SshCommandExecutor(host, output_limit=1000).run(
        ["head", "-c", "3000000", "/dev/zero"], cwd="/", timeout=20
    )
    assert result.exit_code == 0
    assert result.stdout.endswith("… [2999000 more bytes not kept]")


def test_queries_are_read_only_bounded_and_survive_errors(dev):
    installation, _, target = dev
    with PostgresSqlExecutor(target) as sql:
        assert sql.query("SELECT count(*) FROM crm_accounts", timeout=5) == [(20,)]
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            sql.query("SELECT set_config('x.y', '1', false), nextval('crm_accounts_id_seq')", timeout=5)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="statement timeout"):
            sql.query("SELECT pg_sleep(5)", timeout=0.3)
        assert time.monotonic() - started < 2
        assert sql.query("SELECT 1", timeout=5) == [(1,)]  # same connection, next transaction
        with closing(target.connect()) as admin, admin.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (installation.db_name,),
            )
        with pytest.raises(psycopg2.OperationalError):
            sql.query("SELECT 2", timeout=5)
        assert sql.query("SELECT 3", timeout=5) == [(3,)]  # reconnected


def test_too_many_rows_are_an_error_of_the_case(dev):
    installation, host, target = dev
    case = TypeAdapter(TestCase).validate_python(
        {
            "id": "all",
            "title": "all",
            "kind": "sql",
            "query": "SELECT generate_series(1, 50)",
            "expect": {"scalar": 1},
        }
    )
    with PostgresSqlExecutor(target, max_rows=10) as sql:
        result = run_test_case(
            case,
            install_path=str(installation.install_path),
            commands=SshCommandExecutor(host),
            sql=sql,
            http=None,
        )
    assert result.status == "error"
    assert (
        result.message
        == "ValueError: the query returned more than 10 rows; a test case should select a small result"
    )
