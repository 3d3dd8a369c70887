"""Customer test cases: declarative checks (remote command, SQL query, HTTP request) and what they expect.

Test cases come from the customer, so each kind is confined here and again where it runs.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, StrictInt, StrictStr, field_validator, model_validator

from managed_upgrade.config.base import ENVIRONMENT_NAMES, EnvironmentName, Scalar, StrictModel
from managed_upgrade.safe import SAFE_KINDS, Argument, Line, Slug, field_error, is_safe


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
    """What a command must produce; the regex is a Python ``re.search`` over stdout."""

    exit_code: StrictInt = Field(default=0, ge=0, le=255)
    stdout_contains: StrictStr | None = None
    stdout_regex: StrictStr | None = None

    @field_validator("stdout_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"is not a valid regular expression: {exc}") from None
        return value


class CommandTestCase(_TestCaseBase):
    """Run ``argv`` on the environment's host over SSH, in its ``install_path`` as working directory.

    The remote command line is ``cd <install_path> && <shlex.join(argv)>``: relative programs such as
    ``bin/crm`` resolve against the installation; no argument is ever interpreted by a shell.
    """

    kind: Literal["command"]
    argv: tuple[Argument, ...] = Field(min_length=1)
    expect: CommandExpect = CommandExpect()

    @field_validator("argv")
    @classmethod
    def _program_has_no_spaces(cls, argv: tuple[str, ...]) -> tuple[str, ...]:
        if not is_safe("program", argv[0]):
            raise field_error("[0]", f"not a valid program: use {SAFE_KINDS['program'][1]} (got {argv[0]!r})")
        return argv


_STATEMENT_START = re.compile(r"\s*(select|with)\b", re.IGNORECASE)


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
    """Run one read-only query on the environment's config database and compare its result."""

    kind: Literal["sql"]
    query: StrictStr = Field(min_length=1, max_length=10_000)
    expect: SqlExpect

    @field_validator("query")
    @classmethod
    def _single_select(cls, query: str) -> str:
        if not _STATEMENT_START.match(query):
            raise ValueError("must be a single SELECT (or WITH ... SELECT) statement")
        body = query.strip().removesuffix(";")
        if ";" in body:
            raise ValueError(
                "must be a single statement: ';' is only allowed at the very end "
                "(even inside a string literal; use chr(59) there)"
            )
        return query


class HttpExpect(StrictModel):
    """Expected HTTP answer."""

    status: StrictInt = Field(default=200, ge=100, le=599)
    body_contains: StrictStr | None = None


class HttpTestCase(_TestCaseBase):
    """Fetch a URL and check the status (and optionally the body)."""

    kind: Literal["http"]
    url: StrictStr = Field(max_length=2000)
    expect: HttpExpect = HttpExpect()

    @field_validator("url")
    @classmethod
    def _plain_http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; use an Airflow connection")
        if not is_safe("host", parts.hostname) or re.search(r"[\s\x00-\x1f\x7f\"'<>`\\]", url):
            raise ValueError("contains characters not allowed in a URL (spaces, quotes, control characters)")
        return url


TestCase = Annotated[CommandTestCase | SqlTestCase | HttpTestCase, Field(discriminator="kind")]
TEST_CASE_KINDS = ("command", "sql", "http")
