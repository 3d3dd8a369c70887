"""Customer test queries, read by PostgreSQL's own parser: one plain SELECT over allowed functions only.

Customer test cases carry SQL text that runs against each environment's configuration database. The
text is parsed with :mod:`pglast` (the parser of the PostgreSQL server itself, as a library), so
comments, quoted and ``U&"..."`` identifiers, ``E''`` and dollar-quoted strings are read exactly as the
server reads them; nothing is guessed from the characters. The parse tree must then be:

- exactly one statement, a ``SELECT`` (also ``VALUES``, ``TABLE``, ``UNION``...), whose ``WITH`` parts are
  SELECTs too (no data-modifying CTE), with no ``INTO`` and no locking clause (``FOR UPDATE``/``SHARE``),
  in any subquery;
- made only of the expression forms listed in :data:`_ALLOWED_NODES` (columns, constants, operators,
  ``CASE``, ``COALESCE``, subqueries, joins...); anything else is refused by name;
- calling only the built-in functions of :data:`ALLOWED_FUNCTIONS` (aggregates, window, string, math,
  date/time, JSON and array functions), unqualified or qualified with ``pg_catalog``: ``dblink*``, file,
  large-object, admin, sequence, lock, sleep and "run this SQL text" functions are not in it;
- casting only to the plain data types of :data:`ALLOWED_TYPES` (no ``regclass``/``regproc`` lookups,
  no user-defined types whose cast functions could do anything) and using only the standard
  operators of :data:`ALLOWED_OPERATORS`.

The check runs when a config is loaded (the lint) and again right before a query runs; the query
then runs as a read-only database role in a ``READ ONLY`` transaction with a statement timeout (see
:mod:`managed_upgrade_airflow.testcase_executors`), so a query that got through here still cannot write.
Run accepted queries without parameters, so nothing rewrites ``%`` in them, and with
``standard_conforming_strings = on`` (the parser's reading of ``'\\'``).

:func:`split_statements` and :func:`leading_keyword` serve fix scripts (any SQL, several statements),
with PostgreSQL's own scanner.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast, parse_sql, split
from pglast.enums import A_Expr_Kind
from pglast.parser import ParseError, scan


class UnsafeQueryError(ValueError):
    """A test query is not a single read-only SELECT over allowed functions; the message says why."""


# --- allow-lists ----------------------------------------------------------------------------------

ALLOWED_FUNCTIONS = frozenset(
    {
        # aggregates
        "count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every", "string_agg", "array_agg",
        "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "bit_and", "bit_or", "bit_xor",
        "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "corr", "covar_pop",
        "covar_samp", "mode", "percentile_cont", "percentile_disc", "any_value",
        # window functions
        "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
        "first_value", "last_value", "nth_value",
        # strings
        "length", "char_length", "character_length", "octet_length", "bit_length", "lower", "upper",
        "initcap", "btrim", "ltrim", "rtrim", "substr", "substring", "position", "strpos", "replace",
        "translate", "left", "right", "lpad", "rpad", "repeat", "reverse", "concat", "concat_ws",
        "split_part", "starts_with", "format", "md5", "ascii", "chr", "overlay", "quote_ident",
        "quote_literal", "quote_nullable", "string_to_array", "array_to_string", "to_char", "to_number",
        "regexp_replace", "regexp_match", "regexp_matches", "regexp_like", "regexp_count", "regexp_substr",
        "regexp_instr", "regexp_split_to_array", "regexp_split_to_table", "similar_to_escape", "normalize",
        "is_normalized", "pg_collation_for",
        # numbers
        "abs", "ceil", "ceiling", "floor", "round", "trunc", "sign", "sqrt", "cbrt", "power", "pow", "exp",
        "ln", "log", "log10", "mod", "div", "pi", "degrees", "radians", "width_bucket", "gcd", "lcm",
        "scale", "num_nulls", "num_nonnulls",
        # dates and times
        "now", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "date_trunc",
        "date_part", "date_bin", "extract", "age", "make_date", "make_time", "make_timestamp",
        "make_timestamptz", "make_interval", "justify_days", "justify_hours", "justify_interval",
        "isfinite", "to_date", "to_timestamp", "timezone", "overlaps",
        # JSON
        "to_json", "to_jsonb", "json_build_object", "jsonb_build_object", "json_build_array",
        "jsonb_build_array", "json_extract_path", "jsonb_extract_path", "json_extract_path_text",
        "jsonb_extract_path_text", "json_array_length", "jsonb_array_length", "json_typeof", "jsonb_typeof",
        "json_each", "jsonb_each", "json_each_text", "jsonb_each_text", "json_object_keys",
        "jsonb_object_keys", "json_array_elements", "jsonb_array_elements", "json_array_elements_text",
        "jsonb_array_elements_text", "jsonb_strip_nulls", "jsonb_pretty",
        # arrays and sets
        "array_length", "array_lower", "array_upper", "array_ndims", "cardinality", "array_position",
        "array_positions", "array_append", "array_prepend", "array_cat", "array_remove", "array_replace",
        "unnest", "generate_series", "generate_subscripts",
        # types
        "pg_typeof",
    }
)  # fmt: skip
"""Built-in functions a test query may call (by name; unqualified or ``pg_catalog.``-qualified)."""

REFUSED_FUNCTION_REASONS: dict[str, str] = {
    "dblink": "opens a second database session outside the read-only transaction",
    "pg_read": "reads files of the database server",
    "pg_ls_": "lists directories of the database server",
    "pg_stat_file": "reads file metadata of the database server",
    "lo_": "works on large objects and server files",
    "set_config": "changes settings (it could turn the read-only transaction off)",
    "pg_sleep": "only waits",
    "pg_terminate_backend": "stops other sessions",
    "pg_cancel_backend": "cancels other sessions' queries",
    "pg_reload_conf": "is a server administration function",
    "pg_rotate_logfile": "is a server administration function",
    "pg_promote": "is a server administration function",
    "pg_switch_wal": "is a server administration function",
    "pg_create_": "is a server administration function",
    "pg_drop_": "is a server administration function",
    "pg_replication_": "is a server administration function",
    "pg_advisory": "takes locks that outlive the query",
    "pg_try_advisory": "takes locks that outlive the query",
    "nextval": "advances a sequence (not undone by a rollback)",
    "setval": "changes a sequence",
    "currval": "reads session state of sequences",
    "txid_": "reads or allocates transaction ids",
    "pg_current_xact_id": "allocates a transaction id",
    "query_to_xml": "runs SQL given as text",
    "query_to_xmlschema": "runs SQL given as text",
    "cursor_to_xml": "reads a cursor",
    "table_to_xml": "dumps whole tables",
    "database_to_xml": "dumps the whole database",
    "schema_to_xml": "dumps whole schemas",
    "current_setting": "reads server settings",
    "pg_notify": "sends notifications to other sessions",
}
"""Why well-known unsafe functions are refused (prefix of the name -> reason), for a clearer message."""

ALLOWED_TYPES = frozenset(
    {
        "bool", "int2", "int4", "int8", "numeric", "float4", "float8", "text", "varchar", "bpchar", "char",
        "name", "date", "time", "timetz", "timestamp", "timestamptz", "interval", "uuid", "json", "jsonb",
        "bytea", "bit", "varbit", "inet", "cidr", "macaddr", "money",
    }
)  # fmt: skip
"""Types a query may cast to (PostgreSQL's internal names: ``integer`` is ``int4``); arrays of them too."""

ALLOWED_OPERATORS = frozenset(
    {
        "=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "^", "|/", "||/", "@", "&", "|",
        "#", "~", "<<", ">>", "||", "~~", "!~~", "~~*", "!~~*", "~*", "!~", "!~*", "->", "->>", "#>",
        "#>>", "@>", "<@", "?", "?|", "?&", "&&", "#-",
    }
)  # fmt: skip
"""Operators a query may use (the standard ones of the built-in types); ``pg_catalog.``-qualified too."""

TABLESAMPLE_METHODS = frozenset({"system", "bernoulli"})

_ALLOWED_NODES: frozenset[type] = frozenset(
    {
        ast.RawStmt, ast.SelectStmt, ast.WithClause, ast.CommonTableExpr, ast.CTESearchClause,
        ast.CTECycleClause, ast.ResTarget, ast.ColumnRef, ast.A_Star, ast.A_Const, ast.String,
        ast.Integer, ast.Float, ast.Boolean, ast.BitString, ast.A_Expr, ast.BoolExpr, ast.NullTest,
        ast.BooleanTest, ast.FuncCall, ast.NamedArgExpr, ast.TypeCast, ast.TypeName, ast.CaseExpr,
        ast.CaseWhen, ast.CoalesceExpr, ast.MinMaxExpr, ast.SQLValueFunction, ast.SubLink, ast.RowExpr,
        ast.A_ArrayExpr, ast.A_Indirection, ast.A_Indices, ast.CollateClause, ast.RangeVar,
        ast.RangeSubselect, ast.RangeFunction, ast.RangeTableSample, ast.JoinExpr, ast.Alias,
        ast.ColumnDef, ast.SortBy, ast.WindowDef, ast.GroupingSet, ast.GroupingFunc,
    }
)  # fmt: skip
"""Parse-tree node types a test query may contain; any other node is refused."""

_NODE_NAMES: dict[str, str] = {
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE",
    "ParamRef": "a parameter ($1)",
    "XmlExpr": "an XML expression",
    "XmlSerialize": "XMLSERIALIZE",
    "RangeTableFunc": "XMLTABLE",
    "CurrentOfExpr": "WHERE CURRENT OF",
    "LockingClause": "FOR UPDATE/FOR SHARE",
}


# --- test queries --------------------------------------------------------------------------------


def require_single_select(sql: str) -> str:
    """Return ``sql`` unchanged if it is one plain ``SELECT`` over allowed functions, else raise.

    :class:`UnsafeQueryError` names the first problem found. A trailing ``;`` and comments are fine.
    """
    if not isinstance(sql, str):
        raise UnsafeQueryError(f"must be text, got {type(sql).__name__}")
    if "\x00" in sql:
        raise UnsafeQueryError("contains a NUL character")
    statements = _parse(sql)
    if not statements:
        raise UnsafeQueryError("is empty")
    if len(statements) > 1:
        raise UnsafeQueryError(f"holds {len(statements)} statements")
    statement = statements[0].stmt
    if not isinstance(statement, ast.SelectStmt):
        raise UnsafeQueryError(f"is {_statement_name(statement)}, not a SELECT")
    for node in _walk(statement):
        _check_node(node)
    return sql


def is_single_select(sql: str) -> bool:
    """Whether :func:`require_single_select` accepts ``sql``."""
    try:
        require_single_select(sql)
    except UnsafeQueryError:
        return False
    return True


def _parse(sql: str) -> tuple[ast.RawStmt, ...]:
    try:
        return parse_sql(sql)
    except ParseError as error:
        raise UnsafeQueryError(f"is not valid SQL: {_parse_message(error)}") from None
    except RecursionError:
        raise UnsafeQueryError("is nested too deeply") from None
    except UnicodeEncodeError as error:  # a lone surrogate (e.g. from a YAML "\\ud800" escape)
        raise UnsafeQueryError(f"is not valid text: {error.reason} at character {error.start + 1}") from None


def _parse_message(error: ParseError) -> str:
    message = str(error.args[0]) if error.args else str(error)
    if len(error.args) > 1 and isinstance(error.args[1], int):
        message += f" (at character {error.args[1] + 1})"
    return message.replace("unterminated quoted string", "unterminated string literal")


def _walk(root: ast.Node) -> Iterator[ast.Node]:
    """Every node under ``root`` (pre-order, iteratively: deep expressions cannot exhaust the stack)."""
    stack: list[Any] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple | list):
            stack.extend(reversed(item))
        elif isinstance(item, ast.Node):
            yield item
            stack.extend(reversed([getattr(item, name) for name in item]))


