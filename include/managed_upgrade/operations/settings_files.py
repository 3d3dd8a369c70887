"""The installation's settings files, read and edited as the CRM reads them (``settings/*.properties``).

Shared by the settings snapshot (capture and re-apply on a host) and the release defaults (the same
files inside a release's payload), so both read them alike: in the Java ``.properties`` format,
parsed by ``jproperties`` (``=``, ``:`` or whitespace between key and value, ``#`` and ``!``
comments, ``\\`` escapes including ``\\uXXXX``, lines continued by a trailing ``\\``; the last of a
repeated key wins).

Editing keeps the file as its author wrote it. The text is cut into logical lines (a key-value line
with its continuation lines, a comment line, a blank line) and only the lines of a changed key are
rewritten: their indentation, key and separator as written, then the new value escaped as Java's
``Properties.store`` escapes it (ASCII only, so the file reads the same as UTF-8 or ISO-8859-1).
Comments, blank lines, order, line endings and every other line stay byte for byte. The library's
own writer is not used for that: it drops comments and rewrites every line.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import jproperties

from managed_upgrade.errors import OperationError

SETTINGS_DIR = "settings"
SETTINGS_SUFFIX = ".properties"
APPENDED_COMMENT = "# re-applied by the managed upgrade (not present in this release's file)"
"""Written above the keys :func:`set_properties` had to add to the end of a file."""

_NATURAL_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?")
_LINE_END = re.compile(r"\r\n|\r|\n")
_ENDING = re.compile(r"(?:\r\n|\r|\n)\Z")
_WHITESPACE = " \t\f"  # what the format skips around keys and separators (line ends aside)
_SEPARATORS = "=:"
_ESCAPED_BACKSLASH_OR_BAD_UNICODE = re.compile(r"\\(?:\\|u(?![0-9A-Fa-f]{4}))")
"""Finds a ``\\u`` not followed by four hex digits (the library would take ``\\u00 x`` as NUL)."""


class PropertiesError(OperationError):
    """A settings file is not valid ``.properties`` text (a malformed ``\\uXXXX`` escape)."""


@dataclass(frozen=True)
class _Line:
    """One logical line: its natural lines (each with its line end), and the key it sets, if any."""

    text: str
    start: int  # 1-based number of its first natural line, for error messages
    key: str | None = None
    value: str = ""


def _odd_backslashes(text: str) -> bool:
    return (len(text) - len(text.rstrip("\\"))) % 2 == 1


def _natural_lines(text: str) -> Iterator[str]:
    """``text`` cut after each line end (``\\r\\n``, ``\\r`` or ``\\n``, as Java cuts it), ends kept."""
    for match in _NATURAL_LINE.finditer(text):
        if match.group():
            yield match.group()


def _parse_entry(naturals: list[str], start: int) -> tuple[str, str]:
    """Key and value of the key-value line made of ``naturals``, unescaped by the library.

    The natural lines are joined first, as Java joins them (the escaping backslash, the line end
    and the next line's indentation dropped), so the library sees one line.
    """
    bodies = [line.rstrip("\r\n") for line in naturals]
    parts = [body[:-1] for body in bodies[:-1]] + bodies[-1:]  # each escaping backslash dropped
    joined = parts[0] + "".join(part.lstrip(_WHITESPACE) for part in parts[1:])
    where = f"settings line {start} is not valid .properties text"
    for found in _ESCAPED_BACKSLASH_OR_BAD_UNICODE.finditer(joined):
        if found.group() != "\\\\":
            raise PropertiesError(f"{where}: malformed \\uXXXX escape {joined[found.start() :][:6]!r}")
    properties = jproperties.Properties()
    try:
        properties.load(joined)
    except jproperties.ParseError as exc:
        raise PropertiesError(f"{where}: {exc.message}") from exc
    ((key, value),) = properties.properties.items()  # a key-value line always yields exactly one
    return str(key), str(value)


def _logical_lines(text: str) -> Iterator[_Line]:
    """``text`` as logical lines, cut where Java's ``Properties.load`` cuts it; joined, they give
    ``text`` back unchanged.

    A line is continued when it ends in an unpaired ``\\``. A line that holds nothing but that
    backslash starts nothing: the line after it is read as a new line (a comment, a blank line or a
    key). Only as the text's last line, ended by ``\\n``, ``\\r`` or nothing, does it set the empty
    key (a quirk of Java's reader, kept so that both read the same).
    """
    naturals = list(_natural_lines(text))
    pending: list[str] = []
    start = 0
    for number, natural in enumerate(naturals, start=1):
        body = natural.rstrip("\r\n")
        if pending:
            pending.append(natural)
        else:
            start = number
            content = body.lstrip(_WHITESPACE)
            if not content or content[0] in "#!":  # blank or comment: never continued
                yield _Line(natural, start)
                continue
            if content == "\\" and (number < len(naturals) or natural.endswith("\r\n")):
                yield _Line(natural, start)
                continue
            pending = [natural]
        if body != natural and _odd_backslashes(body):
            continue  # an escaped line end: the next natural line belongs to this one
        yield _Line("".join(pending), start, *_parse_entry(pending, start))
        pending = []
    if pending:  # the text ended right after a continuation
        yield _Line("".join(pending), start, *_parse_entry(pending, start))


def parse_properties(text: str) -> dict[str, str]:
    """The settings of a ``.properties`` text as the CRM reads them, in file order; last one wins.

    Raises :class:`PropertiesError` for text the format rejects (a malformed ``\\uXXXX`` escape).
    """
    values: dict[str, str] = {}
    for line in _logical_lines(text):
        if line.key is not None:
            values[line.key] = line.value
    return values


def _escaped(key: str, value: str) -> tuple[str, str]:
    """``key`` and ``value`` escaped as Java's ``Properties.store`` writes them (pure ASCII)."""

    def stored(properties: jproperties.Properties) -> str:
        out = io.BytesIO()
        properties.store(out, encoding="iso-8859-1", strict=True, timestamp=False)
        return out.getvalue().decode("ascii")

    key_only = jproperties.Properties()
    key_only[key] = ""
    value_only = jproperties.Properties()
    value_only["k"] = value
    return stored(key_only).removesuffix("=\n"), stored(value_only).removeprefix("k=").removesuffix("\n")


def _value_start(first: str) -> tuple[int, bool] | None:
    """Where the value begins in a key-value line's first natural line (line end removed), and whether
    the key is followed by a separator (``=``, ``:`` or whitespace); None if the key itself goes on
    past this natural line."""
    index, end = 0, len(first)
    while index < end and first[index] in _WHITESPACE:
        index += 1
    while index < end and first[index] not in _WHITESPACE + _SEPARATORS:
        index += 2 if first[index] == "\\" else 1
    if index > end:  # the last character was an escaping backslash: an escaped line end
        return None
    separated = index < end
    while index < end and first[index] in _WHITESPACE:
        index += 1
    if index < end and first[index] in _SEPARATORS:
        index += 1
        while index < end and first[index] in _WHITESPACE:
            index += 1
    return index, separated


def _line_end(text: str) -> str:
    found = _LINE_END.search(text)
    return found.group() if found else ""


def _rewritten(line: _Line, value: str) -> str:
    """``line`` with its value replaced; indentation, key and separator kept as written."""
    assert line.key is not None
    key_text, value_text = _escaped(line.key, value)
    first = next(_natural_lines(line.text))
    first_body = first.rstrip("\r\n")
    end = line.text[len(line.text.rstrip("\r\n")) :]
    start = _value_start(first_body)
    if start is None:  # the key is split over natural lines: write it on one
        indent = first_body[: len(first_body) - len(first_body.lstrip(_WHITESPACE))]
        return f"{indent}{key_text}={value_text}{end}"
    index, separated = start
    return f"{first_body[:index]}{'' if separated else '='}{value_text}{end}"


def set_properties(text: str, changes: Mapping[str, str]) -> str:
    """``text`` with the values of ``changes`` set, everything else left byte for byte.

    Each line that sets a changed key gets the new value in place (every such line, should the key
    repeat); a key that already has the value is left alone. Keys the text does not set are
    appended under :data:`APPENDED_COMMENT`, with the text's own line ending.
    """
    lines = list(_logical_lines(text))
    current = {line.key: line.value for line in lines if line.key is not None}
    pieces: list[str] = []
    dangling = False  # the last line written is a key-value line ending in an escaped line end
    for line in lines:
        written = line.text
        key = line.key
        if key is not None and key in changes and changes[key] not in (current[key], line.value):
            written = _rewritten(line, changes[key])
        pieces.append(written)
        dangling = line.key is not None and _odd_backslashes(written.rstrip("\r\n"))
    missing = [key for key in changes if key not in current]
    if not missing:
        return "".join(pieces)
    newline = _line_end(text) or "\n"
    if dangling and lines[-1].text.rstrip("\r\n").lstrip(_WHITESPACE) == "\\":
        pieces[-1] = _rewritten(lines[-1], lines[-1].value)  # the empty key (see above), as "="
        dangling = False
    ending = _ENDING.search(pieces[-1]) if pieces else None
    if pieces and ending is None:
        pieces.append(newline)
    if dangling:  # the next line would continue it: a blank line ends it first
        pieces.append("\r" if ending is not None and ending.group() == "\r" else newline)
    pieces.append(APPENDED_COMMENT + newline)
    for key in missing:
        key_text, value_text = _escaped(key, changes[key])
        pieces.append(f"{key_text}={value_text}{newline}")
    return "".join(pieces)
