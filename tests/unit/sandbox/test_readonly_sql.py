"""Customer test queries: PostgreSQL's parser reads them, and only one plain SELECT over allowed functions
gets through, however it is disguised."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from managed_upgrade.sandbox.readonly_sql import (
    ALLOWED_FUNCTIONS,
    ALLOWED_TYPES,
    UnsafeQueryError,
    is_single_select,
    leading_keyword,
    require_single_select,
    split_statements,
)

LEGITIMATE = [
    "select 1",
    "SELECT value FROM crm_settings WHERE key = 'mail.host'",
    "select count(*) from crm_schema_version;",
    "select 1;  -- trailing comment",
    "-- what this checks\nselect 1",
    "/* leading */ select 1",
    "(select 1) union (select 2)",
    "select 1 except select 2 intersect select 3",
    "with latest as (select max(version) as v from crm_schema_version) select v from latest",
    "with recursive n(i) as (select 1 union all select i + 1 from n where i < 5) select sum(i) from n",
    "select ';' as semicolon",
    "select 'it''s; fine'",
    "select E'it\\'s; still one string'",
    "select $$a; drop table x$$",
    "select $tag$ ; delete from t; $tag$",
    'select 1 as "a;b"',
    'select 1 as "update"',
    "select updated_at, inserted_by, deleted from t",
    "select 1 /* outer /* inner ; */ still comment ; */",
    "values (1, 'a'), (2, 'b')",
    "table crm_settings",
    "select lower(name), upper(country), length(name) from crm_accounts order by 1 limit 3",
    "select count(*) filter (where country = 'DE') from crm_accounts",
    "select country, count(*) from crm_accounts group by country having count(*) > 1 order by 2 desc",
    "select row_number() over (partition by country order by id) from crm_accounts",
    "select a.name, c.email from crm_accounts a join crm_contacts c on c.account_id = a.id",
    "select * from crm_accounts where id in (select account_id from crm_contacts)",
    "select exists (select 1 from crm_settings where key = 'x')",
    "select coalesce(nullif(value, ''), 'none') from crm_settings",
    "select greatest(1, 2), least(3, 4), abs(-1), round(1.5), mod(7, 3), power(2, 10)",
    "select case when count(*) > 0 then 'yes' else 'no' end from crm_settings",
    "select extract(year from now()), date_trunc('day', now()), now() - interval '1 day'",
    "select current_date, current_timestamp, current_user, localtimestamp",
    "select trim(both ' ' from value), substring(value from 1 for 3), position('a' in value) from t",
    "select value::int, value::numeric(10, 2), cast(value as text), '2025-01-01'::date from t",
    "select value::jsonb ->> 'a', jsonb_array_length(value::jsonb) from t",
    "select string_agg(key, ',' order by key) from crm_settings",
    "select regexp_replace(value, '[0-9]+', 'N', 'g') from crm_settings",
    "select * from generate_series(1, 3) as g(i)",
    "select unnest(array[1, 2, 3])",
    "select x from t where a similar to 'b%' and c like 'd%' and e ilike 'f' and g ~ 'h'",
    "select x from t where a between 1 and 2 and b is not distinct from c and d is null",
    "select 1 operator(pg_catalog.+) 2",
    "select pg_catalog.lower('A')",
    "select * from crm_accounts tablesample bernoulli (50) repeatable (1)",
    "select version from public.crm_schema_version",
    "select 'a' collate \"C\" < 'b'",
    "select * from t order by a using <",
    "select md5(value), to_char(now(), 'YYYY') from t",
]

HOSTILE = [
    # more than one statement, however hidden
    ("select 1; drop table x", "holds 2 statements"),
    ("select 1; select 2", "holds 2 statements"),
    ("select 1 --\n; drop table x", "holds 2 statements"),
    ("select 1 --\r; drop table x", "holds 2 statements"),
    ("select e'\\''; drop table t; --'", "holds 2 statements"),
    ("select $a$ $b$ ; $a$; delete from t", "holds 2 statements"),
    ("/* select 1 */ delete from t", "is DELETE, not a SELECT"),
    ("select 1 /* a /* b */ ; drop table x", "unterminated /* comment"),
    ("select 1 /* unterminated", "unterminated /* comment"),
    # not a SELECT at all
    ("update crm_settings set value = 'x'", "is UPDATE, not a SELECT"),
    ("delete from crm_settings", "is DELETE, not a SELECT"),
    ("insert into t values (1)", "is INSERT, not a SELECT"),
    ("drop table t", "not a SELECT"),
    ("explain analyze select 1", "is EXPLAIN, not a SELECT"),
    ("copy t to stdout", "is COPY, not a SELECT"),
    ("set default_transaction_read_only = off", "not a SELECT"),
    ("do $$ begin perform 1; end $$", "is DO, not a SELECT"),
    ("merge into t using u on true when matched then delete", "is MERGE, not a SELECT"),
    # writes that only a parser sees
    ("with d as (delete from t returning *) select * from d", "WITH d AS (DELETE ...) modifies data"),
    ("with d as (insert into t values (1) returning *) select * from d", "WITH d AS (INSERT ...)"),
    ("with d as (update t set a = 1 returning *) select * from d", "WITH d AS (UPDATE ...)"),
    ("with a as (select 1), b as (delete from t returning 1) select * from a", "WITH b AS (DELETE"),
    ("select * into t2 from t", "SELECT INTO would create a table"),
    ("select * into temporary t2 from t", "SELECT INTO would create a table"),
    ("select * from t for update", "FOR UPDATE/FOR SHARE row locks"),
    ("select * from t for no key update", "FOR UPDATE/FOR SHARE row locks"),
    ("select * from t for share", "FOR UPDATE/FOR SHARE row locks"),
    ("select * from t for key share skip locked", "FOR UPDATE/FOR SHARE row locks"),
    ("select (select 1 from t for update)", "FOR UPDATE/FOR SHARE row locks"),
    ("select * from (select * from t for update) s", "FOR UPDATE/FOR SHARE row locks"),
    # functions that act outside the read-only transaction or the database
    (
        "select set_config('default_transaction_read_only', 'off', false)",
        "function set_config is not allowed",
    ),
    ("select \"set_config\"('a', 'b', false)", "function set_config is not allowed"),
    ("select U&\"set\\005fconfig\"('a', 'b', false)", "function set_config is not allowed"),
    ("select U&\"d\\0062link_exec\"('x', 'delete from t')", "function dblink_exec is not allowed"),
    ("select dblink('dbname=postgres', 'select 1')", "function dblink is not allowed"),
    ("select dblink_connect('c', 'dbname=postgres')", "opens a second database session"),
    ("select * from dblink('dbname=x', 'delete from t returning 1') as r(i int)", "function dblink"),
    ("select public.dblink_exec('x', 'y')", "function public.dblink_exec is not allowed"),
    ("select pg_read_file('/etc/passwd')", "function pg_read_file is not allowed: it reads files"),
    ("select pg_catalog.pg_read_file('/etc/passwd')", "function pg_catalog.pg_read_file is not allowed"),
    ("select pg_read_binary_file('/etc/shadow')", "reads files of the database server"),
    ("select pg_ls_dir('.')", "function pg_ls_dir is not allowed"),
    ("select pg_stat_file('postgresql.conf')", "function pg_stat_file is not allowed"),
    ("select lo_import('/etc/passwd')", "function lo_import is not allowed"),
    ("select lo_export(1, '/tmp/x')", "function lo_export is not allowed"),
    ("select pg_sleep(3600)", "function pg_sleep is not allowed"),
    ("select pg_terminate_backend(42)", "function pg_terminate_backend is not allowed"),
    ("select pg_catalog.pg_cancel_backend(42)", "function pg_catalog.pg_cancel_backend is not allowed"),
    ("select pg_reload_conf()", "server administration function"),
    ("select nextval('crm_accounts_id_seq')", "function nextval is not allowed"),
    ("select setval('crm_accounts_id_seq', 1)", "function setval is not allowed"),
    ("select txid_current()", "function txid_current is not allowed"),
    ("select pg_advisory_lock(1)", "takes locks that outlive the query"),
    ("select pg_try_advisory_xact_lock(1)", "takes locks"),
    ("select query_to_xml('delete from t returning 1', true, true, '')", "runs SQL given as text"),
    ("select current_setting('data_directory')", "function current_setting is not allowed"),
    ("select pg_notify('c', 'x')", "function pg_notify is not allowed"),
    ("select my_schema.do_things()", "function my_schema.do_things is not allowed: only built-in ones"),
    ("select evil()", "function evil is not in the allow-list"),
    ("select \"LOWER\"('a')", "function LOWER is not in the allow-list"),
    ("select * from t where exists (select pg_sleep(10))", "function pg_sleep is not allowed"),
    ("select count(*) filter (where pg_sleep(1) is null) from t", "function pg_sleep is not allowed"),
    ("select 1 order by pg_sleep(1)", "function pg_sleep is not allowed"),
    ("select * from t, lateral dblink('x', 'y') as r(i int)", "function dblink is not allowed"),
    # casts that look things up or run a type's functions
    ("select 'crm_settings'::regclass", "cast to regclass is not allowed"),
    ("select 'pg_read_file'::regproc", "cast to regproc is not allowed"),
    ("select 'now()'::regprocedure", "cast to regprocedure is not allowed"),
    ("select cast('x' as public.my_type)", "type public.my_type is not allowed"),
    ("select '<a/>'::xml", "cast to xml is not allowed"),
    # operators that are not the standard ones
    ("select 1 operator(public.+) 2", "operator public.+ is not allowed"),
    ("select 1 === 2", "operator === is not allowed"),
    ("select point(1, 2) <-> point(3, 4)", "operator <-> is not allowed"),
    ("select * from t order by a using ~<~", "operator ~<~ is not allowed"),
    # other forms
    ("select $1", "a parameter ($1) is not allowed"),
    ("select xmlelement(name a)", "an XML expression is not allowed"),
    ("select * from xmltable('/a' passing '<a/>' columns x int)", "XMLTABLE is not allowed"),
    ("select * from t tablesample system_rows (10)", "TABLESAMPLE system_rows is not allowed"),
    # what the parser itself refuses
    ("select 'unterminated", "unterminated string literal"),
    ("select $$unterminated", "unterminated dollar-quoted string"),
    ('select "unterminated', "unterminated quoted identifier"),
    ("select from where", "is not valid SQL: syntax error"),
    ("select 1\u00a0", "is not valid SQL"),
    ("", "is empty"),
    ("  ;  -- nothing\n", "is empty"),
    ("select 1\x00", "contains a NUL character"),
]


def test_the_hostile_corpus_is_large() -> None:
    assert len(HOSTILE) >= 40
    assert len(LEGITIMATE) >= 40


@pytest.mark.parametrize("sql", LEGITIMATE)
def test_plain_selects_are_accepted_unchanged(sql: str) -> None:
    assert require_single_select(sql) == sql
    assert is_single_select(sql)


@pytest.mark.parametrize(("sql", "reason"), HOSTILE)
def test_anything_else_is_refused_with_the_reason(sql: str, reason: str) -> None:
    with pytest.raises(UnsafeQueryError) as caught:
        require_single_select(sql)
    assert reason in str(caught.value)
    assert not is_single_select(sql)


def test_non_text_is_refused() -> None:
    with pytest.raises(UnsafeQueryError, match="must be text"):
        require_single_select(b"select 1")  # type: ignore[arg-type]


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_a_deeply_nested_expression_is_accepted_or_refused_never_a_crash(depth: int) -> None:
    deep = "select " + "(" * depth + "1" + ")" * depth
    try:
        require_single_select(deep)
    except UnsafeQueryError as error:
        assert "nested too deeply" in str(error) or "not valid SQL" in str(error)
    assert is_single_select("select " + " + ".join(["1"] * 3000))
    assert not is_single_select("select " + " + ".join(["pg_sleep(1)"] * 3000))


def test_names_in_messages_are_cut_and_escaped() -> None:
    with pytest.raises(UnsafeQueryError) as caught:
        require_single_select(f'select "{"x" * 5000}\x07"()')
    assert len(str(caught.value)) < 400
    assert "\x07" not in str(caught.value)


def test_the_allow_lists_hold_no_dangerous_name() -> None:
    dangerous = ("dblink", "pg_read", "pg_ls", "lo_", "set_config", "pg_sleep", "nextval", "setval", "txid")
    assert not [name for name in ALLOWED_FUNCTIONS if name.startswith(dangerous)]
    assert not [name for name in ALLOWED_FUNCTIONS if "xml" in name or "advisory" in name]
    assert not [name for name in ALLOWED_TYPES if name.startswith("reg")]


# Property: whatever a literal, quoted identifier or comment holds, it cannot hide a second statement,
# and nothing appended after an accepted query on a new line can ride along.

_ANY_TEXT = st.text(st.characters(exclude_characters="\x00\\"), max_size=30)

_FRAGMENTS = st.one_of(
    st.sampled_from(["a", "b", "t.x", "count(*)", "1", "2.5", "(1)", ",", "=", "+", "||", "::text"]),
    _ANY_TEXT.map(lambda text: "'" + text.replace("'", "''") + "'"),
    _ANY_TEXT.filter(lambda text: "$q$" not in text).map(lambda text: f"$q${text}$q$"),
    _ANY_TEXT.map(lambda text: "-- " + text.replace("\n", " ").replace("\r", " ") + "\n"),
    _ANY_TEXT.filter(lambda text: "*/" not in text and "/*" not in text).map(lambda text: f"/* {text} */"),
)


def test_text_that_is_not_unicode_is_refused_with_its_position():
    with pytest.raises(UnsafeQueryError, match="not valid text: surrogates not allowed at character 9"):
        require_single_select("select '\ud800'")


@given(st.lists(_FRAGMENTS, max_size=8))
def test_literals_and_comments_never_split_a_select(fragments: list[str]) -> None:
    query = "select 1 " + " ".join(fragments)
    try:
        require_single_select(query)
    except UnsafeQueryError as error:  # a random mix may be bad SQL; never more than one statement
        assert "statements" not in str(error)
    assert not is_single_select(query + "\n; drop table crm_settings")


# --- scripts (fixes) split by the scanner -------------------------------------------------------------


def test_scripts_are_split_by_postgresqls_scanner() -> None:
    script = """
        UPDATE crm_settings SET value = 'EUR; COMMIT' WHERE key = 'currency.default';
        -- COMMIT; in a comment
        /* ROLLBACK; */ INSERT INTO t (v) VALUES ($$b; COMMIT;$$);
        DO $body$ BEGIN PERFORM 1; END $body$;
    """
    statements = split_statements(script)
    assert len(statements) == 3
    assert [leading_keyword(statement) for statement in statements] == ["update", "insert", "do"]
    assert split_statements("  ;  -- nothing\n") == ()
    assert leading_keyword("/* x */ Begin") == "begin"
    assert leading_keyword("(select 1)") is None
    with pytest.raises(UnsafeQueryError, match="unterminated string literal"):
        split_statements("UPDATE t SET a = 'oops")
