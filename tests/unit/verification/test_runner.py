"""The test-case runner: every expectation kind, every mismatch message, cases that go wrong, and the
confinement every case is checked against again right before it runs."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from managed_upgrade.config import TestCase
from managed_upgrade.sandbox.http_policy import HttpPolicy
from managed_upgrade.verification.report import CaseStatus
from managed_upgrade.verification.runner import (
    CommandResult,
    Confinement,
    GuardedHttpClient,
    HttpResponse,
    RefusedCaseError,
    applies_to,
    run_test_case,
    run_test_cases,
    same_value,
)

INSTALL_PATH = "/srv/crm/acme"
CONFINED = Confinement(allowed_programs=("ls", "x", "true", "sleep"), http_hosts=("127.0.0.1",))
"""What the environment of these tests allows besides its installation."""


def case(**fields: Any) -> Any:
    """A test case exactly as the customer config would hold it."""
    fields.setdefault("id", f"{fields['kind']}_check")
    fields.setdefault("title", f"A {fields['kind']} check")
    return TypeAdapter(TestCase).validate_python(fields)


@dataclass
class FakeCommands:
    """Answers every command with ``result`` (or raises ``error``) and records what it was asked."""

    result: CommandResult = field(default_factory=lambda: CommandResult(0, "", "", 0.01))
    error: BaseException | None = None
    calls: list[tuple[list[str], str, float]] = field(default_factory=list)

    def run(self, argv: Sequence[str], cwd: str, timeout: float) -> CommandResult:
        self.calls.append((argv, cwd, timeout))
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class FakeSql:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    error: BaseException | None = None
    calls: list[tuple[str, float]] = field(default_factory=list)

    def query(self, sql: str, timeout: float) -> list[tuple[Any, ...]]:
        self.calls.append((sql, timeout))
        if self.error is not None:
            raise self.error
        return self.rows


def run_one(
    test_case: Any,
    commands: Any = None,
    sql: Any = None,
    http: Any = None,
    timeout: float = 5.0,
    confinement: Confinement = CONFINED,
):
    return run_test_case(
        test_case,
        install_path=INSTALL_PATH,
        commands=commands or FakeCommands(),
        sql=sql or FakeSql(),
        http=http,
        timeout=timeout,
        confinement=confinement,
    )


# --- command ------------------------------------------------------------------------------------


def test_command_runs_argv_as_a_list_in_the_install_path_with_the_timeout() -> None:
    commands = FakeCommands(CommandResult(0, '{"version": "10.2.0", "ok": true}\n', "", 0.2))
    result = run_one(
        case(
            kind="command",
            argv=["bin/crm", "status", "--format", "two words"],
            expect={"stdout_contains": '"ok": true', "stdout_regex": r'"version": "10\.\d+\.\d+"'},
        ),
        commands,
        timeout=12.5,
    )
    assert commands.calls == [(["bin/crm", "status", "--format", "two words"], INSTALL_PATH, 12.5)]
    assert result.status is CaseStatus.PASSED
    assert result.message == ""
    assert result.kind == "command"
    assert "exit code: 0" in result.output
    assert '"ok": true' in result.output


def test_exit_code_mismatch_names_both_codes_and_the_last_stderr_line() -> None:
    commands = FakeCommands(CommandResult(2, "", "loading\nschema version 7 != 8\n\n", 0.1))
    result = run_one(case(kind="command", argv=["bin/crm", "status"]), commands)
    assert result.status is CaseStatus.FAILED
    assert result.message == "exit code 2, expected 0 (stderr: 'schema version 7 != 8')"
    assert "--- stderr ---\nloading\nschema version 7 != 8" in result.output


def test_an_expected_non_zero_exit_code_passes() -> None:
    commands = FakeCommands(CommandResult(3, "", "", 0.1))
    result = run_one(case(kind="command", argv=["bin/crm", "broken"], expect={"exit_code": 3}), commands)
    assert result.status is CaseStatus.PASSED


def test_missing_stdout_text_shows_what_was_expected_and_what_came() -> None:
    commands = FakeCommands(CommandResult(0, '{"ok": false}\n', "", 0.1))
    result = run_one(
        case(kind="command", argv=["bin/crm"], expect={"stdout_contains": '"ok": true'}), commands
    )
    assert result.status is CaseStatus.FAILED
    assert result.message == """stdout does not contain '"ok": true'; stdout was '{"ok": false}\\n'"""


def test_regex_is_searched_per_line_and_a_miss_shows_the_pattern() -> None:
    commands = FakeCommands(CommandResult(0, "modules:\ncore\nsales\n", "", 0.1))
    passing = run_one(case(kind="command", argv=["ls"], expect={"stdout_regex": "^sales$"}), commands)
    failing = run_one(case(kind="command", argv=["ls"], expect={"stdout_regex": "^marketing$"}), commands)
    assert passing.status is CaseStatus.PASSED
    assert failing.status is CaseStatus.FAILED
    assert failing.message == "stdout does not match /^marketing$/; stdout was 'modules:\\ncore\\nsales\\n'"


def test_every_mismatch_of_a_command_is_reported() -> None:
    commands = FakeCommands(CommandResult(1, "nope", "", 0.1))
    result = run_one(
        case(kind="command", argv=["x"], expect={"stdout_contains": "yes", "stdout_regex": "^y"}), commands
    )
    assert result.message.startswith("exit code 1, expected 0; ")
    assert "stdout does not contain 'yes'" in result.message
    assert "stdout does not match /^y/" in result.message


def test_terminal_colours_are_stripped_from_output() -> None:
    commands = FakeCommands(CommandResult(0, "\x1b[32mOK\x1b[0m all good\n", "", 0.1))
    result = run_one(case(kind="command", argv=["x"], expect={"stdout_contains": "OK all good"}), commands)
    assert result.status is CaseStatus.PASSED
    assert "\x1b" not in result.output


def test_long_output_keeps_head_and_tail_and_long_messages_are_shortened() -> None:
    stdout = "first line\n" + "x" * 50_000 + "\nlast line"
    commands = FakeCommands(CommandResult(0, stdout, "", 0.1))
    result = run_one(case(kind="command", argv=["x"], expect={"stdout_contains": "y" * 1000}), commands)
    assert len(result.output) < 8200
    assert "first line" in result.output
    assert result.output.endswith("last line")
    assert "characters omitted" in result.output
    assert len(result.message) < 700
    assert "more characters]" in result.message


# --- sql ----------------------------------------------------------------------------------------


def test_rows_match_across_database_and_yaml_types() -> None:
    sql = FakeSql([("mail.host", Decimal("1.50"), dt.date(2025, 1, 31), None, True, 42)])
    result = run_one(
        case(
            kind="sql",
            query="select key, ratio, since, note, active, n from crm_settings order by key",
            expect={"rows": [["mail.host", 1.5, "2025-01-31", None, True, "42"]]},
        ),
        sql=sql,
        timeout=7,
    )
    assert result.status is CaseStatus.PASSED, result.message
    assert sql.calls == [("select key, ratio, since, note, active, n from crm_settings order by key", 7)]
    assert result.output == "1 row\n('mail.host', 1.50, 2025-01-31, NULL, True, 42)"


def test_a_differing_row_is_named_with_expected_and_actual() -> None:
    sql = FakeSql([("a", 1), ("b", 2)])
    result = run_one(
        case(kind="sql", query="select k, v from t", expect={"rows": [["a", 1], ["b", 3]]}), sql=sql
    )
    assert result.status is CaseStatus.FAILED
    assert result.message == "row 2: expected \"('b', 3)\", got \"('b', 2)\""


def test_missing_and_extra_rows_are_counted_and_the_first_one_shown() -> None:
    sql = FakeSql([("a",), ("b",), ("c",)])
    extra = run_one(case(kind="sql", query="select k from t", expect={"rows": [["a"]]}), sql=sql)
    missing = run_one(
        case(kind="sql", query="select k from t", expect={"rows": [["a"], ["b"], ["c"], ["d"]]}), sql=sql
    )
    assert extra.message == "expected 1 row, got 3; first extra row: \"('b')\""
    assert missing.message == "expected 4 rows, got 3; first missing row: \"('d')\""


def test_the_same_rows_in_another_order_get_an_order_by_hint() -> None:
    sql = FakeSql([("b", Decimal("2.0")), ("a", 1)])
    result = run_one(
        case(kind="sql", query="select k, v from t", expect={"rows": [["a", 1], ["b", 2]]}), sql=sql
    )
    assert result.status is CaseStatus.FAILED
    assert "different order" in result.message
    assert "ORDER BY" in result.message


def test_scalar_match_mismatch_and_wrong_shape() -> None:
    query = "select value from crm_settings where key = 'mail.host'"
    match = run_one(case(kind="sql", query=query, expect={"scalar": "smtp"}), sql=FakeSql([("smtp",)]))
    assert match.status is CaseStatus.PASSED
    wrong = run_one(case(kind="sql", query=query, expect={"scalar": "smtp"}), sql=FakeSql([("imap",)]))
    assert wrong.message == "expected 'smtp', got 'imap'"
    shape = run_one(case(kind="sql", query=query, expect={"scalar": 8}), sql=FakeSql([(8, 9), (1, 2)]))
    assert shape.message == "expected a single value 8, got 2 rows of 2 columns: '(8, 9), (1, 2)'"
    empty = run_one(case(kind="sql", query=query, expect={"scalar": 8}), sql=FakeSql([]))
    assert empty.message == "expected a single value 8, got 0 rows of 0 columns: ''"


def test_a_null_scalar_matches_only_null() -> None:
    query = "select note from t"
    null = run_one(case(kind="sql", query=query, expect={"scalar": None}), sql=FakeSql([(None,)]))
    assert null.status is CaseStatus.PASSED
    result = run_one(case(kind="sql", query=query, expect={"scalar": None}), sql=FakeSql([("None",)]))
    assert result.message == "expected None, got 'None'"


UNSAFE_QUERIES = [
    ("select * into crm_copy from crm_settings", "SELECT INTO would create a table"),
    ("with gone as (delete from crm_settings returning *) select count(*) from gone", "modifies data"),
    ("select * from crm_settings for update", "row locks are not allowed"),
    ("select set_config('default_transaction_read_only', 'off', false)", "set_config is not allowed"),
    ("select dblink_exec('dbname=crm', 'delete from crm_settings')", "dblink_exec is not allowed"),
    ("select 1; delete from crm_settings", "holds 2 statements"),
]


@pytest.mark.parametrize(("query", "reason"), UNSAFE_QUERIES)
def test_an_unsafe_query_is_refused_when_the_config_is_loaded(query: str, reason: str) -> None:
    with pytest.raises(ValidationError, match="must be a single plain SELECT over allowed functions"):
        case(kind="sql", query=query, expect={"scalar": 1})


@pytest.mark.parametrize(("query", "reason"), UNSAFE_QUERIES)
def test_an_unsafe_query_that_skipped_the_loader_never_reaches_the_database(query: str, reason: str) -> None:
    sneaked_in = case(kind="sql", query="select 1", expect={"scalar": 1}).model_copy(update={"query": query})
    sql = FakeSql([(1,)])
    result = run_one(sneaked_in, sql=sql)
    assert sql.calls == []
    assert result.status is CaseStatus.ERROR
    assert result.message.startswith("query refused before running: ")
    assert reason in result.message


def test_a_database_error_is_an_error_result() -> None:
    sql = FakeSql(error=RuntimeError('relation "crm_settings" does not exist'))
    result = run_one(case(kind="sql", query="select 1 from crm_settings", expect={"scalar": 1}), sql=sql)
    assert result.status is CaseStatus.ERROR
    assert result.message == 'RuntimeError: relation "crm_settings" does not exist'


@pytest.mark.parametrize(
    ("expected", "actual", "same"),
    [
        (1, 1, True),
        (1.5, Decimal("1.50"), True),
        (0.1, Decimal("0.10"), True),
        ("42", 42, True),
        ("2025-01-31", dt.date(2025, 1, 31), True),
        ("2025-01-31T10:00:00+00:00", dt.datetime(2025, 1, 31, 10, tzinfo=dt.UTC), True),
        (None, None, True),
        (None, "None", False),
        ("None", None, False),
        (True, True, True),
        (True, 1, False),
        (1, True, False),
        ("true", True, False),
        (2, 3, False),
        ("a", "A", False),
    ],
)
def test_value_comparison(expected: Any, actual: Any, same: bool) -> None:
    assert same_value(expected, actual) is same


# --- http ---------------------------------------------------------------------------------------


REDIRECTS = {
    "/to-health": "/health",
    "/to-metadata": "http://169.254.169.254/latest/meta-data/",
    "/to-private": "http://10.0.0.1/admin",
    "/to-undeclared": "http://intranet.example/",
    "/to-loopback-v6": "http://[::1]/",
    "/loop": "/loop",
}


SLOW_ANSWER_SECONDS = 30
"""The slow page answers long after any timeout a test sets (the server thread is a daemon)."""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(SLOW_ANSWER_SECONDS)
        if self.path in REDIRECTS:
            self.send_response(302)
            self.send_header("Location", REDIRECTS[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status = {"/missing": 404, "/broken": 500}.get(self.path, 200)
        body = b"x" * 5000 if self.path == "/big" else f"CRM status page {self.path}: OK".encode()
        if self.path == "/host":
            body = f"Host: {self.headers.get('Host')}".encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout test)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_status_and_body_pass(web: str) -> None:
    result = run_one(case(kind="http", url=f"{web}/health", expect={"body_contains": "OK"}))
    assert result.status is CaseStatus.PASSED
    assert result.output == f"GET {web}/health -> 200\nCRM status page /health: OK"


def test_http_error_statuses_are_answers_compared_with_the_expectation(web: str) -> None:
    failing = run_one(case(kind="http", url=f"{web}/broken", expect={"body_contains": "all good"}))
    assert failing.status is CaseStatus.FAILED
    assert failing.message == (
        "HTTP status 500, expected 200; body does not contain 'all good';"
        " body was 'CRM status page /broken: OK'"
    )
    expected_404 = run_one(case(kind="http", url=f"{web}/missing", expect={"status": 404}))
    assert expected_404.status is CaseStatus.PASSED


def test_http_timeout_is_an_error_naming_the_limit(web: str) -> None:
    result = run_one(case(kind="http", url=f"{web}/slow"), timeout=0.3)
    assert result.status is CaseStatus.ERROR
    assert result.message == "timed out after 0.3 s"
    assert result.duration < SLOW_ANSWER_SECONDS  # gave up; did not wait for the answer


def test_http_refused_connection_is_an_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_one(case(kind="http", url=f"http://127.0.0.1:{port}/"))
    assert result.status is CaseStatus.ERROR
    assert "ConnectionRefusedError" in result.message


def test_http_body_is_read_only_up_to_the_limit(web: str) -> None:
    response = GuardedHttpClient(CONFINED.http_policy, body_limit=1000).get(f"{web}/big", timeout=5)
    assert response == HttpResponse(status=200, body="x" * 1000, truncated=True)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "/relative"])
def test_http_client_refuses_other_schemes(url: str) -> None:
    with pytest.raises(RefusedCaseError, match="must be an http:// or https:// URL"):
        GuardedHttpClient(CONFINED.http_policy).get(url, timeout=1)


def test_redirects_are_followed_only_after_the_same_checks(web: str) -> None:
    followed = run_one(case(kind="http", url=f"{web}/to-health", expect={"body_contains": "/health: OK"}))
    assert followed.status is CaseStatus.PASSED, followed.message
    for path, problem in (
        ("/to-metadata", "http://169.254.169.254/latest/meta-data/: 169.254.169.254 is a cloud metadata"),
        ("/to-private", "http://10.0.0.1/admin: address 10.0.0.1 is not declared"),
        ("/to-undeclared", "http://intranet.example/: host intranet.example is not declared"),
        ("/to-loopback-v6", "address ::1 is not declared"),
        ("/loop", "more than 5 redirects"),
    ):
        result = run_one(case(kind="http", url=f"{web}{path}"))
        assert result.status is CaseStatus.ERROR, path
        assert result.message.startswith("refused before running: "), result.message
        assert problem in result.message, result.message


def test_an_undeclared_host_is_refused_before_any_request() -> None:
    result = run_one(case(kind="http", url="http://127.0.0.1:1/"), confinement=Confinement())
    assert result.status is CaseStatus.ERROR
    assert result.message == (
        "refused before running: address 127.0.0.1 is not declared in the environment's http_hosts"
    )


def test_the_connection_goes_to_the_checked_address_under_the_declared_name(web: str) -> None:
    """DNS rebinding: the name is resolved once, every address checked, and that address used."""
    port = int(web.rsplit(":", 1)[1])
    policy = HttpPolicy.of(["crm.acme.example", "127.0.0.1"])
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])

    def flipping_resolver(host: str, _port: int) -> list[Any]:
        assert host == "crm.acme.example"
        return [ipaddress.ip_address(address) for address in next(answers)]

    client = GuardedHttpClient(policy, resolver=flipping_resolver)
    response = client.get(f"http://crm.acme.example:{port}/host", timeout=5)
    assert response.body == f"Host: crm.acme.example:{port}"
    with pytest.raises(RefusedCaseError, match=re.escape("resolves to 169.254.169.254, which is a cloud")):
        client.get(f"http://crm.acme.example:{port}/host", timeout=5)


def test_a_name_resolving_to_an_undeclared_internal_address_is_refused() -> None:
    def resolver(host: str, _port: int) -> list[Any]:
        return [ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.7")]

    client = GuardedHttpClient(HttpPolicy.of(["crm.acme.example"]), resolver=resolver)
    with pytest.raises(RefusedCaseError, match=re.escape("10.0.0.7, which is a private-network address")):
        client.get("https://crm.acme.example/", timeout=5)


# --- a round ------------------------------------------------------------------------------------


def test_a_round_runs_the_cases_of_its_environment_in_order_and_survives_errors() -> None:
    cases = [
        case(id="status", kind="command", argv=["bin/crm", "status"]),
        case(id="uat_only", kind="command", argv=["true"], environments=["uat"]),
        case(
            id="schema", kind="sql", query="select max(version) from crm_schema_version", expect={"scalar": 8}
        ),
        case(id="settings", kind="sql", query="select 1", expect={"scalar": 1}, environments=["dev", "prod"]),
    ]
    commands = FakeCommands(error=OSError("SSH connection lost"))
    sql = FakeSql([(8,)])
    report = run_test_cases(
        cases,
        environment="dev",
        install_path=INSTALL_PATH,
        commands=commands,
        sql=sql,
        round=2,
        timeout=9,
        confinement=CONFINED,
    )
    assert report.environment == "dev"
    assert report.round == 2
    assert [result.id for result in report.results] == ["status", "schema", "settings"]
    assert [result.status for result in report.results] == [
        CaseStatus.ERROR,
        CaseStatus.PASSED,
        CaseStatus.FAILED,
    ]
    assert report.results[0].message == "OSError: SSH connection lost"
    assert report.started_at <= report.finished_at
    assert report.headline == "1 of 3 passed"
    assert [timeout for _, timeout in sql.calls] == [9, 9]


def test_a_command_timeout_is_an_error_and_the_round_goes_on() -> None:
    cases = [
        case(id="hangs", kind="command", argv=["sleep", "999"]),
        case(id="after", kind="sql", query="select 1", expect={"scalar": 1}),
    ]
    commands = FakeCommands(error=TimeoutError())
    report = run_test_cases(
        cases,
        environment="prod",
        install_path=INSTALL_PATH,
        commands=commands,
        sql=FakeSql([(1,)]),
        timeout=30,
        confinement=CONFINED,
    )
    assert report.result("hangs").status is CaseStatus.ERROR
    assert report.result("hangs").message == "timed out after 30 s"
    assert report.result("after").status is CaseStatus.PASSED


def test_environment_filter() -> None:
    everywhere = case(kind="command", argv=["true"])
    prod_only = case(kind="command", argv=["true"], environments=["prod"])
    assert [applies_to(everywhere, name) for name in ("dev", "uat", "prod")] == [True, True, True]
    assert [applies_to(prod_only, name) for name in ("dev", "uat", "prod")] == [False, False, True]


# --- command confinement at run time --------------------------------------------------------------


def test_a_program_outside_the_installation_and_the_allow_list_is_refused_before_running() -> None:
    commands = FakeCommands()
    result = run_one(case(kind="command", argv=["cat", "/etc/shadow"]), commands)
    assert commands.calls == []
    assert result.status is CaseStatus.ERROR
    assert result.message.startswith("refused before running: cat is not listed in allowed_programs")
    inside = run_one(case(kind="command", argv=["bin/crm", "status"]), commands, confinement=Confinement())
    assert inside.status is CaseStatus.PASSED


@pytest.mark.parametrize(
    "argv",
    [
        ["sh", "-c", "id"],
        ["/bin/bash", "-c", "id"],
        ["env", "sh"],
        ["python3", "-c", "print(1)"],
        ["perl", "-e", "1"],
        ["busybox", "sh"],
        ["bin/../../../bin/sh"],
        ["/usr/bin/id"],
        ["xargs", "sh"],
    ],
)
def test_shells_and_escapes_that_skipped_the_loader_are_refused(argv: list[str]) -> None:
    sneaked_in = case(kind="command", argv=["bin/crm"]).model_copy(update={"argv": tuple(argv)})
    commands = FakeCommands()
    allow_all = Confinement(allowed_programs=("sh", "env", "python3", "perl", "busybox", "xargs"))
    result = run_one(sneaked_in, commands, confinement=allow_all)
    assert commands.calls == []
    assert result.status is CaseStatus.ERROR
    assert result.message.startswith("refused before running: ")


# --- regular expressions (RE2) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        (r"(a)\1", "invalid escape sequence: \\1"),
        (r"(?=ok)ok", "invalid perl operator: (?="),
        (r"(?<!not )ok", "invalid perl operator: (?<"),
        (r"ok\Z", "invalid escape sequence: \\Z"),
        ("(unclosed", "missing ): (unclosed"),
    ],
)
def test_regexes_re2_cannot_run_in_linear_time_are_refused_at_load(pattern: str, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        case(kind="command", argv=["bin/crm"], expect={"stdout_regex": pattern})
    message = str(caught.value)
    assert "is not a regular expression RE2 accepts" in message
    assert problem in message


def test_a_catastrophic_pattern_for_backtracking_engines_runs_in_linear_time() -> None:
    stdout = "a" * 200_000 + "!"
    commands = FakeCommands(CommandResult(0, stdout, "", 0.1))
    started = time.monotonic()
    result = run_one(case(kind="command", argv=["bin/crm"], expect={"stdout_regex": r"^(a+)+$"}), commands)
    assert time.monotonic() - started < 2
    assert result.status is CaseStatus.FAILED
    assert result.message.startswith("stdout does not match /^(a+)+$/")
