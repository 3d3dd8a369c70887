"""Strict patterns for every identifier, version, path and host that may reach a shell, SQL or a URL.

Values from customer configs and trigger forms end up in SSH command lines, file names and database
names. Rather than trusting each caller to quote, they are accepted only if they match a pattern that
cannot carry shell metacharacters (no spaces, quotes, ``;``, ``$``, backticks or newlines). The pattern
strings are plain ``^...$`` regexes so the same text serves pydantic (Rust regex), the JSON schema of the
Airflow trigger form (JavaScript) and ``re.fullmatch`` here.

Also home of the small helpers that turn pydantic errors into "<file>: <field.path>: <message>" lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

# --- patterns (anchored; always matched whole) ---------------------------------------------------

CUSTOMER_ID_PATTERN = r"^[a-z][a-z0-9_]{1,39}$"
CASE_ID_PATTERN = r"^[A-Z][A-Z0-9-]{2,31}$"
VERSION_PATTERN = r"^\d{1,4}\.\d{1,4}\.\d{1,4}$"
CONN_ID_PATTERN = r"^[A-Za-z0-9_]{1,64}$"
PRODUCT_PATTERN = r"^[a-z][a-z0-9-]{1,62}$"
SLUG_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
ABSOLUTE_PATH_PATTERN = r"^/[A-Za-z0-9._/-]{0,4095}$"
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
HOST_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"
EMAIL_PATTERN = (
    r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}$"
)
PROGRAM_PATTERN = r"^[A-Za-z0-9_./+-]{1,255}$"
ARGUMENT_PATTERN = r"^[A-Za-z0-9_./:=@%+,-][A-Za-z0-9 _./:=@%+,-]{0,1023}$"
TIMEZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+/-]{0,63}$"
LINE_PATTERN = r"^[^\x00-\x1f\x7f]{1,500}$"

SAFE_KINDS: dict[str, tuple[str, str]] = {
    # kind: (pattern, what a valid value looks like -- shown in error messages)
    "customer id": (CUSTOMER_ID_PATTERN, "2-40 lower-case letters, digits or '_', starting with a letter"),
    "case id": (CASE_ID_PATTERN, "3-32 upper-case letters, digits or '-', starting with a letter"),
    "version": (VERSION_PATTERN, "major.minor.patch numbers such as 10.2.0"),
    "connection id": (CONN_ID_PATTERN, "1-64 letters, digits or '_'"),
    "product": (PRODUCT_PATTERN, "2-63 lower-case letters, digits or '-', starting with a letter"),
    "id": (SLUG_PATTERN, "1-63 lower-case letters, digits or '_', starting with a letter"),
    "absolute path": (ABSOLUTE_PATH_PATTERN, "an absolute path of letters, digits, '.', '_', '-' and '/'"),
    "user name": (USERNAME_PATTERN, "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"),
    "host": (HOST_PATTERN, "a host name or IPv4 address (letters, digits, '.', '-')"),
    "e-mail address": (EMAIL_PATTERN, "name@domain.tld without spaces, quotes or angle brackets"),
    "program": (PROGRAM_PATTERN, "a program name or path of letters, digits, '.', '_', '+', '-' and '/'"),
    "argument": (
        ARGUMENT_PATTERN,
        "letters, digits, inner spaces and . _ / : = @ % + , - only (no quotes, $, ;, |, &, <, >, "
        "backticks or newlines)",
    ),
    "time zone": (TIMEZONE_PATTERN, "an IANA time zone name such as Europe/Berlin"),
    "line": (LINE_PATTERN, "1-500 characters on one line (no newlines or control characters)"),
}
"""Every kind of checked string: its pattern and a description of valid values.

