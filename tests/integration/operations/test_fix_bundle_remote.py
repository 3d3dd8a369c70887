"""Fix bundles on real hosts: captured from a Dev installation over SFTP, applied to a UAT one all or nothing.

The estate's sshd servers and PostgreSQL are real; the installations are fresh copies per test.
"""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from managed_upgrade.operations.fix_bundle import (
    BundleFile,
    FixApplyError,
    FixBundle,
    FixCaptureError,
    SqlScript,
    apply_fix_bundle,
    capture_files,
    merge_bundles,
    new_provenance,
    sql_transaction,
)
from managed_upgrade.transport.database import table_contents

pytestmark = pytest.mark.integration

AT = datetime(2027, 2, 1, 10, 0, tzinfo=UTC)


def sealed(files, scripts=(), round_number: int = 1) -> FixBundle:
    files, scripts = tuple(files), tuple(scripts)
    provenance = new_provenance(
        environment="dev",
        round_number=round_number,
        task_id="dev.fix_and_retest",
        question=round_number,
        recorded_by="carla",
        recorded_at=AT,
        description="test fix",
        files=files,
        sql=scripts,
    )
    return FixBundle.create(files, scripts, [provenance])


def tree(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every entry under ``root``: mode and content (or link target), to compare before and after."""
    entries: dict[str, tuple[int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            entries[str(path.relative_to(root))] = (info.st_mode, os.readlink(path))
        elif stat.S_ISREG(info.st_mode):
            entries[str(path.relative_to(root))] = (info.st_mode, path.read_bytes())
        else:
            entries[str(path.relative_to(root))] = (info.st_mode, "")
    return entries


def currency(dsn: str) -> str:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT value FROM crm_settings WHERE key = 'currency.default'")
        return cursor.fetchone()[0]


@pytest.fixture
def dev(fresh_installation, remote_host) -> tuple[Any, Any]:
    return fresh_installation("dev"), remote_host("dev")


@pytest.fixture
def uat(fresh_installation, remote_host, db_target) -> tuple[Any, Any, Any]:
    installation = fresh_installation("uat")
    return installation, remote_host("uat"), db_target(installation.db_name)


# --- capture ------------------------------------------------------------------------------------


def test_files_are_captured_with_mode_size_and_checksum(dev):
    installation, host = dev
    settings = installation.install_path / "settings" / "report.properties"
    settings.write_text("report.export.format=xlsx\n")
    script = installation.install_path / "bin" / "repair-index"
    script.write_bytes(b"#!/bin/sh\necho repaired\n")
    script.chmod(0o750)

    files = capture_files(
        host,
        str(installation.install_path),
        ["settings/report.properties", "bin/repair-index", "settings/report.properties"],
    )

    assert [(item.path, item.mode, item.size) for item in files] == [
        ("settings/report.properties", 0o666 & ~_umask(), 26),  # what write_text creates
        ("bin/repair-index", 0o750, 24),
    ]
    assert files[0].data == b"report.export.format=xlsx\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_capture_lists_every_problem_at_once(dev, tmp_path):
    installation, host = dev
    root = installation.install_path
    (root / "settings" / "link.properties").symlink_to(root / "settings" / "system.properties")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.properties").write_text("password=hunter2\n")
    (root / "escape").symlink_to(outside)

    with pytest.raises(FixCaptureError) as error:
        capture_files(
            host,
            str(root),
            [
                "settings/missing.properties",
                "settings/link.properties",
                "settings",
                "escape/secret.properties",
                "../x",
            ],
        )
    message = str(error.value)
    assert message.startswith("dev: cannot capture the fix files: ")
    assert f"settings/missing.properties: not found under {root}" in message
    assert "settings/link.properties: is a symlink; a fix carries regular files only" in message
    assert "settings: is not a regular file" in message
    assert f"escape/secret.properties: a folder on its way is a symlink (it resolves to {outside})" in message
    assert "'..' segment" in message


def test_capture_refuses_files_beyond_the_size_limit(dev):
    installation, host = dev
    (installation.install_path / "lib" / "big.bin").write_bytes(b"\0" * 3 * 1024 * 1024)
    with pytest.raises(FixCaptureError, match=r"the files total 3\.0 MiB, more than the 2 MiB"):
        capture_files(host, str(installation.install_path), ["lib/big.bin"], limit=2 * 1024 * 1024)


# --- apply --------------------------------------------------------------------------------------


def test_a_bundle_is_applied_files_and_sql_and_leaves_no_temporary_files(uat, estate):
    installation, host, database = uat
    root = installation.install_path
    before_system = (root / "settings" / "system.properties").read_bytes()
    bundle = merge_bundles(
        [
            sealed(
                [
                    BundleFile.of("settings/report.properties", b"report.export.format=csv\n", 0o600),
                    BundleFile.of("settings/system.properties", b"overwritten=1\n", 0o644),
                ],
                [
                    SqlScript.of(
                        "dev", 1, "UPDATE crm_settings SET value = 'USD' WHERE key = 'currency.default';"
                    )
                ],
            ),
            sealed(
                [
                    BundleFile.of("settings/report.properties", b"report.export.format=xlsx\n", 0o640),
                    BundleFile.of("modules/hotfix/patch/fix.py", b"print('fixed')\n", 0o755),
                ],
                [
                    SqlScript.of(
                        "dev", 2, "UPDATE crm_settings SET value = 'EUR' WHERE key = 'currency.default';"
                    )
                ],
                round_number=2,
            ),
        ]
    )

    applied = apply_fix_bundle(host, str(root), database, bundle, label="uat")

    assert (root / "settings" / "report.properties").read_bytes() == b"report.export.format=xlsx\n"
    assert stat.S_IMODE((root / "settings" / "report.properties").stat().st_mode) == 0o640
    assert (root / "settings" / "system.properties").read_bytes() == b"overwritten=1\n" != before_system
    assert stat.S_IMODE((root / "modules" / "hotfix" / "patch" / "fix.py").stat().st_mode) == 0o755
    assert currency(estate.pg_dsn(installation.db_name)) == "EUR"  # both rounds ran, in order
    assert applied.sql_statements == 2
    assert {item["path"]: item["replaced"] for item in applied.files} == {
        "settings/report.properties": False,
        "settings/system.properties": True,
        "modules/hotfix/patch/fix.py": False,
    }
    leftovers = [path.name for path in root.rglob(".*fix-*")]
    assert leftovers == []


def test_sql_that_fails_rolls_back_every_statement_and_puts_every_file_back(uat, estate):
    installation, host, database = uat
    root = installation.install_path
    files_before = tree(root)
    rows_before = table_contents(database)
    bundle = merge_bundles(
        [
            sealed(
                [
                    BundleFile.of("settings/system.properties", b"overwritten=1\n", 0o644),
                    BundleFile.of("modules/new/module.yaml", b"name: new\n", 0o644),
                ],
                [
                    SqlScript.of(
                        "dev", 1, "UPDATE crm_settings SET value = 'USD' WHERE key = 'currency.default';"
                    )
                ],
            ),
            sealed(
                [],
                [
                    SqlScript.of(
                        "dev",
                        2,
                        "INSERT INTO crm_settings (key, value) VALUES ('a', 'b');\n"
                        "UPDATE dev_only SET x = 1;",
                    )
                ],
                round_number=2,
            ),
        ]
    )

    with pytest.raises(FixApplyError) as error:
        apply_fix_bundle(host, str(root), database, bundle, label="uat")

    message = str(error.value)
    assert message.startswith(
        f"uat: the SQL of fix dev round 2 failed on database {installation.db_name} at line 2: "
    )
    assert "'UPDATE dev_only SET x = 1;'" in message
    assert 'relation "dev_only" does not exist' in message
    assert "the transaction was rolled back" in message
    assert tree(root) == files_before
    assert table_contents(database) == rows_before


def test_a_file_that_would_land_outside_the_install_folder_is_refused(uat, tmp_path):
    installation, host, database = uat
    root = installation.install_path
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "plugins").symlink_to(outside)
    files_before = tree(root)

    bundle = sealed(
        [
            BundleFile.of("settings/ok.properties", b"ok=1\n", 0o644),
            BundleFile.of("plugins/evil.py", b"import os\n", 0o644),
        ]
    )
    with pytest.raises(
        FixApplyError,
        match=re.escape(
            f"plugins/evil.py would be written through {root}/plugins, which resolves to {outside}"
        ),
    ):
        apply_fix_bundle(host, str(root), database, bundle, label="uat")
    assert list(outside.iterdir()) == []
    assert tree(root) == files_before


def test_a_symlink_in_the_files_place_is_not_replaced(uat):
    installation, host, database = uat
    root = installation.install_path
    (root / "settings" / "alias.properties").symlink_to(root / "settings" / "system.properties")
    files_before = tree(root)
    bundle = sealed([BundleFile.of("settings/alias.properties", b"x=1\n", 0o644)])
    with pytest.raises(FixApplyError, match=r"settings/alias\.properties exists there but is a symlink"):
        apply_fix_bundle(host, str(root), database, bundle, label="uat")
    assert tree(root) == files_before


def test_the_sql_of_a_fix_commits_only_when_its_body_finished(uat, estate):
    installation, _, database = uat
    dsn = estate.pg_dsn(installation.db_name)
    scripts = [SqlScript.of("dev", 1, "UPDATE crm_settings SET value = 'CHF' WHERE key = 'currency.default'")]

    with pytest.raises(RuntimeError, match="ledger down"), sql_transaction(database, scripts, "uat"):
        raise RuntimeError("ledger down")
    assert currency(dsn) == "EUR"

    with sql_transaction(database, scripts, "uat") as statements:
        assert statements == 1
    assert currency(dsn) == "CHF"
