r"""One strict vocabulary for every value that comes from a customer config or a trigger form.

Values from customer configs and trigger forms end up in SSH command lines, file names, database
names, mail headers and task logs. Rather than trusting each caller to quote, a value is accepted only
if it is one of the kinds of :data:`SAFE_KINDS` (or a :class:`NumberRange`), each defined once, here,
and checked alike in the three places a value enters:

* the customer config: pydantic models use :class:`SafeStr` / :class:`NumberRange`, so the lint command
  ``python -m managed_upgrade.config validate`` refuses what a run would refuse;
* the trigger form: its JSON schema is :func:`json_schema` / :meth:`NumberRange.json_schema`, which
  Airflow validates with the Python ``jsonschema`` library at trigger time (``pattern`` is a
  ``re.search``), and which a browser may read with JavaScript regexes;
* the run's first task: :func:`managed_upgrade.config.run_settings.settings_from_conf` calls
  :func:`problem` and :meth:`NumberRange.problem`.

The vocabulary:

* identifiers, versions, paths, hosts, e-mail addresses, programs, arguments and dates are ASCII only,
  from character classes that cannot carry shell metacharacters (no quotes, ``;``, ``$``, backticks,
  control characters or newlines), and bounded in length;
* free text -- ``line`` (names, reasons, titles) and ``text`` (multi-line answers) -- may be in any
  script of the Basic Multilingual Plane, but holds no control character (C0, DEL, C1), no invisible
  formatting character (bidi overrides and isolates, zero-width characters, BOM), no line or paragraph
  separator, no surrogate, no private-use or unassigned code point (:data:`REFUSED_IN_FREE_TEXT`);
  only ``text`` allows newlines and tabs; both are bounded in length;
* numbers are real ints or floats within bounds: never booleans, NaN, infinities or text.

Every pattern is a plain string that Python ``re`` (``search`` or ``fullmatch``, with or without
``re.ASCII``) and JavaScript read alike: ``[0-9]`` rather than ``\d`` (Python's ``\d`` also takes
full-width and Arabic-Indic digits), ``\uXXXX`` escapes, and ``$(?!\n)`` at the end, because Python's
``$`` also matches before a final newline (``"1.0.0\n"`` would pass ``^...$`` under ``re.search``).

Also home of the small helpers that turn pydantic errors into "<file>: <field.path>: <message>" lines.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import PurePosixPath
from typing import Annotated, Any, NamedTuple

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, ErrorDetails, PydanticCustomError, core_schema

# --- patterns (anchored; always matched whole) ---------------------------------------------------


def _whole(body: str) -> str:
    r"""``^body$`` meaning "the whole text" in Python (search and fullmatch) and JavaScript alike."""
    return "^" + body + r"$(?!\n)"


REFUSED_IN_FREE_TEXT = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Unicode categories never accepted in free text: control characters (C0, DEL, C1), invisible
formatting (bidi overrides and isolates, zero-width characters, BOM), surrogates, private use,
unassigned code points, and the line and paragraph separators U+2028/U+2029."""


def _free_text_class() -> str:
    r"""Every code point of the Basic Multilingual Plane outside :data:`REFUSED_IN_FREE_TEXT`, as the
    ``\uXXXX-\uXXXX`` ranges of one character class.

    The BMP only, so the class means the same in Python and in JavaScript with or without the ``u``
    flag; characters beyond it (emoji, for instance) are refused everywhere alike.
    """
    ranges: list[tuple[int, int]] = []
    start: int | None = None
    for code in range(0x10000):
        allowed = unicodedata.category(chr(code)) not in REFUSED_IN_FREE_TEXT
        if allowed and start is None:
            start = code
        elif not allowed and start is not None:
            ranges.append((start, code - 1))
            start = None
    if start is not None:
        ranges.append((start, 0xFFFF))
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)


_FREE_TEXT = _free_text_class()
_SPACE = r"[\u0020\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]"

