"""The last lines of defence, tried for real: the estate's read-only database role cannot write, reach
files, other sessions or other servers even when a query got past the parser, and the hosts' SSH login
is an unprivileged service user."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import psycopg2
import psycopg2.errors
import pytest

from managed_upgrade.sandbox.readonly_sql import ALLOWED_FUNCTIONS

pytestmark = pytest.mark.integration

NEWER_THAN_THE_SERVER = {"any_value": 160000}
"""Allowed functions that only exist from a later PostgreSQL version (server_version_num)."""


@pytest.fixture
def config_db(estate, fresh_installation) -> Any:
    return fresh_installation("dev", "10.2.0")


@pytest.fixture
def reader(estate, config_db) -> Iterator[Any]:
    """A session as the read-only role, as a ``test_db_conn_id`` connection opens it (autocommit, so
    each statement is its own transaction, like a query that slipped through would be)."""
    info = estate.test_db_connection(config_db.db_name)
    connection = psycopg2.connect(
        host=info["host"], port=info["port"], user=info["login"], dbname=info["schema"], connect_timeout=5
    )
    connection.autocommit = True
    yield connection
    connection.close()


@pytest.fixture
def admin(estate, config_db) -> Iterator[Any]:
    connection = psycopg2.connect(estate.pg_dsn(config_db.db_name), connect_timeout=5)
    connection.autocommit = True
    yield connection
    connection.close()


def run(connection: Any, statement: str) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(statement)
        return cursor.fetchall() if cursor.description else []


def test_the_role_reads_the_config_tables_with_read_only_defaults(reader, estate):
    assert run(reader, "SELECT count(*) FROM crm_accounts") == [(20,)]
    assert run(reader, "SELECT value FROM crm_settings WHERE key = 'password.min_length'") == [("12",)]
    assert run(reader, "SELECT current_user") == [(estate.reader_role,)]
    settings = dict(
        run(
            reader,
            "SELECT name, setting FROM pg_settings WHERE name IN ('default_transaction_read_only',"
            " 'statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout')",
        )
    )
    assert settings == {
        "default_transaction_read_only": "on",
        "statement_timeout": "30000",
        "lock_timeout": "2000",
        "idle_in_transaction_session_timeout": "60000",
    }
    (attributes,) = run(
        reader,
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolinherit"
        " FROM pg_roles WHERE rolname = current_user",
    )
    assert attributes == (False, False, False, False, False, False)
    assert run(reader, "SELECT count(*) FROM pg_auth_members WHERE member = current_user::regrole") == [(0,)]


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("UPDATE crm_settings SET value = 'x'", psycopg2.errors.ReadOnlySqlTransaction),
        ("INSERT INTO crm_settings (key, value) VALUES ('k', 'v')", psycopg2.errors.ReadOnlySqlTransaction),
        ("DELETE FROM crm_settings", psycopg2.errors.ReadOnlySqlTransaction),
        ("CREATE TABLE evil (i int)", psycopg2.errors.ReadOnlySqlTransaction),
    ],
)
def test_writes_fail_in_the_default_read_only_transaction(reader, statement, error):
    with pytest.raises(error):
        run(reader, statement)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE crm_settings SET value = 'x'",
        "INSERT INTO crm_settings (key, value) VALUES ('k', 'v')",
        "DELETE FROM crm_accounts",
        "TRUNCATE crm_settings",
        "CREATE TABLE evil (i int)",
        "CREATE TEMPORARY TABLE evil (i int)",
        "SELECT nextval('crm_accounts_id_seq')",
        "ALTER TABLE crm_settings ADD COLUMN evil int",
        "DROP TABLE crm_settings",
        "CREATE FUNCTION evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ],
)
def test_even_a_read_write_session_has_no_right_to_write(reader, statement):
    """A query that turned the read-only default off (``set_config``, which the parser refuses) still
    finds only SELECT grants."""
    run(reader, "SELECT set_config('default_transaction_read_only', 'off', false)")
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        run(reader, statement)


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT pg_read_binary_file('/etc/hostname')",
        "SELECT pg_ls_dir('.')",
        "SELECT pg_stat_file('postgresql.conf')",
        "SELECT lo_import('/etc/passwd')",
        "SELECT lo_export(1, '/tmp/evil')",
        "COPY crm_settings TO '/tmp/evil'",
        "COPY crm_settings FROM PROGRAM 'id'",
        "SELECT pg_reload_conf()",
        "SELECT pg_rotate_logfile()",
        "SELECT pg_switch_wal()",
    ],
)
def test_no_file_program_or_admin_function_works(reader, statement):
    run(reader, "SELECT set_config('default_transaction_read_only', 'off', false)")
    with pytest.raises((psycopg2.errors.InsufficientPrivilege, psycopg2.errors.UndefinedFunction)):
        run(reader, statement)


def test_other_sessions_cannot_be_signalled(reader, admin):
    (admin_pid,) = run(admin, "SELECT pg_backend_pid()")[0]
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        run(reader, f"SELECT pg_terminate_backend({int(admin_pid)})")
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        run(reader, f"SELECT pg_cancel_backend({int(admin_pid)})")
    assert run(admin, "SELECT 1") == [(1,)]


def test_dblink_cannot_open_a_second_session_even_when_installed(reader, admin, estate):
    available = run(admin, "SELECT count(*) FROM pg_available_extensions WHERE name = 'dblink'")
    if available != [(1,)]:
        pytest.skip("the dblink extension is not installed on this server")
    run(admin, "CREATE EXTENSION dblink")  # as an operator might, after the estate set the database up
    dsn = f"host=127.0.0.1 port={estate.pg.port} dbname=postgres user={estate.pg.user}"
    with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="permission denied for function"):
        run(reader, f"SELECT dblink_exec('{dsn}', 'CREATE TABLE evil (i int)')")
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        run(reader, f"SELECT dblink_connect('evil', '{dsn}')")
    assert run(admin, "SELECT to_regclass('evil')") == [(None,)]


def test_every_allowed_function_is_a_built_in_one(reader):
    (version,) = run(reader, "SELECT current_setting('server_version_num')::int")[0]
    rows = run(
        reader,
        "SELECT DISTINCT proname FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace",
    )
    built_in = {name for (name,) in rows}
    missing = {name for name in ALLOWED_FUNCTIONS if name not in built_in}
    # extract/overlaps/... are SQL syntax that the parser turns into pg_catalog functions
    expected_missing = {name for name, since in NEWER_THAN_THE_SERVER.items() if version < since}
    assert missing <= expected_missing, sorted(missing - expected_missing)


def test_the_ssh_login_of_the_hosts_is_not_root(estate):
    with closing(estate.ssh_connect("dev")) as client:
        _stdin, stdout, _stderr = client.exec_command("id -u")
        uid = int(stdout.read().decode().strip())
    if os.geteuid() == 0:
        assert uid != 0
        assert pwd.getpwuid(uid).pw_name == estate.user
    else:
        assert uid == os.geteuid()
