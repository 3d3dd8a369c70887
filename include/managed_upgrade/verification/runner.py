"""Runs the customer's declarative test cases against one environment and says, per case, what went wrong.

The cases come from the customer config (a remote command, a SQL query on the configuration database,
an HTTP check, each with an expected result). How a command or a query reaches the environment is the
caller's business: it passes a :class:`CommandExecutor` (over SSH, ``cwd`` = install path, argv quoted
with ``shlex.join``, as the non-root service user) and a :class:`SqlExecutor` (the read-only test role,
a ``READ ONLY`` transaction with a statement timeout). Both receive the per-case ``timeout`` and raise
:class:`TimeoutError` when it runs out. HTTP checks use :class:`GuardedHttpClient` unless another
:class:`HttpClient` is given.

Every case is checked again right before it runs, whatever the config loader already said (a config
can be copied or built without validation): the program against the environment's
:class:`Confinement` (:func:`~managed_upgrade.config.test_cases.program_problem`), the query with
PostgreSQL's parser (:func:`~managed_upgrade.sandbox.readonly_sql.require_single_select`), the URL and every
address it resolves to against the declared hosts (:class:`~managed_upgrade.sandbox.http_policy.HttpPolicy`).
``stdout_regex`` is matched by RE2, in linear time.

A case never stops the run: a wrong answer is ``failed``, an exception, a refusal or a timeout is
``error``, and the message says what was expected and what came back.
"""

from __future__ import annotations

import decimal
import http.client
import re
import socket
import ssl
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as clock_time
from typing import TYPE_CHECKING, Any, Protocol

from managed_upgrade.config.test_cases import compile_stdout_regex, program_problem
from managed_upgrade.sandbox.http_policy import HttpPolicy, HttpPolicyError, IpAddress, Resolver
from managed_upgrade.sandbox.readonly_sql import UnsafeQueryError, require_single_select
from managed_upgrade.verification.report import CaseResult, CaseStatus, TestReport, excerpt, shorten

if TYPE_CHECKING:
    from managed_upgrade.config import (
        CommandExpect,
        CommandTestCase,
        Environment,
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

MAX_REDIRECTS = 5
"""Redirects an http case follows, each hop checked like the first URL."""

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_SHOWN_ROWS = 20
_QUOTED_LIMIT = 120
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class RefusedCaseError(ValueError):
    """A case its environment does not allow (program, URL); it was not run."""


@dataclass(frozen=True)
class Confinement:
    """What one environment lets its cases reach besides its installation: the environment's
    ``allowed_programs`` and ``http_hosts``. The default allows nothing more."""

    allowed_programs: tuple[str, ...] = ()
    http_hosts: tuple[str, ...] = ()

    @classmethod
    def of(cls, environment: Environment) -> Confinement:
        return cls(tuple(environment.allowed_programs), tuple(environment.http_hosts))

    @property
    def http_policy(self) -> HttpPolicy:
        return HttpPolicy.of(self.http_hosts)

    def check_program(self, argv: Sequence[str]) -> None:
        """Raise :class:`RefusedCaseError` unless ``argv[0]`` may run here."""
        problem = program_problem(argv[0] if argv else None, self.allowed_programs)
        if problem:
            raise RefusedCaseError(problem)


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


class GuardedHttpClient:
    """:class:`HttpClient` that only reaches what a :class:`~managed_upgrade.sandbox.http_policy.HttpPolicy`
    allows.

    Every URL (the first and each redirect target, at most :data:`MAX_REDIRECTS`) is checked and
    its host resolved; every address is checked and the connection made to the checked address (no
    second lookup, no proxy), with the host name kept for ``Host`` and TLS certificate checks.
    ``timeout`` bounds the whole exchange, redirects and body included.
    """

    def __init__(
        self,
        policy: HttpPolicy,
        body_limit: int = HTTP_BODY_LIMIT,
        max_redirects: int = MAX_REDIRECTS,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self.body_limit = body_limit
        self.max_redirects = max_redirects
        self.resolver = resolver
        self.ssl_context = ssl_context or ssl.create_default_context()

    def get(self, url: str, timeout: float) -> HttpResponse:
        deadline = time.monotonic() + timeout
        for _hop in range(self.max_redirects + 1):
            try:
                scheme, host, port, address = self.policy.resolve(url, self.resolver)
            except HttpPolicyError as error:
                raise RefusedCaseError(f"{_shown_url(url)}: {error}") from None
            status, headers, body, truncated = self._fetch(scheme, host, port, address, url, deadline)
            location = headers.get("Location")
            if status in _REDIRECT_STATUSES and location:
                url = urllib.parse.urljoin(url, location.strip())
                continue
            charset = headers.get_content_charset() or "utf-8"
            try:
                text = body.decode(charset, errors="replace")
            except LookupError:
                text = body.decode("utf-8", errors="replace")
            return HttpResponse(status=status, body=text, truncated=truncated)
        raise RefusedCaseError(f"more than {self.max_redirects} redirects; the last to {_shown_url(url)}")

    def _fetch(
        self, scheme: str, host: str, port: int, address: IpAddress, url: str, deadline: float
    ) -> tuple[int, Any, bytes, bool]:
        remaining = _remaining(deadline)
        if scheme == "https":
            connection: http.client.HTTPConnection = _PinnedHttpsConnection(
                host, port, address, remaining, self.ssl_context
            )
        else:
            connection = _PinnedHttpConnection(host, port, address, remaining)
        parts = urllib.parse.urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request(
                "GET",
                target,
                headers={"User-Agent": "managed-upgrade-test-case", "Accept-Encoding": "identity"},
            )
            response = connection.getresponse()
            body = bytearray()
            while len(body) <= self.body_limit:
                if connection.sock is not None:
                    connection.sock.settimeout(_remaining(deadline))
                chunk = response.read1(65536)
                if not chunk:
                    break
                body += chunk
            truncated = len(body) > self.body_limit
            return response.status, response.headers, bytes(body[: self.body_limit]), truncated
        except TimeoutError as error:
            raise TimeoutError(f"timed out waiting for {host}") from error
        finally:
            connection.close()


class _PinnedHttpConnection(http.client.HTTPConnection):
    """Plain HTTP to the checked ``address``, ``Host`` still the name."""

    def __init__(self, host: str, port: int, address: IpAddress, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self._address), self.port), self.timeout)


