"""Customer test queries: only one read-only SELECT gets through, however it is disguised."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from managed_upgrade.readonly_sql import UnsafeQueryError, is_single_select, require_single_select

ACCEPTED = [
    "select 1",
    "SELECT value FROM crm_settings WHERE key = 'mail.host'",
    "select count(*) from crm_schema_version;",
    "select 1;  -- trailing comment",
    "-- what this checks\nselect 1",
    "/* leading */ select 1",
    "(select 1) union (select 2)",
    "with latest as (select max(version) as v from crm_schema_version) select v from latest",
    "select ';' as semicolon",
    "select 'it''s; fine'",
    "select E'it\\'s; still one string'",
    "select e'a\\\\'",
    "select $$a; drop table x$$",
    "select $tag$ ; delete from t; $tag$",
    'select 1 as "a;b"',
    'select 1 as "update"',
    "select updated_at, inserted_by, deleted from t",
    "select 1 /* outer /* inner ; */ still comment ; */",
    "select a$b from t",
    "select $1",
]

REJECTED = [
    ("select 1; drop table x", "2 statements"),
    ("select 1; select 2", "2 statements"),
    ("update crm_settings set value = 'x'", "must start with SELECT or WITH, not 'update'"),
    ("delete from crm_settings", "must start with SELECT or WITH, not 'delete'"),
    ("insert into t values (1)", "must start with SELECT or WITH"),
    ("drop table t", "must start with SELECT or WITH"),
    ("explain analyze select 1", "must start with SELECT or WITH, not 'explain'"),
    ("copy t to stdout", "must start with SELECT or WITH"),
    ("select 1 --\n; drop table x", "2 statements"),
    ("select 1 --\r; drop table x", "2 statements"),
    ("select \u00a0e'\\'; drop table x; --'", "standard_conforming_strings"),
    ("/* select */ delete from t", "not 'delete'"),
    ("select 1 /* unterminated", "unterminated /* comment"),
    ("select 1 /* a /* b */ ; drop table x", "unterminated /* comment"),
    ("with d as (delete from t returning *) select * from d", "DELETE found"),
    ("with d as (insert into t values (1) returning *) select * from d", "INSERT found"),
    ("with d as (update t set a = 1 returning *) select * from d", "UPDATE found"),
    ("select * into t2 from t", "SELECT INTO would create a table"),
    ("select * from t for update", "FOR UPDATE"),
    ("select * from t for no key update", "FOR UPDATE"),
    ("select * from t for key share", "FOR SHARE"),
    ("select set_config('default_transaction_read_only', 'off', false)", "set_config is not allowed"),
    ("select pg_catalog.pg_terminate_backend(42)", "pg_terminate_backend is not allowed"),
    ("select \"set_config\"('a', 'b', false)", "set_config is not allowed"),
    ("select query_to_xml('delete from t', true, true, '')", "query_to_xml is not allowed"),
    ("select 'a\\'; drop table x; --'", "standard_conforming_strings"),
    ("select e'\\'' ; drop table t", "2 statements"),
    ("select 'unterminated", "unterminated string literal"),
    ("select $$unterminated", "unterminated dollar-quoted string"),
    ('select "unterminated', "unterminated quoted identifier"),
    ("", "query is empty"),
    ("  ;  -- nothing\n", "query is empty"),
    ("select 1\x00", "NUL character"),
]


@pytest.mark.parametrize("sql", ACCEPTED)
def test_single_read_only_selects_are_accepted_unchanged(sql: str) -> None:
    assert require_single_select(sql) == sql
    assert is_single_select(sql)


@pytest.mark.parametrize(("sql", "reason"), REJECTED)
def test_anything_else_is_rejected_with_the_reason(sql: str, reason: str) -> None:
    with pytest.raises(UnsafeQueryError) as caught:
        require_single_select(sql)
    assert reason in str(caught.value)
    assert not is_single_select(sql)


def test_non_text_is_rejected() -> None:
    with pytest.raises(UnsafeQueryError, match="must be text"):
        require_single_select(b"select 1")  # type: ignore[arg-type]


# Property: whatever a literal, quoted identifier or comment holds, it cannot hide a second statement,
# and nothing appended after an accepted query on a new line can ride along.

_ANY_TEXT = st.text(st.characters(exclude_characters="\x00\\"), max_size=30)

_FRAGMENTS = st.one_of(
    st.sampled_from(["a", "b", "t.x", "count(*)", "1", "2.5", "(", ")", ",", "=", "+", "||", "::text"]),
    _ANY_TEXT.map(lambda text: "'" + text.replace("'", "''") + "'"),
    _ANY_TEXT.map(lambda text: '"' + text.replace('"', '""') + '"' if text else '"x"'),
    _ANY_TEXT.filter(lambda text: "$q$" not in text).map(lambda text: f"$q${text}$q$"),
    _ANY_TEXT.map(lambda text: "-- " + text.replace("\n", " ").replace("\r", " ") + "\n"),
    _ANY_TEXT.filter(lambda text: "*/" not in text and "/*" not in text).map(lambda text: f"/* {text} */"),
)


@given(st.lists(_FRAGMENTS, max_size=8))
def test_literals_and_comments_never_split_a_select(fragments: list[str]) -> None:
    query = "select " + " ".join(fragments)
    assert is_single_select(query), query
    assert not is_single_select(query + "\n; drop table crm_settings")
