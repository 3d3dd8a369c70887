"""Refuses customer SQL test queries that are anything but one plain SELECT, before they reach a database.

Customer test cases carry SQL text that runs against each environment's configuration database. The
caller runs it inside a ``READ ONLY`` transaction with a statement timeout; that is the enforcement.
This check comes first and fails fast with a message naming the problem: more than one statement, a
statement that is not ``SELECT``/``WITH``, a data-modifying CTE, ``SELECT INTO``, row locks, or a call
to one of the few functions that act outside the transaction (``set_config``, ``pg_terminate_backend``
and the like).

The lexer follows PostgreSQL's rules for comments (nested ``/* */`` and ``--``), quoted identifiers,
``E''`` strings and dollar quoting. Where PostgreSQL's reading depends on a server setting (a backslash
in a plain ``'...'`` literal under ``standard_conforming_strings``) the query is rejected rather than
guessed at. Run accepted queries without parameters so nothing rewrites ``%`` in them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ALLOWED_FIRST_WORDS = frozenset({"select", "with"})

FORBIDDEN_WORDS: dict[str, str] = {
    "insert": "data-modifying statements are not allowed",
    "update": "data-modifying statements and FOR UPDATE row locks are not allowed",
    "delete": "data-modifying statements are not allowed",
    "merge": "data-modifying statements are not allowed",
    "into": "SELECT INTO would create a table",
    "share": "FOR SHARE row locks are not allowed",
}
"""Words that never belong in a read-only query, with the reason shown to the author."""

FORBIDDEN_FUNCTIONS = frozenset(
    {
        "set_config",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_promote",
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "lo_import",
        "lo_export",
        "lo_unlink",
        "dblink",
        "dblink_exec",
        "query_to_xml",
        "query_to_xml_and_xmlschema",
        "query_to_xmlschema",
        "cursor_to_xml",
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
    }
)
"""Functions with effects a READ ONLY transaction does not stop, or that run SQL given as text."""

_WHITESPACE = frozenset(" \t\n\r\f\v")
"""PostgreSQL's whitespace; other Unicode spaces are identifier characters to it, and so to us."""
_LINE_END = re.compile(r"[\n\r]")
_WORD = re.compile(r"[A-Za-z0-9_$\x80-\U0010ffff]+")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")


class UnsafeQueryError(ValueError):
    """A test query is not a single read-only SELECT; the message says why."""


@dataclass(frozen=True)
class _Token:
    kind: Literal["word", "quoted_identifier", "string", "semicolon", "symbol"]
    text: str


def require_single_select(sql: str) -> str:
    """Return ``sql`` unchanged if it is exactly one read-only ``SELECT``/``WITH`` statement, else raise.

    One trailing ``;`` (and trailing comments) are accepted.
    """
    if not isinstance(sql, str):
        raise UnsafeQueryError(f"query must be text, got {type(sql).__name__}")
    if "\x00" in sql:
        raise UnsafeQueryError("query contains a NUL character")
    tokens = _tokenize(sql)
    statements = _split_statements(tokens)
    if not statements:
        raise UnsafeQueryError("query is empty")
    if len(statements) > 1:
        raise UnsafeQueryError(
            f"query holds {len(statements)} statements; a test query must be a single SELECT"
        )
    _check_statement(statements[0])
    return sql


def is_single_select(sql: str) -> bool:
    """Whether :func:`require_single_select` accepts ``sql``."""
    try:
        require_single_select(sql)
    except UnsafeQueryError:
        return False
    return True


def _check_statement(tokens: list[_Token]) -> None:
    first = next((token for token in tokens if token.kind != "symbol" or token.text != "("), None)
    if first is None or first.kind != "word" or first.text.lower() not in ALLOWED_FIRST_WORDS:
        shown = first.text if first is not None else tokens[0].text
        raise UnsafeQueryError(f"query must start with SELECT or WITH, not {shown!r}")
    for token in tokens:
        name = token.text.lower()
        if token.kind == "word" and name in FORBIDDEN_WORDS:
            raise UnsafeQueryError(f"{token.text.upper()} found: {FORBIDDEN_WORDS[name]}")
        if token.kind in ("word", "quoted_identifier") and name in FORBIDDEN_FUNCTIONS:
            raise UnsafeQueryError(f"{token.text} is not allowed in a test query (it acts outside the query)")


