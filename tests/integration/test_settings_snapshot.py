"""Re-applying customer settings after a real installer run reset them (files and the crm_settings table)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crm_estate import Estate
from crm_estate.installation import customer_db_settings, customer_file_settings
from managed_upgrade.backup import BackupTarget, create_backup
from managed_upgrade.release_source import DirectoryReleaseSource, fetch_release
from managed_upgrade.settings_snapshot import (
    capture_settings,
    load_snapshot,
    parse_properties,
    read_db_settings,
    reapply_settings,
    save_snapshot,
)
from managed_upgrade.staging import StagingTarget, stage_release
from managed_upgrade.upgrade import UpgradePlan, run_installer

pytestmark = pytest.mark.integration

TARGET = "11.0.0"
CUSTOM_KEY = "custom.banner"
CUSTOM_VALUE = "Welcome $(touch /tmp/pwned) `id` 'quoted' \"double\""


@pytest.fixture
def upgraded(estate: Estate, fresh_installation, remote_host, db_target, tmp_path: Path) -> SimpleNamespace:
    """An environment customised by its customer, snapshotted, then upgraded by the vendor installer."""
    installation = fresh_installation("dev", "10.2.0")
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
    assert save_snapshot(host, plan.snapshot_path, capture_settings(host, install, db))
    assert run_installer(host, plan) == 0
    return SimpleNamespace(installation=installation, host=host, db=db, plan=plan, backup_id=backup.backup_id)


def file_settings(installation: Any, name: str) -> dict[str, str]:
    return parse_properties((installation.install_path / "settings" / name).read_text())


def test_every_setting_the_installer_reset_comes_back(upgraded: SimpleNamespace) -> None:
    installation, customer = upgraded.installation, upgraded.installation.customer_id
    expected_files = customer_file_settings(customer)
    assert file_settings(installation, "mail.properties")["mail.sender"] == "crm@example.invalid"  # reset
    assert read_db_settings(upgraded.db)["report.row_limit"] == "10000"  # reset

    snapshot = load_snapshot(upgraded.host, upgraded.plan.snapshot_path)
    report = reapply_settings(upgraded.host, str(installation.install_path), upgraded.db, snapshot)

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

    again = reapply_settings(upgraded.host, str(installation.install_path), upgraded.db, snapshot)
    assert again.restored == []
    assert again.vanished == []


def test_the_upgraded_installation_still_runs_after_re_applying(
    estate: Estate, upgraded: SimpleNamespace
) -> None:
    snapshot = load_snapshot(upgraded.host, upgraded.plan.snapshot_path)
    reapply_settings(upgraded.host, str(upgraded.installation.install_path), upgraded.db, snapshot)
    code, status = estate.crm_status(upgraded.installation.install_path)
    assert code == 0
    assert status["version"] == TARGET


def test_a_db_setting_that_vanished_is_written_back_and_flagged(upgraded: SimpleNamespace) -> None:
    connection = upgraded.db.connect()
    with connection, connection.cursor() as cursor:
        cursor.execute("DELETE FROM crm_settings WHERE key = %s", ("export.format",))
    connection.close()
    snapshot = load_snapshot(upgraded.host, upgraded.plan.snapshot_path)
    report = reapply_settings(upgraded.host, str(upgraded.installation.install_path), upgraded.db, snapshot)
    assert {"source": "db:crm_settings", "key": "export.format", "value": "xlsx"} in report.vanished
    assert report.summary()["needs_review"] is True
    assert read_db_settings(upgraded.db)["export.format"] == "xlsx"


def test_the_first_snapshot_is_kept_on_retries(upgraded: SimpleNamespace) -> None:
    path = upgraded.plan.snapshot_path
    after_upgrade = capture_settings(upgraded.host, str(upgraded.installation.install_path), upgraded.db)
    assert save_snapshot(upgraded.host, path, after_upgrade) is False
    assert load_snapshot(upgraded.host, path).database["report.row_limit"] == "50000"


def test_the_operator_re_applies_and_keeps_its_report_beside_the_snapshot(
    upgraded: SimpleNamespace, airflow_connections
) -> None:
    from managed_upgrade_airflow.operators.reapply_settings import ReapplySettingsOperator

    ssh_conn_id, db_conn_id = airflow_connections.add_installation(upgraded.installation)
    operator = ReapplySettingsOperator(
        task_id="reapply_settings",
        environment="dev",
        ssh_conn_id=ssh_conn_id,
        db_conn_id=db_conn_id,
        install_path=str(upgraded.installation.install_path),
        backup_path=str(upgraded.installation.backup_path),
        backup_id=upgraded.backup_id,
    )
    summary = operator.execute({})  # type: ignore[arg-type]
    assert {"source": "mail.properties", "key": "mail.smtp.host"} in [
        {"source": item["source"], "key": item["key"]} for item in summary["restored"]
    ]
    password = next(item for item in summary["restored"] if item["key"] == "password.min_length")
    assert password["now"] == "***"  # secret-looking keys are masked in XCom
    assert summary["needs_review"] is True
    assert Path(summary["report"]).is_file()