CUSTOMER_ID_PATTERN = _whole(r"[a-z][a-z0-9_]{1,39}")
CASE_ID_PATTERN = _whole(r"[A-Z][A-Z0-9-]{2,31}")
VERSION_PATTERN = _whole(r"[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}")
CONN_ID_PATTERN = _whole(r"[A-Za-z0-9_]{1,64}")
PRODUCT_PATTERN = _whole(r"[a-z][a-z0-9-]{1,62}")
SLUG_PATTERN = _whole(r"[a-z][a-z0-9_]{0,62}")
ABSOLUTE_PATH_PATTERN = _whole(r"/[A-Za-z0-9._/-]{0,4095}")
QUEUE_PATTERN = _whole(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
USERNAME_PATTERN = _whole(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
HOST_PATTERN = _whole(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
EMAIL_PATTERN = _whole(
    r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}"
)
PROGRAM_PATTERN = _whole(r"[A-Za-z0-9_./+-]{1,255}")
ARGUMENT_PATTERN = _whole(r"[A-Za-z0-9_./:=@%+,-][A-Za-z0-9 _./:=@%+,-]{0,1023}")
TIMEZONE_PATTERN = _whole(r"[A-Za-z][A-Za-z0-9_+/-]{0,63}")
DATE_PATTERN = _whole(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
TIME_OF_DAY_PATTERN = _whole(r"(?:(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00)")
LINE_PATTERN = _whole(f"(?!{_SPACE})[{_FREE_TEXT}]{{1,500}}")
TEXT_PATTERN = _whole(f"[\\t\\n{_FREE_TEXT}]{{0,10000}}")


class Kind(NamedTuple):
    """One kind of checked string."""

    pattern: str
    looks_like: str
    """What a valid value looks like (shown in error messages)."""
    max_length: int
    """Checked before the pattern (and given to JSON schemas as ``maxLength``)."""
    ascii_only: bool = True


_FREE_TEXT_RULE = "no control or invisible formatting characters, no emoji"

SAFE_KINDS: dict[str, Kind] = {
    "customer id": Kind(
        CUSTOMER_ID_PATTERN, "2-40 lower-case letters, digits or '_', starting with a letter", 40
    ),
    "case id": Kind(CASE_ID_PATTERN, "3-32 upper-case letters, digits or '-', starting with a letter", 32),
    "version": Kind(VERSION_PATTERN, "major.minor.patch numbers such as 10.2.0", 14),
    "connection id": Kind(CONN_ID_PATTERN, "1-64 letters, digits or '_'", 64),
    "product": Kind(PRODUCT_PATTERN, "2-63 lower-case letters, digits or '-', starting with a letter", 63),
    "id": Kind(SLUG_PATTERN, "1-63 lower-case letters, digits or '_', starting with a letter", 63),
    "absolute path": Kind(
        ABSOLUTE_PATH_PATTERN, "an absolute path of letters, digits, '.', '_', '-' and '/'", 4096
    ),
    "user name": Kind(
        USERNAME_PATTERN, "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit", 64
    ),
    "queue": Kind(
        QUEUE_PATTERN, "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit", 64
    ),
    "host": Kind(HOST_PATTERN, "a host name or IPv4 address (letters, digits, '.', '-')", 253),
    "e-mail address": Kind(EMAIL_PATTERN, "name@domain.tld without spaces, quotes or angle brackets", 254),
    "program": Kind(
        PROGRAM_PATTERN, "a program name or path of letters, digits, '.', '_', '+', '-' and '/'", 255
    ),
    "argument": Kind(
        ARGUMENT_PATTERN,
        "letters, digits, inner spaces and . _ / : = @ % + , - only (no quotes, $, ;, |, &, <, >, "
        "backticks or newlines)",
        1024,
    ),
    "time zone": Kind(TIMEZONE_PATTERN, "an IANA time zone name such as Europe/Berlin", 64),
    "date": Kind(DATE_PATTERN, "a date written YYYY-MM-DD", 10),
    "time of day": Kind(TIME_OF_DAY_PATTERN, "a time of day written HH:MM, 00:00 to 24:00", 5),
    "line": Kind(
        LINE_PATTERN,
        "1-500 characters on one line, not starting with a space (no newlines, control or invisible "
        "formatting characters, no emoji)",
        500,
        ascii_only=False,
    ),
    "text": Kind(
        TEXT_PATTERN,
        f"at most 10000 characters; newlines and tabs are fine, but {_FREE_TEXT_RULE}",
        10_000,
        ascii_only=False,
    ),
}
"""Every kind of checked string: its pattern, a description of valid values and its length bound.

Values from configs and trigger forms reach SSH command lines (``program``, ``argument``, paths), file and
database names (ids, versions) and mail headers (e-mail addresses, ``line``). The ASCII patterns admit no
shell metacharacter: no spaces (except inside arguments, which are always quoted too), quotes, ``;``,
``$``, backticks or newlines.
"""

_COMPILED = {kind: re.compile(spec.pattern, re.ASCII) for kind, spec in SAFE_KINDS.items()}
_FREE_TEXT_CHAR = re.compile(f"[{_FREE_TEXT}]", re.ASCII)
_CONTROL_NAMES = {
    "\x00": "NUL",
    "\t": "TAB",
    "\n": "LINE FEED",
    "\r": "CARRIAGE RETURN",
    "\x1b": "ESCAPE",
    "\x7f": "DELETE",
    "\x85": "NEXT LINE",
}
_CATEGORY_NAMES = {
    "Cc": "a control character",
    "Cf": "an invisible formatting character",
    "Cs": "a lone surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


class UnsafeValueError(ValueError):
    """A value does not match the strict pattern required before it may reach a shell."""


def require(kind: str, value: object) -> str:
    """Return ``value`` if it is a valid ``kind`` (a key of :data:`SAFE_KINDS`), else raise.

    For code outside pydantic models (trigger-form values, CLI arguments) that must re-check a value
    right before it goes into a command line, a file name or SQL.
    """
    violation = _violation(kind, value)
    if violation is not None:
        raise UnsafeValueError(f"{shown(value)} is not a valid {kind}: {violation}")
    return value  # type: ignore[return-value]  # _violation checked it is a str


def problem(kind: str, value: object) -> str | None:
    """``"not a valid <kind>: <why>"`` if ``value`` is not a valid ``kind``, else ``None``.

    The same words the config's errors use, so the first task and the lint command say the same thing.
    """
    violation = _violation(kind, value)
    return None if violation is None else f"not a valid {kind}: {violation}"


def _violation(kind: str, value: object) -> str | None:
    spec = SAFE_KINDS[kind]
    if not isinstance(value, str):
        return f"use {spec.looks_like}"
    if len(value) > spec.max_length:
        return f"{len(value)} characters, more than the {spec.max_length} allowed"
    if not _COMPILED[kind].search(value):
        odd = _odd_character(value, kind)
        return f"use {spec.looks_like}" + (f"; it contains {odd}" if odd else "")
    if kind == "absolute path" and ".." in PurePosixPath(value).parts:
        return "it must not contain a '..' segment"
    if kind == "date":
        try:
            date.fromisoformat(value)
        except ValueError:
            return "no such day in the calendar"
    return None


def _odd_character(value: str, kind: str) -> str | None:
    """The first character that no value of ``kind`` may hold, named (``U+FF11 FULLWIDTH DIGIT ONE, ...``)."""
    spec = SAFE_KINDS[kind]
    for char in value:
        code = ord(char)
        if spec.ascii_only:
            if code < 0x20 or code == 0x7F:
                why = "a control character"
            elif code > 0x7F:
                why = "a non-ASCII character"
            else:
                continue
        elif (kind == "text" and char in "\t\n") or _FREE_TEXT_CHAR.match(char):
            continue
        elif code > 0xFFFF:
            why = "a character beyond the Basic Multilingual Plane (such as an emoji)"
        else:
            why = _CATEGORY_NAMES.get(unicodedata.category(char), "a character not allowed here")
        name = _CONTROL_NAMES.get(char) or unicodedata.name(char, "")
        return f"U+{code:04X}{' ' + name if name else ''}, {why}"
    return None


def is_safe(kind: str, value: object) -> bool:
    """Whether ``value`` passes :func:`require` for ``kind``."""
    return _violation(kind, value) is None


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON schema of a ``kind`` string: the same pattern and length bound the checks above use."""
    spec = SAFE_KINDS[kind]
    return {
        "type": "string",
        "pattern": spec.pattern,
        "maxLength": spec.max_length,
        "description": spec.looks_like,
    }


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` for a message, a long value cut to ``limit`` characters ending in an ellipsis (as
    the config loader cuts the values it quotes), so a megabyte of input is never echoed back."""
    if isinstance(value, str):
        return repr(value if len(value) <= limit else value[: limit - 1] + "\u2026")
    try:
        text = repr(value)
    except ValueError:  # an int beyond the interpreter's digit limit
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def describe(field: str, value: object, problem_text: str) -> str:
    """``"<field>: <problem> (got <value>)"``, the value shortened: the shape of every refusal."""
    return f"{field}: {problem_text} (got {shown(value)})"


def parse_version(version: str) -> tuple[int, int, int]:
    """``"10.2.0"`` -> ``(10, 2, 0)`` for numeric comparison (``"10.10.0" > "10.9.0"``)."""
    require("version", version)
    major, minor, patch = (int(part) for part in version.split("."))
    return major, minor, patch


# --- numbers ----------------------------------------------------------------------------------


def _number_text(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else repr(number)


@dataclass(frozen=True)
class NumberRange:
    """A bounded number: ``Annotated[int, NumberRange(1, 100, integer=True)]`` in a model; elsewhere
    :meth:`problem` checks a value and :meth:`json_schema` describes the range to a form.

    Booleans, NaN, infinities, text and (for ``integer``) floats are refused; ints are compared as ints,
    so a 400-digit number is refused with a message, not an ``OverflowError``.
    """

    minimum: int | float
    maximum: int | float
    exclusive_minimum: bool = False
    integer: bool = False

    @property
    def looks_like(self) -> str:
        noun = "a whole number" if self.integer else "a number"
        low = "above" if self.exclusive_minimum else "from"
        return f"{noun} {low} {_number_text(self.minimum)} to {_number_text(self.maximum)}"

    def problem(self, value: object) -> str | None:
        """``"must be <range>"`` (with what was wrong) if ``value`` is not in range, else ``None``."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be {self.looks_like}, not {_type_name(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be {self.looks_like}, not {value!r}"
        if self.integer and isinstance(value, float):
            return f"must be {self.looks_like}, not a fraction"
        too_low = value <= self.minimum if self.exclusive_minimum else value < self.minimum
        if too_low or value > self.maximum:
            return f"must be {self.looks_like}"
        return None

    def json_schema(self, *, nullable: bool = False) -> dict[str, Any]:
        """The range for a form; NaN, which passes every comparison keyword, fails the ``not`` clause."""
        kind = "integer" if self.integer else "number"
        lower = "exclusiveMinimum" if self.exclusive_minimum else "minimum"
        below = "maximum" if self.exclusive_minimum else "exclusiveMaximum"
        return {
            "type": ["null", kind] if nullable else kind,
            lower: self.minimum,
            "maximum": self.maximum,
            "not": {"type": "number", below: self.minimum},
            "description": self.looks_like,
        }

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(self._check)

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return self.json_schema()

    def _check(self, value: Any) -> Any:
        found = self.problem(value)
        if found is not None:
            raise PydanticCustomError("number_out_of_range", found)
        return value


def _type_name(value: object) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return "text"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


# --- pydantic field types ---------------------------------------------------------------------


@dataclass(frozen=True)
class SafeStr:
    """``Annotated[str, SafeStr("version")]``: a strict string checked with :func:`require`.

    Its JSON schema carries the pattern and length bound, so trigger forms built from it reject the
    same values.
    """

    kind: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, core_schema.str_schema(strict=True))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return json_schema(self.kind)

    def _check(self, value: str) -> str:
        violation = _violation(self.kind, value)
        if violation is not None:
            raise PydanticCustomError(
                "unsafe_value", "not a valid {kind}: {problem}", {"kind": self.kind, "problem": violation}
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
QueueName = Annotated[str, SafeStr("queue")]
Email = Annotated[str, SafeStr("e-mail address")]
Program = Annotated[str, SafeStr("program")]
Argument = Annotated[str, SafeStr("argument")]
TimezoneName = Annotated[str, SafeStr("time zone")]
TimeOfDay = Annotated[str, SafeStr("time of day")]
"""A local wall-clock time ``HH:MM``; ``24:00`` is the end of the day (upgrade windows)."""
Line = Annotated[str, SafeStr("line")]
Text = Annotated[str, SafeStr("text")]
"""Multi-line free text (questionnaire answers, queries, expected output): newlines and tabs allowed."""
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


def _message(detail: ErrorDetails) -> str:
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


def _worth_showing(detail: ErrorDetails, message: str) -> bool:
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
