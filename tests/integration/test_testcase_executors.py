"""The production test-case executors on the estate: argv stays argv over SSH, only allowed programs run,
as the unprivileged service user, bounded in time (the program is killed on the host) and output; queries
run as the read-only role, bounded in time; http checks never follow a redirect to a forbidden address."""

from __future__ import annotations

import http.server
import os
import pwd
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from pydantic import TypeAdapter

from managed_upgrade.config import TestCase, load_customer_config
from managed_upgrade.sandbox.readonly_sql import UnsafeQueryError
from managed_upgrade.transport.database import DbTarget
from managed_upgrade.verification.report import CaseStatus
from managed_upgrade.verification.runner import Confinement, RefusedCaseError, run_test_case
from managed_upgrade_airflow.testcase_executors import (
    PostgresSqlExecutor,
    SshCommandExecutor,
    run_environment_tests,
)

pytestmark = pytest.mark.integration

TOOLS = ("cat", "printf", "head", "id", "sleep", "true", "test")
SLOW_QUERY = "SELECT sum(length(repeat('x', 1000000 + g))) FROM generate_series(1, 100000) g"
"""Minutes of CPU in allowed functions, without temporary files (the role's temp_file_limit)."""


@pytest.fixture
def dev(estate, fresh_installation, remote_host, db_target):
    installation = fresh_installation("dev", "10.2.0")
    reader = estate.test_db_connection(installation.db_name)
    reader_target = DbTarget(reader["host"], int(reader["port"]), reader["login"], installation.db_name)
    return installation, remote_host("dev"), db_target(installation.db_name), reader_target


def case(**fields: Any) -> Any:
    fields.setdefault("id", f"{fields['kind']}_check")
    fields.setdefault("title", f"A {fields['kind']} check")
    return TypeAdapter(TestCase).validate_python(fields)


# --- commands -------------------------------------------------------------------------------------


def test_commands_run_in_the_install_path_and_no_argument_reaches_a_shell(dev):
    installation, host, _, _ = dev
    commands = SshCommandExecutor(host, allowed_programs=TOOLS)
    result = commands.run(["cat", "VERSION"], cwd=str(installation.install_path), timeout=10)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "10.2.0\n", "")
    tricky = ["printf", "%s|", "$(touch pwned)", "a b", "; rm -rf ~", "'quoted'"]
    result = commands.run(tricky, cwd=str(installation.install_path), timeout=10)
    assert result.stdout == "$(touch pwned)|a b|; rm -rf ~|'quoted'|"
    assert not (installation.install_path / "pwned").exists()
    status = commands.run(["bin/crm", "status"], cwd=str(installation.install_path), timeout=30)
    assert status.exit_code == 0, status.stderr
    assert '"ok": true' in status.stdout


@pytest.mark.parametrize(
    "argv",
    [["sh", "-c", "id"], ["bash", "-c", "id"], ["env", "id"], ["python3", "-c", "0"], ["/bin/cat", "x"]],
)
def test_shells_and_unlisted_programs_never_reach_the_host(dev, argv):
    installation, host, _, _ = dev
    with pytest.raises(RefusedCaseError):
        SshCommandExecutor(host, allowed_programs=(*TOOLS, "sh", "bash", "env", "python3")).run(
            argv, cwd=str(installation.install_path), timeout=10
        )


def test_a_command_case_runs_as_the_unprivileged_service_user(dev, estate):
    installation, host, _, _ = dev
    executor = SshCommandExecutor(host, allowed_programs=TOOLS)
    result = run_test_case(
        case(kind="command", argv=["id", "-u"], expect={"stdout_regex": r"^[1-9][0-9]*$"}),
        install_path=str(installation.install_path),
        commands=executor,
        sql=None,  # type: ignore[arg-type]
        confinement=Confinement(allowed_programs=TOOLS),
    )
    assert result.status is CaseStatus.PASSED, (result.message, result.output)
    uid = int(result.output.split("--- stdout ---\n", 1)[1].strip())
    assert uid != 0
    assert executor.login_uid == uid
    if os.geteuid() == 0:  # run as root, the estate's hosts log in as its service user
        assert estate.user != "root"
        assert uid == pwd.getpwnam(estate.user).pw_uid
    # what that user may write: its installation, not the estate's keys, configs or releases
    for path, writable in (
        (installation.install_path / "settings", True),
        (installation.staging_path, True),
        (estate.root / "keys", False),
        (estate.root / "run", False),
        (estate.releases_dir, False),
        (estate.root, False),
    ):
        check = executor.run(["test", "-w", str(path)], cwd="/", timeout=10)
        assert (check.exit_code == 0) is writable or os.geteuid() != 0, path