class _PinnedHttpsConnection(http.client.HTTPSConnection):
    """HTTPS to the checked ``address``; the certificate is verified for the host name."""

    def __init__(
        self, host: str, port: int, address: IpAddress, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((str(self._address), self.port), self.timeout)
        try:
            self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the case's time ran out")
    return remaining


def _shown_url(url: str) -> str:
    return url if len(url) <= 200 else url[:200] + "..."


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
    confinement: Confinement | None = None,
) -> TestReport:
    """Run every case that applies to ``environment``, in order, and return the round's report.

    ``round`` is 0 for the baseline ("Verify test cases in Dev"), then 1, 2, ... for the sanity test
    and each retest; compare later rounds with the baseline using :meth:`TestReport.compare_to`.
    ``confinement`` is what the environment allows besides its installation (none by default);
    ``http`` defaults to a :class:`GuardedHttpClient` of its ``http_hosts``.
    """
    started_at = datetime.now(UTC)
    confinement = confinement or Confinement()
    results = tuple(
        run_test_case(
            case,
            install_path=install_path,
            commands=commands,
            sql=sql,
            http=http,
            timeout=timeout,
            confinement=confinement,
        )
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
    http: HttpClient | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    confinement: Confinement | None = None,
) -> CaseResult:
    """Run one case; never raises for a problem of the case or the environment."""
    started = time.monotonic()
    confinement = confinement or Confinement()
    try:
        http = http or GuardedHttpClient(confinement.http_policy)
        status, message, output = _check(case, install_path, commands, sql, http, timeout, confinement)
    except TimeoutError as error:
        detail = f" ({error})" if str(error) and "timed out" not in str(error).lower() else ""
        status, message, output = CaseStatus.ERROR, f"timed out after {timeout:g} s{detail}", ""
    except UnsafeQueryError as error:
        status, message, output = CaseStatus.ERROR, f"query refused before running: {error}", ""
    except RefusedCaseError as error:
        status, message, output = CaseStatus.ERROR, f"refused before running: {error}", ""
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
    confinement: Confinement,
) -> tuple[CaseStatus, str, str]:
    if case.kind == "command":
        confinement.check_program(case.argv)
        return _run_command(case, commands, install_path, timeout)
    if case.kind == "sql":
        return _run_sql(case, sql, timeout)
    try:
        confinement.http_policy.check_url(case.url)
    except HttpPolicyError as error:
        raise RefusedCaseError(str(error)) from None
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

    ``stdout_regex`` is searched (not matched) by RE2 in multi-line mode: ``^``/``$`` anchor at lines.
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
    if pattern is not None and not compile_stdout_regex(pattern).search(stdout):
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
