"""Runs the customer's declarative test cases against one environment and says, per case, what went wrong.

The cases come from the customer config (a remote command, a SQL query on the configuration database,
an HTTP check, each with an expected result). How a command or a query reaches the environment is the
caller's business: it passes a :class:`CommandExecutor` (over SSH, ``cwd`` = install path, argv quoted
with ``shlex.join``) and a :class:`SqlExecutor` (a ``READ ONLY`` transaction with a statement timeout).
Both receive the per-case ``timeout`` and raise :class:`TimeoutError` when it runs out. HTTP checks use
:class:`UrllibHttpClient` unless another :class:`HttpClient` is given.

A case never stops the run: a wrong answer is ``failed``, an exception or a timeout is ``error``, and
the message says what was expected and what came back.
"""

from __future__ import annotations

import decimal
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as clock_time
from typing import TYPE_CHECKING, Any, Protocol

from managed_upgrade.readonly_sql import UnsafeQueryError, require_single_select
from managed_upgrade.testcase_report import CaseResult, CaseStatus, TestReport, excerpt, shorten

if TYPE_CHECKING:
    from managed_upgrade.config import (
        CommandExpect,
        CommandTestCase,
        HttpExpect,
        HttpTestCase,
        SqlExpect,
        SqlTestCase,
    )

    AnyTestCase = CommandTestCase | SqlTestCase | HttpTestCase

DEFAULT_TIMEOUT = 60.0
"""Seconds one case may take unless the caller says otherwise."""

HTTP_BODY_LIMIT = 1024 * 1024
"""Bytes of an HTTP response body read and searched."""

_SHOWN_ROWS = 20
_QUOTED_LIMIT = 120
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


# --- what the caller provides -------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    """What a remote command returned."""

    exit_code: int
    stdout: str
    stderr: str
    duration: float


class CommandExecutor(Protocol):
    """Runs ``argv`` (a list, never a shell string) in ``cwd`` on the environment's host."""

    def run(self, argv: Sequence[str], cwd: str, timeout: float) -> CommandResult: ...


class SqlExecutor(Protocol):
    """Runs one already validated SELECT read-only on the environment's configuration database."""

    def query(self, sql: str, timeout: float) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class HttpResponse:
    """Status and (possibly truncated) decoded body of an HTTP response."""

    status: int
    body: str
    truncated: bool = False


class HttpClient(Protocol):
    """Fetches ``url`` with GET; HTTP error statuses are responses, not exceptions."""

    def get(self, url: str, timeout: float) -> HttpResponse: ...


class UrllibHttpClient:
    """:class:`HttpClient` over the standard library; only ``http`` and ``https`` URLs."""

    def __init__(self, body_limit: int = HTTP_BODY_LIMIT) -> None:
        self.body_limit = body_limit

    def get(self, url: str, timeout: float) -> HttpResponse:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"only http and https URLs can be checked, not {scheme or 'a relative'} URL")
        request = urllib.request.Request(url, method="GET")  # noqa: S310  scheme checked above
        try:
            response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310  scheme checked above
        except urllib.error.HTTPError as error:
            response = error
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                raise TimeoutError(str(error.reason)) from error
            raise
        with response:
            raw = response.read(self.body_limit + 1)
            charset = response.headers.get_content_charset() or "utf-8"
            status = response.status
        body = raw[: self.body_limit].decode(charset, errors="replace")
        return HttpResponse(status=status, body=body, truncated=len(raw) > self.body_limit)


# --- running ------------------------------------------------------------------------------------


def applies_to(case: AnyTestCase, environment: str) -> bool:
    """Whether ``case`` runs on ``environment`` (its ``environments`` list, all three by default)."""
    return environment in case.environments


def run_test_cases(
    cases: Iterable[AnyTestCase],
    *,
    environment: str,
    install_path: str,
    commands: CommandExecutor,
    sql: SqlExecutor,
    http: HttpClient | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    round: int = 0,
) -> TestReport:
    """Run every case that applies to ``environment``, in order, and return the round's report.

    ``round`` is 0 for the baseline ("Verify test cases in Dev"), then 1, 2, ... for the sanity test
    and each retest; compare later rounds with the baseline using :meth:`TestReport.compare_to`.
    """
    started_at = datetime.now(UTC)
    http = http or UrllibHttpClient()
    results = tuple(
        run_test_case(case, install_path=install_path, commands=commands, sql=sql, http=http, timeout=timeout)
        for case in cases
        if applies_to(case, environment)
    )
    return TestReport(
        environment=environment,
        round=round,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        results=results,
    )