def _check_node(node: ast.Node) -> None:  # noqa: PLR0912  one branch per checked node type reads best
    if type(node) not in _ALLOWED_NODES:
        raise UnsafeQueryError(f"{_node_name(node)} is not allowed")
    if isinstance(node, ast.SelectStmt):
        if node.intoClause is not None:
            raise UnsafeQueryError("SELECT INTO would create a table")
        if node.lockingClause:
            raise UnsafeQueryError("FOR UPDATE/FOR SHARE row locks are not allowed")
    elif isinstance(node, ast.CommonTableExpr):
        if not isinstance(node.ctequery, ast.SelectStmt):
            raise UnsafeQueryError(
                f"WITH {_short(node.ctename)} AS ({_statement_name(node.ctequery)} ...) modifies data;"
                " WITH parts must be SELECTs"
            )
    elif isinstance(node, ast.FuncCall):
        _check_function(_names(node.funcname))
    elif isinstance(node, ast.TypeName):
        _check_type(node)
    elif isinstance(node, ast.A_Expr):
        if node.kind not in _KEYWORD_EXPRESSIONS:
            _check_operator(_names(node.name))
    elif isinstance(node, ast.SubLink):
        if node.operName:
            _check_operator(_names(node.operName))
    elif isinstance(node, ast.SortBy):
        if node.useOp:
            _check_operator(_names(node.useOp))
    elif isinstance(node, ast.RangeVar):
        if node.relpersistence != "p":
            raise UnsafeQueryError(f"table {_short(node.relname)} must be a plain table reference")
    elif isinstance(node, ast.RangeTableSample):
        method = _names(node.method)
        if len(method) != 1 or method[0] not in TABLESAMPLE_METHODS:
            raise UnsafeQueryError(f"TABLESAMPLE {_dotted(method)} is not allowed; use SYSTEM or BERNOULLI")