def test_the_timeout_bounds_the_whole_command_and_the_host_kills_the_program(dev):
    installation, host, _, _ = dev
    commands = SshCommandExecutor(host, allowed_programs=TOOLS)
    marker = f"{600 + uuid.uuid4().int % 300}.{uuid.uuid4().int % 1000:03d}"  # unique, >= 10 minutes
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="sleep still running"):
        commands.run(["sleep", marker], cwd=str(installation.install_path), timeout=1)
    assert time.monotonic() - started < float(marker)  # gave up at the timeout, not when sleep ended
    assert commands.run(["true"], cwd="/", timeout=5).exit_code == 0  # the session is still usable
    deadline = time.monotonic() + 10
    while _running(f"sleep {marker}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(f"sleep {marker}"), "the host's timeout should have killed the program"


def _running(command_line: str) -> bool:
    found = subprocess.run(["pgrep", "-f", f"^{command_line}$"], capture_output=True, check=False)
    return found.returncode == 0


def test_huge_output_is_capped_not_buffered(dev):
    _, host, _, _ = dev
    result = SshCommandExecutor(host, output_limit=1000, allowed_programs=TOOLS).run(
        ["head", "-c", "3000000", "/dev/zero"], cwd="/", timeout=20
    )
    assert result.exit_code == 0
    assert result.stdout.endswith("… [2999000 more bytes not kept]")


# --- queries --------------------------------------------------------------------------------------


def test_queries_run_as_the_read_only_role_bounded_and_survive_errors(dev):
    installation, _, admin, reader = dev
    with PostgresSqlExecutor(reader, read_only_role=True) as sql:
        assert sql.query("SELECT count(*) FROM crm_accounts", timeout=5) == [(20,)]
        assert sql.query("SELECT current_user", timeout=5) == [(reader.user,)]
        with pytest.raises(UnsafeQueryError, match="set_config is not allowed"):
            sql.query("SELECT set_config('x.y', '1', false)", timeout=5)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="statement timeout"):
            sql.query(SLOW_QUERY, timeout=0.3)
        assert time.monotonic() - started < 60  # the query takes minutes: it was cut, not finished
        assert sql.query("SELECT 1", timeout=5) == [(1,)]  # same connection, next transaction
        with closing(admin.connect()) as connection, connection.cursor() as cursor:
            connection.autocommit = True
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (installation.db_name,),
            )
        with pytest.raises(psycopg2.OperationalError):
            sql.query("SELECT 2", timeout=5)
        assert sql.query("SELECT 3", timeout=5) == [(3,)]  # reconnected


def test_a_superuser_behind_the_test_connection_is_refused(dev):
    _, _, admin, _ = dev
    with (
        PostgresSqlExecutor(admin, read_only_role=True) as sql,
        pytest.raises(RefusedCaseError, match="must be a read-only role"),
    ):
        sql.query("SELECT 1", timeout=5)


def test_too_many_rows_are_an_error_of_the_case(dev):
    installation, host, _, reader = dev
    with PostgresSqlExecutor(reader, max_rows=10, read_only_role=True) as sql:
        result = run_test_case(
            case(kind="sql", query="SELECT generate_series(1, 50)", expect={"scalar": 1}),
            install_path=str(installation.install_path),
            commands=SshCommandExecutor(host),
            sql=sql,
        )
    assert result.status == "error"
    assert (
        result.message
        == "ValueError: the query returned more than 10 rows; a test case should select a small result"
    )


# --- http -----------------------------------------------------------------------------------------


class _Redirecting(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        targets = {
            "/metadata": "http://169.254.169.254/latest/meta-data/iam/",
            "/internal": "http://10.1.2.3/",
            "/ok": "/health",
        }
        if self.path in targets:
            self.send_response(302)
            self.send_header("Location", targets[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"healthy"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_redirect_to_a_forbidden_address_is_refused(web):
    declared = Confinement(http_hosts=("127.0.0.1",))

    def run(path: str) -> Any:
        return run_test_case(
            case(kind="http", url=f"{web}{path}", expect={"body_contains": "healthy"}),
            install_path="/",
            commands=None,  # type: ignore[arg-type]
            sql=None,  # type: ignore[arg-type]
            confinement=declared,
        )

    assert run("/ok").status is CaseStatus.PASSED
    metadata = run("/metadata")
    assert metadata.status is CaseStatus.ERROR
    assert metadata.message == (
        "refused before running: http://169.254.169.254/latest/meta-data/iam/: 169.254.169.254 is a cloud "
        "metadata address; http test cases never go there"
    )
    internal = run("/internal")
    assert internal.message == (
        "refused before running: http://10.1.2.3/: address 10.1.2.3 is not declared in the environment's "
        "http_hosts"
    )
    undeclared = run_test_case(
        case(kind="http", url=f"{web}/health"),
        install_path="/",
        commands=None,  # type: ignore[arg-type]
        sql=None,  # type: ignore[arg-type]
        confinement=Confinement(),
    )
    assert undeclared.message.startswith("refused before running: address 127.0.0.1 is not declared")


# --- one round, as the operators run it ------------------------------------------------------------


ACME = Path(__file__).resolve().parents[2] / "include" / "customers" / "acme.yaml"


def test_a_round_uses_the_read_only_role_and_prod_refuses_sql_without_one(isolated_customer, ledger_dsn):
    acme = load_customer_config(ACME)
    config, _ = isolated_customer(acme, uat="10.2.0", prod="10.2.0")
    with_role = run_environment_tests(config, "uat", round_number=0, baseline=None, dag_id="d", run_id="r")
    assert with_role.all_passed, with_role.to_markdown()

    without = config.environments.prod.model_copy(update={"test_db_conn_id": None})
    config = config.model_copy(
        update={"environments": config.environments.model_copy(update={"prod": without})}
    )
    report = run_environment_tests(config, "prod", round_number=1, baseline=None, dag_id="d", run_id="r")
    by_kind = {result.id: result for result in report.results}
    assert by_kind["crm_status"].status is CaseStatus.PASSED
    for case_id in ("single_schema_version", "default_currency"):
        assert by_kind[case_id].status is CaseStatus.ERROR
        assert by_kind[case_id].message == (
            "refused before running: prod has no test_db_conn_id: sql test cases run on prod only as a "
            "read-only database role (see README, 'Sandboxing customer test cases')"
        )
