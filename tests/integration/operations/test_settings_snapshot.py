"""Re-applying customer settings after a real installer run reset them (files and the crm_settings table).

The merge's common ancestor is the real 10.2.0 release of the estate's repository: 11.0.0 changes the
defaults of ``ui.theme`` and ``search.engine``, which the customer never touched.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crm_estate import Estate
from crm_estate.installation import customer_db_settings, customer_file_settings
from managed_upgrade.operations.backup import BackupTarget, create_backup
from managed_upgrade.operations.release_defaults import ReleaseDefaults, read_release_defaults
from managed_upgrade.operations.release_source import DirectoryReleaseSource, fetch_release
from managed_upgrade.operations.settings_files import parse_properties
from managed_upgrade.operations.settings_snapshot import (
    SettingsError,
    SettingsSnapshot,
    capture_settings,
    load_snapshot,
    read_db_settings,
    reapply_settings,
    save_snapshot,
)
from managed_upgrade.operations.staging import StagingTarget, stage_release
from managed_upgrade.operations.upgrade import UpgradePlan, run_installer

pytestmark = pytest.mark.integration

SOURCE = "10.2.0"
TARGET = "11.0.0"
CUSTOM_KEY = "custom.banner"
CUSTOM_VALUE = "Welcome $(touch /tmp/pwned) `id` 'quoted' \"double\""


@pytest.fixture
def upgraded(estate: Estate, fresh_installation, remote_host, db_target, tmp_path: Path) -> SimpleNamespace:
    """An environment customised by its customer, snapshotted, then upgraded by the vendor installer."""
    installation = fresh_installation("dev", SOURCE)
    host = remote_host("dev")
    db = db_target(installation.db_name)
    system = installation.install_path / "settings" / "system.properties"
    system.write_text(system.read_text() + f"{CUSTOM_KEY}={CUSTOM_VALUE}\n")  # a key 11.0.0 does not know
    estate.ensure_release(TARGET)
    release = fetch_release(
        DirectoryReleaseSource(estate.releases_dir, "aurea-crm", TARGET),
        "aurea-crm",
        TARGET,
        tmp_path / "cache",
    )
    stage_release(release, [StagingTarget("dev", host, str(installation.staging_path))])
    install, backups = str(installation.install_path), str(installation.backup_path)
    backup = create_backup(BackupTarget(installation.customer_id, "dev", host, install, backups, db))
    plan = UpgradePlan(install, str(installation.staging_path), backups, backup.backup_id, TARGET)
    assert save_snapshot(host, plan.snapshot_path, capture_settings(host, install, db, version=SOURCE))
    assert run_installer(host, plan) == 0
    base = read_release_defaults(
        DirectoryReleaseSource(estate.releases_dir, "aurea-crm", SOURCE),
        "aurea-crm",
        SOURCE,
        tmp_path / "cache",
    )
    return SimpleNamespace(
        installation=installation, host=host, db=db, plan=plan, backup_id=backup.backup_id, base=base
    )


def reapply(upgraded: SimpleNamespace, snapshot: SettingsSnapshot | None = None, base: Any = "release"):
    snapshot = snapshot or load_snapshot(upgraded.host, upgraded.plan.snapshot_path)
    base = upgraded.base if base == "release" else base
    return reapply_settings(
        upgraded.host, str(upgraded.installation.install_path), upgraded.db, snapshot, base
    )


def file_settings(installation: Any, name: str) -> dict[str, str]:
    return parse_properties((installation.install_path / "settings" / name).read_text())


def test_every_setting_the_installer_reset_comes_back(upgraded: SimpleNamespace) -> None:
    installation, customer = upgraded.installation, upgraded.installation.customer_id
    expected_files = customer_file_settings(customer)
    assert file_settings(installation, "mail.properties")["mail.sender"] == "crm@example.invalid"  # reset
    assert read_db_settings(upgraded.db)["report.row_limit"] == "10000"  # reset

    snapshot = load_snapshot(upgraded.host, upgraded.plan.snapshot_path)
    assert snapshot.version == SOURCE
    report = reapply(upgraded, snapshot)

    for name, values in expected_files.items():
        current = file_settings(installation, name)
        for key, value in values.items():
            assert current[key] == value, f"{name}: {key}"
    db_now = read_db_settings(upgraded.db)
    for key, value in customer_db_settings().items():
        assert db_now[key] == value
    restored = {(item["source"], item["key"]) for item in report.restored}
    assert ("mail.properties", "mail.sender") in restored
    assert ("db:crm_settings", "report.row_limit") in restored
    assert report.vanished == [{"source": "system.properties", "key": CUSTOM_KEY, "value": CUSTOM_VALUE}]
    assert file_settings(installation, "system.properties")[CUSTOM_KEY] == CUSTOM_VALUE  # kept, literally
    added = {(item["source"], item["key"]) for item in report.added}
    assert ("db:crm_settings", "analytics.retention_days") in added
    assert ("analytics.properties", "analytics.enabled") in added
    assert not Path("/tmp/pwned").exists()
    assert report.conflicts == []

    again = reapply(upgraded, snapshot)
    assert again.restored == []
    assert again.vanished == []


def test_defaults_the_customer_never_changed_take_the_new_release_s_values(upgraded: SimpleNamespace) -> None:
    report = reapply(upgraded)
    system = file_settings(upgraded.installation, "system.properties")
    assert system["ui.theme"] == "horizon"  # not put back to 10.2.0's "classic"
    assert system["search.engine"] == "opensearch"
    kept = {(item["key"], item["old"], item["new"]) for item in report.new_defaults}
    assert kept == {("ui.theme", "classic", "horizon"), ("search.engine", "lucene", "opensearch")}
    assert report.base == SOURCE


def test_a_setting_both_sides_changed_keeps_the_customer_value_and_is_flagged(
    upgraded: SimpleNamespace,
) -> None:
    snapshot = load_snapshot(upgraded.host, upgraded.plan.snapshot_path)
    files = {name: dict(values) for name, values in snapshot.files.items()}
    files["system.properties"]["ui.theme"] = "corporate"  # as if the customer had chosen a theme
    report = reapply(upgraded, SettingsSnapshot(**{**snapshot.__dict__, "files": files}))
    assert file_settings(upgraded.installation, "system.properties")["ui.theme"] == "corporate"
    assert [(item["key"], item["old_default"], item["new_default"]) for item in report.conflicts] == [
        ("ui.theme", "classic", "horizon")
    ]
    assert report.summary()["needs_review"] is True


def test_without_the_old_release_every_value_is_restored_and_a_review_asked_for(
    upgraded: SimpleNamespace,
) -> None:
    report = reapply(upgraded, base=None)
    assert file_settings(upgraded.installation, "system.properties")["ui.theme"] == "classic"
    assert report.summary()["base"] is None
    assert report.summary()["needs_review"] is True


def test_defaults_of_another_version_are_refused(upgraded: SimpleNamespace) -> None:
    wrong = ReleaseDefaults("9.0.0", upgraded.base.files, upgraded.base.database)
    with pytest.raises(
        SettingsError, match=r"taken on version 10\.2\.0, but the defaults given are of 9\.0\.0"
    ):
        reapply(upgraded, base=wrong)


def test_the_upgraded_installation_still_runs_after_re_applying(
    estate: Estate, upgraded: SimpleNamespace
) -> None:
    reapply(upgraded)
    code, status = estate.crm_status(upgraded.installation.install_path)
    assert code == 0
    assert status["version"] == TARGET


def test_a_db_setting_that_vanished_is_written_back_and_flagged(upgraded: SimpleNamespace) -> None:
    connection = upgraded.db.connect()
    with connection, connection.cursor() as cursor:
        cursor.execute("DELETE FROM crm_settings WHERE key = %s", ("export.format",))
    connection.close()
    report = reapply(upgraded)
    assert {"source": "db:crm_settings", "key": "export.format", "value": "xlsx"} in report.vanished
    assert report.summary()["needs_review"] is True
    assert read_db_settings(upgraded.db)["export.format"] == "xlsx"


def test_the_first_snapshot_is_kept_on_retries(upgraded: SimpleNamespace) -> None:
    path = upgraded.plan.snapshot_path
    after_upgrade = capture_settings(upgraded.host, str(upgraded.installation.install_path), upgraded.db)
    assert save_snapshot(upgraded.host, path, after_upgrade) is False
    assert load_snapshot(upgraded.host, path).database["report.row_limit"] == "50000"


def run_operator(upgraded: SimpleNamespace, connections: Any, release_conn_id: str, cache: Path) -> dict:
    """The DAG's re-apply task against ``upgraded``, its ancestor from repository ``release_conn_id``."""
    from managed_upgrade_airflow.operators.reapply_settings import ReapplySettingsOperator

    ssh_conn_id, db_conn_id = connections.add_installation(upgraded.installation)
    operator = ReapplySettingsOperator(
        task_id="reapply_settings",
        environment="dev",
        ssh_conn_id=ssh_conn_id,
        db_conn_id=db_conn_id,
        install_path=str(upgraded.installation.install_path),
        backup_path=str(upgraded.installation.backup_path),
        backup_id=upgraded.backup_id,
        release_conn_id=release_conn_id,
        product="aurea-crm",
        cache_root=str(cache),
    )
    return operator.execute({})  # type: ignore[arg-type]