def run_test_case(
    case: AnyTestCase,
    *,
    install_path: str,
    commands: CommandExecutor,
    sql: SqlExecutor,
    http: HttpClient,
    timeout: float = DEFAULT_TIMEOUT,
) -> CaseResult:
    """Run one case; never raises for a problem of the case or the environment."""
    started = time.monotonic()
    try:
        status, message, output = _check(case, install_path, commands, sql, http, timeout)
    except TimeoutError as error:
        detail = f" ({error})" if str(error) and "timed out" not in str(error).lower() else ""
        status, message, output = CaseStatus.ERROR, f"timed out after {timeout:g} s{detail}", ""
    except UnsafeQueryError as error:
        status, message, output = CaseStatus.ERROR, f"query rejected before running: {error}", ""
    except Exception as error:  # one broken case or host must not end the round
        status, message, output = CaseStatus.ERROR, f"{type(error).__name__}: {error}", ""
    return CaseResult(
        id=case.id,
        title=case.title,
        kind=case.kind,
        status=status,
        message=shorten(message),
        output=excerpt(output),
        duration=time.monotonic() - started,
    )


def _check(
    case: AnyTestCase,
    install_path: str,
    commands: CommandExecutor,
    sql: SqlExecutor,
    http: HttpClient,
    timeout: float,
) -> tuple[CaseStatus, str, str]:
    if case.kind == "command":
        return _run_command(case, commands, install_path, timeout)
    if case.kind == "sql":
        return _run_sql(case, sql, timeout)
    return _run_http(case, http, timeout)


# --- command ------------------------------------------------------------------------------------


def _run_command(
    case: CommandTestCase, commands: CommandExecutor, install_path: str, timeout: float
) -> tuple[CaseStatus, str, str]:
    result = commands.run(list(case.argv), cwd=install_path, timeout=timeout)
    stdout, stderr = _plain(result.stdout), _plain(result.stderr)
    problems = evaluate_command(case.expect, result.exit_code, stdout, stderr)
    return _verdict(problems), "; ".join(problems), _command_output(result.exit_code, stdout, stderr)


def evaluate_command(expect: CommandExpect, exit_code: int, stdout: str, stderr: str = "") -> list[str]:
    """Every way the command's result differs from ``expect`` (empty if it matches).

    ``stdout_regex`` is searched (not matched) in multi-line mode: ``^``/``$`` anchor at lines.
    """
    problems = []
    expected_code = expect.exit_code
    if exit_code != expected_code:
        problem = f"exit code {exit_code}, expected {expected_code}"
        last_error_line = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
        if last_error_line:
            problem += f" (stderr: {_quote(last_error_line.strip())})"
        problems.append(problem)
    needle = expect.stdout_contains
    if needle is not None and needle not in stdout:
        problems.append(f"stdout does not contain {_quote(needle)}; stdout was {_quote(stdout)}")
    pattern = expect.stdout_regex
    if pattern is not None and not re.search(pattern, stdout, re.MULTILINE):
        problems.append(f"stdout does not match /{pattern}/; stdout was {_quote(stdout)}")
    return problems


def _command_output(exit_code: int, stdout: str, stderr: str) -> str:
    parts = [f"exit code: {exit_code}"]
    if stdout:
        parts.append(f"--- stdout ---\n{stdout.rstrip()}")
    if stderr:
        parts.append(f"--- stderr ---\n{stderr.rstrip()}")
    return "\n".join(parts)


# --- sql ----------------------------------------------------------------------------------------


def _run_sql(case: SqlTestCase, sql: SqlExecutor, timeout: float) -> tuple[CaseStatus, str, str]:
    query = require_single_select(case.query)
    rows = [tuple(row) for row in sql.query(query, timeout=timeout)]
    problems = evaluate_rows(case.expect, rows)
    return _verdict(problems), "; ".join(problems), _rows_output(rows)


def evaluate_rows(expect: SqlExpect, rows: Sequence[Sequence[Any]]) -> list[str]:
    """How ``rows`` differ from ``expect`` (``rows``: all rows in order; or ``scalar``: one value).

    Values compare as numbers when both are numbers (``1.50`` equals ``Decimal("1.5")``), as ISO text
    for dates and times, and as text otherwise (a YAML ``"42"`` matches an integer 42); ``null`` only
    matches NULL. ``scalar: null`` expects a single NULL.
    """
    if expect.rows is not None:
        return _rows_problems([tuple(row) for row in expect.rows], [tuple(row) for row in rows])
    return _scalar_problems(expect.scalar, rows)


def _scalar_problems(expected: Any, rows: Sequence[Sequence[Any]]) -> list[str]:
    if len(rows) != 1 or len(rows[0]) != 1:
        columns = len(rows[0]) if rows else 0
        return [
            f"expected a single value {expected!r}, got {len(rows)} row{_plural(len(rows))}"
            f" of {columns} column{_plural(columns)}: {_quote(_rows_text(rows))}"
        ]
    actual = rows[0][0]
    if not same_value(expected, actual):
        return [f"expected {expected!r}, got {actual!r}"]
    return []