_KEYWORD_EXPRESSIONS = frozenset(
    {
        A_Expr_Kind.AEXPR_BETWEEN,
        A_Expr_Kind.AEXPR_NOT_BETWEEN,
        A_Expr_Kind.AEXPR_BETWEEN_SYM,
        A_Expr_Kind.AEXPR_NOT_BETWEEN_SYM,
    }
)
"""A_Expr kinds whose ``name`` is a keyword (``BETWEEN``), not an operator."""


def _names(parts: tuple[Any, ...] | None) -> tuple[str, ...]:
    # A name is never empty in PostgreSQL: no String of a name lacks its text.
    return tuple((part.sval or "") if isinstance(part, ast.String) else str(part) for part in parts or ())


def _unqualified(names: tuple[str, ...], what: str) -> str:
    """The name without a ``pg_catalog.`` qualifier; any other qualification is refused."""
    if len(names) == 1:
        return names[0]
    if len(names) == 2 and names[0] == "pg_catalog":
        return names[1]
    raise UnsafeQueryError(
        f"{what} {_dotted(names)} is not allowed: only built-in ones, unqualified or in pg_catalog"
    )


def _check_function(names: tuple[str, ...]) -> None:
    name = _unqualified(names, "function")
    if name in ALLOWED_FUNCTIONS:
        return
    reason = next(
        (why for prefix, why in REFUSED_FUNCTION_REASONS.items() if name.lower().startswith(prefix)), None
    )
    shown = _dotted(names)
    if reason:
        raise UnsafeQueryError(f"function {shown} is not allowed: it {reason}")
    raise UnsafeQueryError(
        f"function {shown} is not in the allow-list (aggregates, string, number, date/time, JSON and "
        "array functions: managed_upgrade.sandbox.readonly_sql.ALLOWED_FUNCTIONS)"
    )


