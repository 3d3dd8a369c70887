"""The fix bundle format: safe paths, runnable SQL, self-checking JSON, merging rounds in order."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from managed_upgrade.operations.fix_bundle import (
    MAX_BUNDLE_BYTES,
    BundleFile,
    BundleTooLargeError,
    CorruptBundleError,
    FixBundle,
    FixSqlError,
    Provenance,
    SqlScript,
    UnsafeFixPathError,
    check_fix_sql,
    merge_bundles,
    require_fix_path,
)

AT = datetime(2027, 2, 1, 10, 0, tzinfo=UTC)


def provenance(round_number: int, environment: str = "dev", **changes) -> Provenance:
    values = {
        "environment": environment,
        "round": round_number,
        "task_id": f"{environment}.fix_and_retest",
        "question": round_number,
        "recorded_by": "carla",
        "recorded_at": AT,
        "description": f"fix {round_number}",
    }
    return Provenance(**{**values, **changes})


def bundle(round_number: int, files: dict[str, bytes], sql: str = "", environment: str = "dev") -> FixBundle:
    items = [BundleFile.of(path, data, 0o644) for path, data in files.items()]
    scripts = [SqlScript.of(environment, round_number, sql)] if sql else []
    return FixBundle.create(items, scripts, [provenance(round_number, environment)])


# --- paths --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["settings/custom.properties", "VERSION", ".htaccess", "modules/loyalty/a-b_c.d+e@f=g,h~i", "a/.b/c"],
)
def test_relative_paths_inside_the_install_folder_are_accepted(path):
    assert require_fix_path(path) == path


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "non-empty"),
        ("/etc/passwd", "is absolute"),
        ("../secrets", "'..' segment"),
        ("settings/../../etc/passwd", "'..' segment"),
        ("settings//x", "empty or '.' segment"),
        ("./settings/x", "empty or '.' segment"),
        ("settings/", "empty or '.' segment"),
        ("a b", "may only hold"),
        ("settings\\x", "may only hold"),
        ("x;rm -rf", "may only hold"),
        ("line\nbreak", "may only hold"),
        ("..hidden", "may only hold"),
        ("a/" + "b" * 250, "may only hold"),
        ("a/" * 600, "longer than"),
    ],
)
def test_paths_that_could_leave_the_install_folder_or_reach_a_shell_are_refused(path, reason):
    with pytest.raises(UnsafeFixPathError, match=reason):
        require_fix_path(path)


def test_a_non_text_path_is_refused():
    with pytest.raises(UnsafeFixPathError, match="non-empty text"):
        require_fix_path(["settings"])


# --- SQL ----------------------------------------------------------------------------------------


def test_fix_sql_statements_are_counted_with_quotes_comments_and_dollar_bodies():
    sql = """
        UPDATE crm_settings SET value = 'EUR; COMMIT' WHERE key = 'currency.default';
        -- COMMIT; in a comment
        /* ROLLBACK; */ INSERT INTO crm_settings (key, value) VALUES ('a', $$b; COMMIT;$$)
        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
        DO $body$ BEGIN PERFORM 1; END $body$;
    """
    assert check_fix_sql(sql) == 3
    assert check_fix_sql("") == 0


@pytest.mark.parametrize(
    "sql",
    [
        "BEGIN; UPDATE t SET a = 1; COMMIT;",
        "UPDATE t SET a = 1; commit",
        "START TRANSACTION; UPDATE t SET a = 1",
        "UPDATE t SET a = 1; ROLLBACK",
        "UPDATE t SET a = 1; END;",
        "abort",
    ],
)
def test_transaction_control_in_fix_sql_is_refused(sql):
    with pytest.raises(FixSqlError, match="transaction control is not allowed"):
        check_fix_sql(sql)


def test_unreadable_fix_sql_is_refused_with_the_reason():
    with pytest.raises(FixSqlError, match="unterminated string literal"):
        check_fix_sql("UPDATE t SET a = 'oops")
    with pytest.raises(FixSqlError, match="NUL"):
        check_fix_sql("SELECT 1\x00")


def test_a_sql_error_position_is_shown_as_its_line():
    script = SqlScript.of("dev", 1, "UPDATE a SET x = 1;\nUPDATE missing_table SET y = 2;\n")
    assert script.statements == 2
    position = script.sql.index("missing_table") + 1
    assert script.locate(position) == "line 2: 'UPDATE missing_table SET y = 2;'"
    assert script.locate(None) == "starting 'UPDATE a SET x = 1;'"


# --- the format ---------------------------------------------------------------------------------


def test_a_bundle_survives_json_and_keeps_every_detail():
    original = bundle(
        1,
        {"settings/custom.properties": b"ui.theme=dark\n", "bin/fix.sh": b"#!/bin/sh\necho ok\n"},
        "UPDATE crm_settings SET value = 'EUR' WHERE key = 'currency.default';",
    )
    again = FixBundle.from_json(original.to_json())
    assert again == original
    assert again.checksum == original.checksum
    assert again.files[0].data == b"ui.theme=dark\n"
    assert again.sql[0].statements == 1
    assert again.provenance[0].recorded_at == AT
    stored = json.loads(json.dumps(original.to_dict()))  # what the ledger's jsonb column gives back
    assert FixBundle.from_dict(stored) == original


def test_file_modes_keep_permission_bits_only():
    item = BundleFile.of("bin/fix.sh", b"x", 0o104755)
    assert item.mode == 0o755
    with pytest.raises(ValueError, match="less than or equal to 511"):
        BundleFile(path="a", mode=0o4755, size=1, sha256=item.sha256, content=item.content)


def test_the_checksum_covers_files_sql_and_provenance():
    base = bundle(1, {"a": b"1"}, "UPDATE t SET a = 1")
    assert bundle(1, {"a": b"1"}, "UPDATE t SET a = 1").checksum == base.checksum
    assert bundle(1, {"a": b"2"}, "UPDATE t SET a = 1").checksum != base.checksum
    assert bundle(1, {"a": b"1"}, "UPDATE t SET a = 2").checksum != base.checksum
    assert bundle(2, {"a": b"1"}, "UPDATE t SET a = 1").checksum != base.checksum


def _tampered(original: FixBundle, change) -> dict:
    data = copy.deepcopy(original.to_dict())
    change(data)
    return data


@pytest.fixture
def sealed() -> FixBundle:
    return bundle(1, {"settings/custom.properties": b"ui.theme=dark\n"}, "UPDATE t SET a = 1;")


def test_content_that_does_not_match_its_sha256_is_refused(sealed):
    def flip(data):
        data["files"][0]["content"] = base64.b64encode(b"ui.theme=pink\n").decode()

    with pytest.raises(
        CorruptBundleError, match=r"settings/custom.properties: content has sha256 [0-9a-f]{64}"
    ):
        FixBundle.from_dict(_tampered(sealed, flip), "dev round 1")


def test_a_consistently_edited_file_still_breaks_the_bundle_checksum(sealed):
    def rewrite(data):
        content = b"ui.theme=pink\n"
        data["files"][0].update(
            content=base64.b64encode(content).decode(), sha256=hashlib.sha256(content).hexdigest()
        )

    with pytest.raises(CorruptBundleError, match="changed or damaged after it was recorded"):
        FixBundle.from_dict(_tampered(sealed, rewrite))


def test_edited_sql_breaks_the_bundle_checksum(sealed):
    def rewrite(data):
        data["sql"][0]["sql"] = "UPDATE t SET a = 2;"

    with pytest.raises(CorruptBundleError, match=r"dev round 1 is not a valid fix bundle: .*checksum"):
        FixBundle.from_dict(_tampered(sealed, rewrite), "dev round 1")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda data: data["files"][0].update(path="../../etc/cron.d/x"), "'..' segment"),
        (lambda data: data["files"][0].update(path="/etc/passwd"), "is absolute"),
        (lambda data: data["files"][0].update(content="not base64!"), "not valid base64"),
        (lambda data: data["files"][0].update(size=3), "content is 14 bytes, the bundle says 3"),
        (lambda data: data.update(format=2), "format"),
        (lambda data: data.update(unexpected=True), "Extra inputs are not permitted"),
        (lambda data: data["sql"][0].update(sql="COMMIT; UPDATE t SET a = 1;"), "transaction control"),
        (lambda data: data["files"].append(dict(data["files"][0])), "more than once"),
        (lambda data: data.pop("checksum"), "checksum"),
    ],
)
def test_unsafe_or_malformed_bundles_are_refused_before_anything_is_applied(sealed, change, reason):
    with pytest.raises(CorruptBundleError, match=reason):
        FixBundle.from_dict(_tampered(sealed, change))


def test_text_that_is_not_json_is_refused():
    with pytest.raises(CorruptBundleError, match="is not JSON"):
        FixBundle.from_json("{not json", "dev round 1")
    with pytest.raises(CorruptBundleError, match="not a valid fix bundle"):
        FixBundle.from_dict(["a list"])


def test_a_bundle_larger_than_the_limit_is_refused_with_its_largest_file():
    half = MAX_BUNDLE_BYTES // 2
    files = [
        BundleFile.of("lib/big.jar", b"x" * (half + 10), 0o644),
        BundleFile.of("lib/small", b"y" * half, 0o644),
    ]
    with pytest.raises(BundleTooLargeError, match=r"10\.0 MiB, more than the 10 MiB .*largest: lib/big.jar"):
        FixBundle.create(files)
    assert FixBundle.create(files[1:]).total_bytes == half


# --- merging rounds -----------------------------------------------------------------------------


def test_merging_keeps_the_later_rounds_file_and_every_rounds_sql_in_order():
    first = bundle(
        1, {"settings/a.properties": b"a=1\n", "settings/b.properties": b"b=1\n"}, "UPDATE t SET a = 1;"
    )
    second = bundle(2, {"settings/a.properties": b"a=2\n"}, "UPDATE t SET b = 2; UPDATE t SET c = 3;")
    merged = merge_bundles([first, second])

    assert {item.path: item.data for item in merged.files} == {
        "settings/a.properties": b"a=2\n",
        "settings/b.properties": b"b=1\n",
    }
    assert [item.path for item in merged.files] == ["settings/b.properties", "settings/a.properties"]
    assert [(item.round, item.sql) for item in merged.sql] == [
        (1, "UPDATE t SET a = 1;"),
        (2, "UPDATE t SET b = 2; UPDATE t SET c = 3;"),
    ]
    assert [item.round for item in merged.provenance] == [1, 2]
    assert FixBundle.from_dict(merged.to_dict()) == merged
    assert merged.summary()["rounds"] == ["dev#1", "dev#2"]
    assert merged.summary()["sql_statements"] == 3
    reversed_order = merge_bundles([second, first])  # the order given is the order applied
    assert {item.path: item.data for item in reversed_order.files}["settings/a.properties"] == b"a=1\n"


def test_nothing_merged_is_an_empty_bundle():
    merged = merge_bundles([])
    assert merged.is_empty
    description_only = FixBundle.create(provenance=[provenance(1)])
    assert merge_bundles([description_only]).is_empty


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_.-]{0,10}(/[a-z][a-z0-9_.-]{0,10}){0,2}", fullmatch=True),
        st.binary(max_size=200),
        max_size=5,
    ),
    st.lists(
        st.sampled_from(["UPDATE t SET a = 1;", "INSERT INTO t VALUES ('x;y');", "DELETE FROM t"]), max_size=3
    ),
)
def test_any_bundle_round_trips_through_json(files, statements):
    sql = "\n".join(statements)
    original = bundle(1, files, sql)
    assert FixBundle.from_json(original.to_json()) == original
    assert {item.path: item.data for item in original.files} == files