def _rows_problems(expected: list[tuple[Any, ...]], actual: list[tuple[Any, ...]]) -> list[str]:
    if len(expected) == len(actual) and all(map(_same_row, expected, actual)):
        return []
    if len(expected) == len(actual) and Counter(map(_row_key, expected)) == Counter(map(_row_key, actual)):
        return ["same rows in a different order; add ORDER BY to the query or list the rows in its order"]
    problems = []
    if len(expected) != len(actual):
        problems.append(f"expected {len(expected)} row{_plural(len(expected))}, got {len(actual)}")
    for index, (want, got) in enumerate(zip(expected, actual, strict=False), start=1):
        if not _same_row(want, got):
            problems.append(f"row {index}: expected {_quote(_row_text(want))}, got {_quote(_row_text(got))}")
            break
    else:
        if len(actual) > len(expected):
            problems.append(f"first extra row: {_quote(_row_text(actual[len(expected)]))}")
        elif len(expected) > len(actual):
            problems.append(f"first missing row: {_quote(_row_text(expected[len(actual)]))}")
    return problems


def same_value(expected: Any, actual: Any) -> bool:
    """Whether a value from the config equals a value from the database (see :func:`evaluate_rows`)."""
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if _is_number(expected) and _is_number(actual):
        return decimal.Decimal(str(expected)) == decimal.Decimal(str(actual))
    if isinstance(expected, list | tuple) and isinstance(actual, list | tuple):
        return len(expected) == len(actual) and all(map(same_value, expected, actual))
    return expected == actual or _value_text(expected) == _value_text(actual)


def _same_row(expected: Sequence[Any], actual: Sequence[Any]) -> bool:
    return len(expected) == len(actual) and all(map(same_value, expected, actual))


def _row_key(row: Sequence[Any]) -> tuple[str, ...]:
    """Order-insensitive comparison key consistent with :func:`same_value` for the usual types."""
    return tuple(_canonical(value) for value in row)


def _canonical(value: Any) -> str:
    if value is None:
        return "\x00null"
    if isinstance(value, bool):
        return f"\x00bool:{value}"
    if _is_number(value):
        return str(decimal.Decimal(str(value)).normalize())
    return _value_text(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool)


def _value_text(value: Any) -> str:
    if isinstance(value, datetime | date | clock_time):
        return value.isoformat()
    return str(value)


def _rows_output(rows: Sequence[Sequence[Any]]) -> str:
    shown = "\n".join(_row_text(row) for row in rows[:_SHOWN_ROWS])
    more = f"\n… {len(rows) - _SHOWN_ROWS} more rows" if len(rows) > _SHOWN_ROWS else ""
    return f"{len(rows)} row{_plural(len(rows))}\n{shown}{more}".rstrip()


def _row_text(row: Sequence[Any]) -> str:
    return "(" + ", ".join(_value_repr(value) for value in row) + ")"


def _rows_text(rows: Sequence[Sequence[Any]]) -> str:
    return ", ".join(_row_text(row) for row in rows[:3]) + (" …" if len(rows) > 3 else "")


def _value_repr(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, decimal.Decimal | datetime | date | clock_time):
        return _value_text(value)
    return repr(value)


# --- http ---------------------------------------------------------------------------------------


def _run_http(case: HttpTestCase, http: HttpClient, timeout: float) -> tuple[CaseStatus, str, str]:
    url = case.url
    response = http.get(url, timeout=timeout)
    problems = evaluate_http(case.expect, response)
    truncated = f"\n… (body cut at {len(response.body)} characters)" if response.truncated else ""
    output = f"GET {url} -> {response.status}\n{_plain(response.body)}{truncated}"
    return _verdict(problems), "; ".join(problems), output


def evaluate_http(expect: HttpExpect, response: HttpResponse) -> list[str]:
    """How ``response`` differs from ``expect`` (``status``, default 200, and ``body_contains``)."""
    problems = []
    expected_status = expect.status
    if response.status != expected_status:
        problems.append(f"HTTP status {response.status}, expected {expected_status}")
    needle = expect.body_contains
    if needle is not None and needle not in response.body:
        problems.append(f"body does not contain {_quote(needle)}; body was {_quote(response.body)}")
    return problems


# --- helpers ------------------------------------------------------------------------------------


def _verdict(problems: list[str]) -> CaseStatus:
    return CaseStatus.FAILED if problems else CaseStatus.PASSED


def _plain(text: str) -> str:
    """Output without terminal colour codes."""
    return _ANSI_ESCAPE.sub("", text)


def _quote(text: str) -> str:
    return repr(shorten(text, _QUOTED_LIMIT))


def _plural(count: int) -> str:
    return "" if count == 1 else "s"
