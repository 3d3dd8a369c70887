"""Customer test cases: declarative checks (remote command, SQL query, HTTP request) and what they expect.

Test cases come from the customer, so each kind is confined here, when the config is loaded, and
again where it runs (:mod:`managed_upgrade.verification.runner`):

- ``command``: the program is one of the installation (a relative path such as ``bin/crm``, no ``..``)
  or one the environment lists in ``allowed_programs``; shells and programs that run other programs
  or code (``sh``, ``bash``, ``env``, ``python``, ``perl``, ``busybox``, ``xargs`` ...) never, even listed;
- ``sql``: one plain SELECT over allowed functions, read by PostgreSQL's parser
  (:mod:`managed_upgrade.sandbox.readonly_sql`);
- ``http``: only to hosts the environment declares in ``http_hosts``
  (:mod:`managed_upgrade.sandbox.http_policy`);
- ``stdout_regex``: an RE2 expression (linear time: no backreferences, no lookaround).

The checks that need the environment (allowed programs, declared hosts) are made for every environment
a case runs on by :func:`environment_problems`, called by the customer config's validator.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from functools import cache
from typing import Annotated, Any, Literal, Protocol

import re2
from pydantic import AfterValidator, Field, StrictInt, StrictStr, field_validator, model_validator

from managed_upgrade.config.base import ENVIRONMENT_NAMES, EnvironmentName, Scalar, StrictModel
from managed_upgrade.sandbox.http_policy import (
    HttpPolicy,
    HttpPolicyError,
    literal_never_allowed,
    parse_http_host,
    split_url,
)
from managed_upgrade.sandbox.readonly_sql import UnsafeQueryError, require_single_select
from managed_upgrade.vocabulary import SAFE_KINDS, Argument, Line, Slug, field_error, is_safe

# --- programs -------------------------------------------------------------------------------------

REFUSED_PROGRAMS = frozenset(
    {
        # shells
        "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "pdksh", "csh", "tcsh", "fish", "rbash", "yash",
        "elvish", "nu", "xonsh", "busybox", "toybox",
        # shell builtins and keywords a command line could reach
        "eval", "exec", "source", "command", "builtin", "trap", "alias", "export", "set", "ulimit",
        # programs that run other programs
        "env", "nohup", "nice", "ionice", "timeout", "setsid", "stdbuf", "chroot", "sudo", "su", "doas",
        "runuser", "setpriv", "pkexec", "xargs", "find", "parallel", "watch", "script", "expect", "screen",
        "tmux", "ssh", "scp", "sftp", "rsync", "flock", "unshare", "nsenter", "capsh", "chrt", "taskset",
        "time", "systemd-run", "at", "batch", "crontab", "strace", "ltrace", "gdb", "make", "git",
        "socat", "nc", "ncat", "netcat", "telnet",
        # programs that run code given as arguments
        "awk", "gawk", "mawk", "nawk", "sed", "ed", "ex", "vi", "vim", "nvim", "view", "emacs", "less",
        "more", "man", "tar", "dc", "bc", "m4", "sqlite3", "psql",
    }
)  # fmt: skip
"""Programs never run by a command test case, by name (also as ``/usr/bin/<name>`` or ``bin/<name>``)."""

_INTERPRETER = re.compile(
    r"^(python|pypy|perl|ruby|irb|php|lua|luajit|node|nodejs|deno|bun|tclsh|wish|pwsh|powershell|"
    r"rscript|r|julia|java|jshell|groovy|scala|osascript|guile|racket|ocaml|erl|escript)[0-9._-]*$",
    re.IGNORECASE,
)
"""Interpreters (``python3.11``, ``perl5.36``...): they run code given as an argument."""

_NAME_SEGMENT = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9_.+-]*$")


def refused_program(program: str) -> str | None:
    """Why ``program`` is never run (a shell, a runner of other programs or code), or ``None``."""
    name = program.rsplit("/", 1)[-1]
    if name in REFUSED_PROGRAMS or name.lower() in REFUSED_PROGRAMS or _INTERPRETER.fullmatch(name):
        return (
            f"{program} is a shell, an interpreter or runs other programs; a command test case runs one "
            "program of the installation (such as bin/crm) or of allowed_programs"
        )
    return None


def program_problem(program: object, allowed_programs: Collection[str] | None) -> str | None:
    """Why ``program`` (``argv[0]``) may not run, or ``None``.

    ``allowed_programs`` is the environment's list; ``None`` checks only what is wrong everywhere (the
    case on its own, before its environments are known): a bare name or an absolute path is then
    accepted, pending the environment's list.
    """
    if not isinstance(program, str) or not is_safe("program", program):
        return f"not a valid program: use {SAFE_KINDS['program'][1]} (got {program!r})"
    absolute = program.startswith("/")
    segments = program.removeprefix("/").split("/")
    problem = refused_program(program)
    if problem is None and not all(_NAME_SEGMENT.fullmatch(segment) for segment in segments):
        problem = (
            f"{program} must be written plainly, such as bin/crm or /usr/bin/test (no '..', '.', empty "
            "parts or leading '-')"
        )
    elif problem is None and len(segments) > 1 and not absolute:
        return None  # relative path: inside the install path, the working directory
    elif problem is None and allowed_programs is not None and program not in allowed_programs:
        problem = (
            f"{program} is not listed in allowed_programs (a program of the installation is written as "
            "its path, such as bin/crm)"
        )
    return problem


def _allowed_program(value: str) -> str:
    if not is_safe("program", value):
        raise ValueError(f"not a valid program: use {SAFE_KINDS['program'][1]}")
    if "/" in value and not value.startswith("/"):
        raise ValueError(
            "list programs by name (found in the service user's PATH) or absolute path; the "
            "installation's own programs (bin/crm) need no listing"
        )
    refused = refused_program(value)
    if refused:
        raise ValueError(f"{value} cannot be allowed: it is a shell, an interpreter or runs other programs")
    problem = program_problem(value, None)
    if problem:
        raise ValueError(problem)
    return value


AllowedProgram = Annotated[str, Field(max_length=255), AfterValidator(_allowed_program)]
"""An ``Environment.allowed_programs`` entry: ``test``, ``/opt/vendor/bin/healthcheck``; never a shell."""


def _http_host(value: str) -> str:
    parse_http_host(value)
    return value


HttpHost = Annotated[StrictStr, Field(max_length=255), AfterValidator(_http_host)]
"""An ``Environment.http_hosts`` entry: a host name, an IP address or a network such as ``10.1.0.0/16``."""


# --- regular expressions ----------------------------------------------------------------------------

REGEX_MAX_MEMORY = 8 * 1024 * 1024
"""Bytes RE2 may use for one compiled expression."""


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = REGEX_MAX_MEMORY
    return options


@cache
def compile_stdout_regex(pattern: str) -> Any:
    """``pattern`` compiled by RE2 in multi-line mode (``^``/``$`` at line ends); ValueError if RE2
    cannot compile it."""
    try:
        re2.compile(pattern, _re2_options())  # alone first, so an error quotes the author's pattern
        return re2.compile(f"(?m){pattern}", _re2_options())
    except re2.error as error:
        reason = error.args[0] if error.args else error
        detail = reason.decode(errors="replace") if isinstance(reason, bytes) else reason
        raise ValueError(
            f"is not a regular expression RE2 accepts ({detail}); RE2 runs in linear time, so it has no "
            "backreferences (\\1) or lookaround ((?=...), (?!...), (?<=...)); also \\Z is written \\z"
        ) from None


# --- test cases -----------------------------------------------------------------------------------


class _TestCaseBase(StrictModel):
    id: Slug
    title: Line
    environments: tuple[EnvironmentName, ...] = Field(default=ENVIRONMENT_NAMES, min_length=1)

    @field_validator("environments")
    @classmethod
    def _no_repeats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"lists an environment twice: {list(value)}")
        return value


class CommandExpect(StrictModel):
    """What a command must produce; the regex is searched (RE2, multi-line) in stdout."""

    exit_code: StrictInt = Field(default=0, ge=0, le=255)
    stdout_contains: StrictStr | None = None
    stdout_regex: StrictStr | None = Field(default=None, max_length=1000)

    @field_validator("stdout_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_stdout_regex(value)
        return value


class CommandTestCase(_TestCaseBase):
    """Run ``argv`` on the environment's host over SSH, in its ``install_path`` as working directory.

    ``argv[0]`` is a program of the installation (``bin/crm``) or one of the environment's
    ``allowed_programs``; no argument is ever interpreted by a shell. It runs as the environment's
    non-root service user, bounded in time and output.
    """

    kind: Literal["command"]
    argv: tuple[Argument, ...] = Field(min_length=1)
    expect: CommandExpect = CommandExpect()

    @field_validator("argv")
    @classmethod
    def _program_is_confined(cls, argv: tuple[str, ...]) -> tuple[str, ...]:
        problem = program_problem(argv[0], None)
        if problem:
            raise field_error("[0]", problem)
        return argv


class SqlExpect(StrictModel):
    """Expected result of a query: all its rows, or its single value (first column of the only row)."""

    rows: tuple[tuple[Scalar, ...], ...] | None = None
    scalar: Scalar = None

    @model_validator(mode="before")
    @classmethod
    def _something_expected(cls, data: Any) -> Any:
        if isinstance(data, dict) and "rows" not in data and "scalar" not in data:
            raise ValueError("give the expected rows or scalar")
        if isinstance(data, dict) and "rows" in data and "scalar" in data:
            raise ValueError("give either rows or scalar, not both")
        return data


class SqlTestCase(_TestCaseBase):
    """Run one read-only query on the environment's config database and compare its result.

    The query is one plain SELECT over allowed functions (:mod:`managed_upgrade.sandbox.readonly_sql`); it
    runs as the environment's read-only test role (``test_db_conn_id``) in a READ ONLY transaction.
    """

    kind: Literal["sql"]
    query: StrictStr = Field(min_length=1, max_length=10_000)
    expect: SqlExpect

    @field_validator("query")
    @classmethod
    def _single_select(cls, query: str) -> str:
        try:
            require_single_select(query)
        except UnsafeQueryError as error:
            raise ValueError(f"must be a single plain SELECT over allowed functions: {error}") from None
        return query


class HttpExpect(StrictModel):
    """Expected HTTP answer."""

    status: StrictInt = Field(default=200, ge=100, le=599)
    body_contains: StrictStr | None = None


class HttpTestCase(_TestCaseBase):
    """Fetch a URL and check the status (and optionally the body); only hosts of ``http_hosts``."""

    kind: Literal["http"]
    url: StrictStr = Field(max_length=2000)
    expect: HttpExpect = HttpExpect()

    @field_validator("url")
    @classmethod
    def _plain_http_url(cls, url: str) -> str:
        try:
            _scheme, host, _port = split_url(url)
        except HttpPolicyError as error:
            raise ValueError(str(error)) from None
        if not is_safe("host", host) or re.search(r"[\s\x00-\x1f\x7f\"'<>`\\]", url):
            raise ValueError("contains characters not allowed in a URL (spaces, quotes, control characters)")
        problem = literal_never_allowed(host)
        if problem:
            raise ValueError(f"{host} is {problem}; http test cases never go there")
        return url


TestCase = Annotated[CommandTestCase | SqlTestCase | HttpTestCase, Field(discriminator="kind")]
TEST_CASE_KINDS = ("command", "sql", "http")


# --- against the environments a case runs on --------------------------------------------------------


class _Environment(Protocol):
    """What :func:`environment_problems` reads of a :class:`~managed_upgrade.config.models.Environment`
    (described, not imported: ``models`` imports this module); ``test_db_conn_id``, ``allowed_programs``
    and ``http_hosts`` are read with a default."""

    @property
    def db_conn_id(self) -> str: ...


def environment_problems(
    cases: Iterable[CommandTestCase | SqlTestCase | HttpTestCase],
    environments: Iterable[tuple[str, _Environment]],
) -> list[tuple[str, str]]:
    """``(field path, message)`` for every case that its environments do not allow.

    A command's program must be of the installation or in the environment's ``allowed_programs``; an
    http case's host must be in its ``http_hosts``. Paths are relative to the customer config
    (``test_cases[2].argv[0]``); one message per problem names the environments it applies to.
    """
    by_name = dict(environments)
    problems: list[tuple[str, str]] = []
    for name, env in by_name.items():
        test_db = getattr(env, "test_db_conn_id", None)
        if test_db is not None and test_db == env.db_conn_id:
            problems.append(
                (
                    f"environments.{name}.test_db_conn_id",
                    "must differ from db_conn_id: test queries run as a read-only role of their own",
                )
            )
    for index, case in enumerate(cases):
        found: dict[tuple[str, str], list[str]] = {}
        for env_name in case.environments:
            environment = by_name.get(env_name)
            if environment is None:
                continue
            for field, problem in _case_problems(case, environment):
                found.setdefault((f"test_cases[{index}].{field}", problem), []).append(env_name)
        for (path, problem), names in found.items():
            problems.append((path, f"{problem} (on {', '.join(names)})"))
    return problems


def _case_problems(
    case: CommandTestCase | SqlTestCase | HttpTestCase, env: _Environment
) -> list[tuple[str, str]]:
    if case.kind == "command":
        problem = program_problem(case.argv[0], tuple(getattr(env, "allowed_programs", ())))
        return [("argv[0]", problem)] if problem else []
    if case.kind == "http":
        try:
            HttpPolicy.of(getattr(env, "http_hosts", ())).check_url(case.url)
        except (HttpPolicyError, ValueError) as error:
            return [("url", str(error))]
    return []