def _check_type(node: ast.TypeName) -> None:
    names = _names(node.names)
    name = _unqualified(names, "type")
    if node.pct_type:
        raise UnsafeQueryError(f"{_dotted(names)}%TYPE is not allowed")
    if name not in ALLOWED_TYPES:
        raise UnsafeQueryError(
            f"cast to {_dotted(names)} is not allowed; cast only to plain data types "
            "(text, integer, numeric, boolean, date, timestamp, interval, json ...)"
        )


def _check_operator(names: tuple[str, ...]) -> None:
    name = _unqualified(names, "operator")
    if name not in ALLOWED_OPERATORS:
        raise UnsafeQueryError(f"operator {_dotted(names)} is not allowed")


def _short(name: object, limit: int = 64) -> str:
    """A name from the query for a message: at most ``limit`` characters, control characters escaped."""
    text = str(name)
    text = text if len(text) <= limit else text[:limit] + "..."
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def _dotted(names: tuple[str, ...]) -> str:
    return _short(".".join(names), 130)


def _node_name(node: ast.Node) -> str:
    kind = type(node).__name__
    return _NODE_NAMES.get(kind, kind.removesuffix("Stmt").upper() if kind.endswith("Stmt") else kind)


def _statement_name(node: Any) -> str:
    kind = type(node).__name__
    return _NODE_NAMES.get(kind, kind.removesuffix("Stmt").upper() if kind.endswith("Stmt") else kind)


# --- scripts (fixes): several statements of any kind ---------------------------------------------


def split_statements(sql: str) -> tuple[str, ...]:
    """The statements of ``sql`` (text of each, without the ``;``), split by PostgreSQL's scanner.

    Empty statements and comment-only text are dropped; :class:`UnsafeQueryError` if ``sql`` cannot
    even be scanned (an unterminated string, comment or quoted identifier).
    """
    try:
        return tuple(statement for statement in split(sql, with_parser=False) if statement.strip())
    except ParseError as error:
        raise UnsafeQueryError(_parse_message(error)) from None


def leading_keyword(statement: str) -> str | None:
    """The first keyword of ``statement`` in lower case (``"begin"``, ``"update"``), ``None`` if it starts
    otherwise (e.g. with a parenthesis or an identifier)."""
    try:
        tokens = scan(statement)
    except ParseError as error:
        raise UnsafeQueryError(_parse_message(error)) from None
    for token in tokens:
        if token.name in ("C_COMMENT", "SQL_COMMENT"):
            continue
        if token.kind == "NO_KEYWORD":
            return None
        return statement[token.start : token.end + 1].lower()
    return None