def _split_statements(tokens: list[_Token]) -> list[list[_Token]]:
    statements: list[list[_Token]] = [[]]
    for token in tokens:
        if token.kind == "semicolon":
            statements.append([])
        else:
            statements[-1].append(token)
    return [statement for statement in statements if statement]


def _tokenize(sql: str) -> list[_Token]:  # noqa: PLR0912  one branch per lexical form reads best
    tokens: list[_Token] = []
    position, length = 0, len(sql)
    while position < length:
        char = sql[position]
        if char in _WHITESPACE:
            position += 1
        elif sql.startswith("--", position):
            line_end = _LINE_END.search(sql, position)
            position = length if line_end is None else line_end.end()
        elif sql.startswith("/*", position):
            position = _skip_block_comment(sql, position)
        elif char == "'":
            is_escape_string = bool(tokens) and tokens[-1].kind == "word" and tokens[-1].text in ("e", "E")
            if is_escape_string and _ends_at(sql, position, tokens[-1]):
                tokens.pop()
            else:
                is_escape_string = False
            position = _read_string(sql, position, tokens, backslash_escapes=is_escape_string)
        elif char == '"':
            end = _find_closing(sql, position + 1, '"', "quoted identifier")
            tokens.append(_Token("quoted_identifier", sql[position + 1 : end].replace('""', '"')))
            position = end + 1
        elif char == "$" and (tag := _DOLLAR_TAG.match(sql, position)):
            end = sql.find(tag.group(), tag.end())
            if end < 0:
                raise UnsafeQueryError(f"unterminated dollar-quoted string starting {tag.group()}")
            tokens.append(_Token("string", sql[tag.end() : end]))
            position = end + len(tag.group())
        elif word := _WORD.match(sql, position):
            tokens.append(_Token("word", word.group()))
            position = word.end()
        elif char == ";":
            tokens.append(_Token("semicolon", char))
            position += 1
        else:
            tokens.append(_Token("symbol", char))
            position += 1
    return tokens


def _ends_at(sql: str, position: int, word: _Token) -> bool:
    """Whether ``word`` is the text right before ``position`` (``E'...'`` has no space inside)."""
    return sql[position - len(word.text) : position] == word.text


def _skip_block_comment(sql: str, position: int) -> int:
    depth, position = 1, position + 2
    while depth:
        opening, closing = sql.find("/*", position), sql.find("*/", position)
        if closing < 0:
            raise UnsafeQueryError("unterminated /* comment")
        if 0 <= opening < closing:
            depth, position = depth + 1, opening + 2
        else:
            depth, position = depth - 1, closing + 2
    return position


def _read_string(sql: str, position: int, tokens: list[_Token], *, backslash_escapes: bool) -> int:
    """Append the literal starting at the quote ``position``; return the index after it."""
    index = position + 1
    while True:
        if index >= len(sql):
            raise UnsafeQueryError("unterminated string literal")
        char = sql[index]
        if backslash_escapes and char == "\\":
            index += 2
        elif char == "\\":
            raise UnsafeQueryError(
                "a backslash in a '...' string reads differently depending on standard_conforming_strings;"
                " write E'...' for backslash escapes"
            )
        elif char == "'" and sql.startswith("''", index):
            index += 2
        elif char == "'":
            tokens.append(_Token("string", sql[position + 1 : index]))
            return index + 1
        else:
            index += 1


def _find_closing(sql: str, start: int, quote: str, what: str) -> int:
    index = start
    while True:
        end = sql.find(quote, index)
        if end < 0:
            raise UnsafeQueryError(f"unterminated {what}")
        if sql.startswith(quote * 2, end):
            index = end + 2
            continue
        return end
