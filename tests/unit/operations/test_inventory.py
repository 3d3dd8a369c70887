"""The Dev system inventory reads raw host and database outputs correctly and flags what needs a look."""

from __future__ import annotations

import json
import re

import pytest

from managed_upgrade.operations.inventory import (
    DatabaseFacts,
    HostFacts,
    InventoryError,
    build_inventory,
    parse_crm_status,
    parse_df,
    parse_du_kib,
    parse_module_descriptor,
    parse_properties_keys,
    parse_version_file,
    render_markdown,
)

DF = """Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/vda         264212084 31503872  74887040      30% /
"""
STATUS_OK = json.dumps(
    {
        "version": "10.2.0",
        "schema_version": "10.2.0",
        "modules": ["core", "sales"],
        "ok": True,
        "problems": [],
    }
)


def _host(**changes) -> HostFacts:
    values = {
        "version_file": "10.2.0\n",
        "module_descriptors": {
            "core": "name: core\nversion: 10.2.0\nvendor: Aurea\n",
            "sales": "name: sales\nversion: 10.2.0\nvendor: Aurea\n",
        },
        "settings_files": {
            "system.properties": "# customized\nsession.timeout.minutes=90\nlocale.default=de_DE\n",
            "database.properties": "host=127.0.0.1\nport=5432\ndbname=crm\nuser=postgres\npassword=s3cret\n",
        },
        "du_output": "348\t/srv/crm\n",
        "df_output": DF,
        "crm_status_exit_code": 0,
        "crm_status_output": STATUS_OK,
    }
    return HostFacts(**{**values, **changes})


def _db(**changes) -> DatabaseFacts:
    values = {
        "schema_versions": ("10.2.0",),
        "table_rows": {"public.crm_settings": 12, "public.crm_accounts": 20},
        "server_version": "15.8",
        "size_bytes": 8 * 1024 * 1024,
    }
    return DatabaseFacts(**{**values, **changes})


def _inventory(host: HostFacts | None = None, db: DatabaseFacts | None = None) -> dict:
    return build_inventory(
        host or _host(),
        db or _db(),
        environment="dev",
        install_path="/srv/crm",
        expected_version="10.2.0",
        collected_at="2027-01-12T09:00:00+00:00",
    )


def test_healthy_installation_has_no_findings_and_a_full_picture():
    inventory = _inventory()
    assert inventory["findings"] == []
    assert inventory["version"] == "10.2.0"
    assert [m["name"] for m in inventory["modules"]] == ["core", "sales"]
    assert inventory["modules"][0] == {
        "name": "core",
        "version": "10.2.0",
        "vendor": "Aurea",
        "directory": "core",
    }
    assert inventory["settings"]["system.properties"] == ["session.timeout.minutes", "locale.default"]
    assert inventory["disk"]["install_kib"] == 348
    assert inventory["disk"]["filesystem"]["available_kib"] == 74887040
    assert inventory["database"]["schema_version"] == "10.2.0"
    assert list(inventory["database"]["tables"]) == ["public.crm_accounts", "public.crm_settings"]
    json.dumps(inventory)  # XCom-ready


def test_setting_values_never_enter_the_inventory_or_markdown():
    inventory = _inventory()
    assert "password" in inventory["settings"]["database.properties"]
    assert "s3cret" not in json.dumps(inventory)
    assert "s3cret" not in render_markdown(inventory)


@pytest.mark.parametrize(
    ("host", "db", "expected"),
    [
        (_host(version_file="10.1.0\n"), None, "installed version 10.1.0 differs from the config's current"),
        (_host(version_file=None), None, "VERSION file is missing"),
        (
            _host(module_descriptors={"core": "name: core\nversion: 10.1.0\n"}),
            None,
            "module core is version 10.1.0, installation is 10.2.0",
        ),
        (
            _host(
                crm_status_exit_code=1,
                crm_status_output=json.dumps({"ok": False, "problems": ["lib/x missing"]}),
            ),
            None,
            "`bin/crm status` reports a broken installation: lib/x missing",
        ),
        (_host(crm_status_exit_code=127, crm_status_output=""), None, "printed no JSON"),
        (None, _db(schema_versions=()), "config DB has 0 schema version rows, expected exactly 1"),
        (None, _db(schema_versions=("10.1.0",)), "config DB schema is 10.1.0 but VERSION says 10.2.0"),
        (
            _host(du_output="40000000\t/srv/crm\n"),
            None,
            "only 71.4 GiB free on /; backup, staging and upgrade want about 114.4 GiB",
        ),
    ],
)
def test_findings_name_what_is_wrong(host, db, expected):
    found = _inventory(host, db)["findings"]
    assert any(expected in finding for finding in found), found


def test_crm_status_exit_code_counts_even_if_json_says_ok():
    assert parse_crm_status(1, STATUS_OK)["ok"] is False
    assert parse_crm_status(0, STATUS_OK)["ok"] is True


def test_parsers_reject_garbage_with_the_source_named():
    with pytest.raises(InventoryError, match=r"VERSION: does not hold a version X\.Y\.Z \(got 'banana"):
        parse_version_file("banana\n")
    with pytest.raises(InventoryError, match="du -sk: no size"):
        parse_du_kib("du: cannot access\n")
    with pytest.raises(InventoryError, match="df -Pk: expected a header"):
        parse_df("")
    with pytest.raises(InventoryError, match="df -Pk: data line"):
        parse_df("Filesystem 1024-blocks Used Available Capacity Mounted on\nbroken line\n")


def test_small_parsers():
    # as Java reads it: whitespace separates too ("not a pair" is key "not"), ':' as well
    text = "# c\n! also comment\n\na = 1\nb=2=3\nnot a pair\nc: 4\n"
    assert parse_properties_keys(text) == ["a", "b", "not", "c"]
    assert parse_module_descriptor("dir", "# comment\nversion: '1.0.0'\n  nested: x\n") == {
        "version": "1.0.0",
        "name": "dir",
        "directory": "dir",
    }
    assert (
        parse_df("Filesystem 1024-blocks Used Available Capacity Mounted on\nfs 10 4 6 40% /mnt/my disk\n")[
            "mount"
        ]
        == "/mnt/my disk"
    )


def test_markdown_shows_versions_modules_settings_tables_and_findings():
    markdown = render_markdown(_inventory())
    assert "### DEV system inventory" in markdown
    assert "Installed version: **10.2.0** (config says 10.2.0)" in markdown
    assert "`bin/crm status`: ok (exit code 0)" in markdown
    assert "| core | 10.2.0 | Aurea |" in markdown
    assert "| system.properties | session.timeout.minutes, locale.default |" in markdown
    assert "| public.crm\\_accounts | 20 |" in markdown
    assert "**Findings:** none" in markdown
    assert "PostgreSQL 15.8, 8.0 MiB" in markdown

    broken = render_markdown(_inventory(_host(crm_status_exit_code=1, crm_status_output="boom")))
    assert "**BROKEN**" in broken
    assert "- \\`bin/crm status\\` reports a broken installation" in broken


def test_markdown_escapes_hostile_names():
    host = _host(module_descriptors={"x": "name: <img src=x onerror=alert(1)>|evil\nversion: 10.2.0\n"})
    markdown = render_markdown(_inventory(host))
    assert not re.search(r"(?<!\\)[<>|]evil|(?<!\\)<img", markdown)
    assert "\\<img src=x onerror=alert(1)\\>\\|evil" in markdown  # brackets escaped: no link, no tag