def test_the_operator_re_applies_and_keeps_its_report_beside_the_snapshot(
    upgraded: SimpleNamespace, airflow_connections, tmp_path: Path
) -> None:
    from crm_estate.connections import RELEASES_CONN_ID

    summary = run_operator(upgraded, airflow_connections, RELEASES_CONN_ID, tmp_path / "cache")
    assert summary["base"] == SOURCE
    assert {item["key"] for item in summary["new_defaults_kept"]} == {"ui.theme", "search.engine"}
    assert {"source": "mail.properties", "key": "mail.smtp.host"} in [
        {"source": item["source"], "key": item["key"]} for item in summary["restored"]
    ]
    password = next(item for item in summary["restored"] if item["key"] == "password.min_length")
    assert password["now"] == "***"  # secret-looking keys are masked in XCom
    assert summary["needs_review"] is True
    assert Path(summary["report"]).is_file()


def test_the_operator_restores_everything_when_the_old_release_is_gone(
    upgraded: SimpleNamespace, airflow_connections, tmp_path: Path
) -> None:
    empty = airflow_connections.add("empty_repository", {"conn_type": "fs", "extra": {"path": str(tmp_path)}})
    summary = run_operator(upgraded, airflow_connections, empty, tmp_path / "cache")
    assert summary["base"] is None
    assert "defaults of release 10.2.0 could not be read" in summary["base_problem"]
    assert file_settings(upgraded.installation, "system.properties")["ui.theme"] == "classic"
    assert summary["needs_review"] is True