Values from configs and trigger forms reach SSH command lines (``program``, ``argument``, paths), file and
database names (ids, versions) and mail headers (e-mail addresses, ``line``). The patterns admit no shell
metacharacter: no spaces (except inside arguments, which are always quoted too), quotes, ``;``, ``$``,
backticks or newlines.
"""


class UnsafeValueError(ValueError):
    """A value does not match the strict pattern required before it may reach a shell."""


def require(kind: str, value: object) -> str:
    """Return ``value`` if it is a valid ``kind`` (a key of :data:`SAFE_KINDS`), else raise.

    For code outside pydantic models (trigger-form values, CLI arguments) that must re-check a value
    right before it goes into a command line, a file name or SQL.
    """
    problem = _violation(kind, value)
    if problem is not None:
        raise UnsafeValueError(f"{value!r} is not a valid {kind}: {problem}")
    return value  # type: ignore[return-value]  # _violation checked it is a str


def _violation(kind: str, value: object) -> str | None:
    pattern, looks_like = SAFE_KINDS[kind]
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        return f"use {looks_like}"
    if kind == "absolute path" and ".." in PurePosixPath(value).parts:
        return "it must not contain a '..' segment"
    return None


def is_safe(kind: str, value: object) -> bool:
    """Whether ``value`` passes :func:`require` for ``kind``."""
    try:
        require(kind, value)
    except UnsafeValueError:
        return False
    return True


def parse_version(version: str) -> tuple[int, int, int]:
    """``"10.2.0"`` -> ``(10, 2, 0)`` for numeric comparison (``"10.10.0" > "10.9.0"``)."""
    require("version", version)
    major, minor, patch = (int(part) for part in version.split("."))
    return major, minor, patch


# --- pydantic field types ---------------------------------------------------------------------


@dataclass(frozen=True)
class SafeStr:
    """``Annotated[str, SafeStr("version")]``: a strict string checked with :func:`require`.

    Its JSON schema carries the pattern, so trigger forms built from it reject the same values.
    """

    kind: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, core_schema.str_schema(strict=True))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        pattern, looks_like = SAFE_KINDS[self.kind]
        return {"type": "string", "pattern": pattern, "description": looks_like}

    def _check(self, value: str) -> str:
        problem = _violation(self.kind, value)
        if problem is not None:
            raise PydanticCustomError(
                "unsafe_value", "not a valid {kind}: {problem}", {"kind": self.kind, "problem": problem}
            )
        return value


CustomerId = Annotated[str, SafeStr("customer id")]
CaseId = Annotated[str, SafeStr("case id")]
Version = Annotated[str, SafeStr("version")]
ConnId = Annotated[str, SafeStr("connection id")]
Product = Annotated[str, SafeStr("product")]
Slug = Annotated[str, SafeStr("id")]
Username = Annotated[str, SafeStr("user name")]
Host = Annotated[str, SafeStr("host")]
Email = Annotated[str, SafeStr("e-mail address")]
Program = Annotated[str, SafeStr("program")]
Argument = Annotated[str, SafeStr("argument")]
TimezoneName = Annotated[str, SafeStr("time zone")]
Line = Annotated[str, SafeStr("line")]
AbsolutePath = Annotated[str, SafeStr("absolute path")]


# --- error reporting --------------------------------------------------------------------------


def field_error(path: str, message: str, **context: Any) -> PydanticCustomError:
    """An error raised by a model validator about one of the model's own fields.

    ``path`` is relative to the model (``"ideal_start"``, ``"dev.install_path"``); :func:`format_errors`
    appends it to the model's location so messages point at the field, not at the model.
    """
    return PydanticCustomError("field_error", message, {"path": path, **context})


def format_loc(loc: Sequence[str | int]) -> str:
    """``("stages", 2, "after", 0)`` -> ``"stages[2].after[0]"``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def format_errors(error: ValidationError, source: str, union_tags: Iterable[str] = ()) -> list[str]:
    """Render every error as ``"<source>: <field.path>: <message>"`` with the offending input shown.

    ``union_tags`` are the tags of discriminated unions (e.g. test case kinds); pydantic puts them in the
    location after the list index, but they are not fields of the file. A "too short" error on a list
    is left out when an item of that list has its own error (pydantic counts only the valid items).
    """
    details = error.errors(include_url=False)
    locs = [_file_loc(detail["loc"], set(union_tags)) for detail in details]
    lines = []
    for detail, loc in zip(details, locs, strict=True):
        context = detail.get("ctx") or {}
        kind = detail["type"]
        if kind == "too_short" and any(len(other) > len(loc) and other[: len(loc)] == loc for other in locs):
            continue
        if kind == "field_errors":
            for path, message in context["problems"]:
                lines.append(f"{source}: {format_loc([*loc, *_split_path(path)])}: {message}")
            continue
        where = list(loc)
        if kind == "field_error" and context.get("path"):
            where.extend(_split_path(context["path"]))
        if kind == "union_tag_invalid":
            where.append(context["discriminator"].strip("'"))
        lines.append(f"{source}: {format_loc(where) or '(top level)'}: {_message(detail)}")
    return lines


def _file_loc(loc: Sequence[str | int], union_tags: set[str]) -> list[str | int]:
    kept: list[str | int] = []
    for part in loc:
        if part == "[key]" or (part in union_tags and kept and isinstance(kept[-1], int)):
            continue
        kept.append(part)
    return kept


def _message(detail: Any) -> str:
    kind, context = detail["type"], detail.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown field; check its spelling or remove it"
    if kind == "missing":
        return "required field is missing"
    if kind == "too_short":
        minimum = context.get("min_length", 1)
        return "must not be empty" if minimum == 1 else f"needs at least {minimum} items"
    if kind == "union_tag_invalid":
        return f"must be one of {context['expected_tags']} (got {context['tag']!r})"
    message = detail["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    is_key = "[key]" in detail["loc"]  # a mapping key is already in the reported path
    if kind != "field_error" and not is_key and _worth_showing(detail, message):
        message += f" (got {detail['input']!r})"
    return message


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for segment in path.split("."):
        name, *indexes = segment.replace("]", "").split("[")
        if name:
            parts.append(name)
        parts.extend(int(index) for index in indexes)
    return parts


def _worth_showing(detail: Any, message: str) -> bool:
    """Show scalar inputs, unless the message already quotes them."""
    value = detail.get("input")
    if isinstance(value, bool) or not (isinstance(value, str | int | float) or value is None):
        return False
    if isinstance(value, str) and value and value in message:
        return False
    return repr(value) not in message


def field_errors(problems: Sequence[tuple[str, str]]) -> PydanticCustomError:
    """Several :func:`field_error` problems found by one model validator, reported one per line."""
    if len(problems) == 1:
        return field_error(*problems[0])
    summary = "; ".join(f"{path}: {message}" for path, message in problems)
    return PydanticCustomError("field_errors", summary, {"problems": [list(p) for p in problems]})
