"""The rules of backups and upgrades that need no host: ids, listings, plans, installer logs, messages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from managed_upgrade.errors import InstallerFailedError, RollbackFailedError, UpgradeRolledBackError
from managed_upgrade.operations.backup import compare_listing, new_backup_id, require_backup_id
from managed_upgrade.operations.restore import compare_tree
from managed_upgrade.operations.upgrade import UpgradePlan, failed_step, installer_argv

BACKUP_ID = "20260101T120000Z-dev-0a1b2c"


def test_backup_ids_sort_by_time_and_are_safe() -> None:
    early = new_backup_id("dev", datetime(2026, 1, 1, 12, tzinfo=UTC))
    late = new_backup_id("dev", datetime(2026, 1, 2, 12, tzinfo=UTC))
    assert early < late
    assert early.startswith("20260101T120000Z-dev-")
    assert require_backup_id(early) == early


@pytest.mark.parametrize(
    "bad", ["latest", "../" + BACKUP_ID, BACKUP_ID + "; rm -rf /", "$(id)", BACKUP_ID + "\n"]
)
def test_bad_backup_ids_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="backup id"):
        require_backup_id(bad)


def entry(path: str, kind: str = "file", size: int = 1, mode: int = 0o644, sha256: str | None = "x") -> dict:
    return {"path": path, "type": kind, "mode": mode, "size": size, "sha256": sha256, "target": None}


def test_listing_comparison_reports_each_kind_of_difference() -> None:
    manifest = [entry("a"), entry("b", size=2), entry("c")]
    listing = [entry("a", sha256=None), entry("b", size=3), entry("d")]
    problems = compare_listing(manifest, listing)
    assert "missing from the archive: c" in problems
    assert "not in the folder: d" in problems
    assert any(problem.startswith("b: folder") for problem in problems)
    assert len(problems) == 3


def test_tree_comparison_includes_content_hashes() -> None:
    assert compare_tree([entry("a", sha256="1")], [entry("a", sha256="1")]) == []
    assert compare_tree([entry("a", sha256="1")], [entry("a", sha256="2")]) == ["differs: a"]


def plan(**overrides: str) -> UpgradePlan:
    values = {
        "install_path": "/srv/crm",
        "staging_path": "/srv/staging",
        "backup_path": "/srv/backups",
        "backup_id": BACKUP_ID,
        "target_version": "11.0.0",
    }
    values.update(overrides)
    return UpgradePlan(**values)


def test_installer_command_is_an_argv_list_under_the_installation_lock_with_the_log_in_the_backup() -> None:
    assert installer_argv(plan()) == [
        "flock",
        "--nonblock",
        "--conflict-exit-code",
        "201",
        "/srv/backups/.installer.lock",
        "python3",
        "/srv/staging/11.0.0/installer.py",
        "--install-path",
        "/srv/crm",
        "--log",
        f"/srv/backups/{BACKUP_ID}/installer-11.0.0.log",
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("target_version", "1.0; rm -rf /"),
        ("target_version", "$(id)"),
        ("install_path", "/srv/crm; rm -rf /"),
        ("install_path", "/srv/`id`"),
        ("staging_path", "/srv/with space"),
        ("backup_path", "/srv/../etc"),
        ("install_path", "/srv/crm\nid"),
        ("install_path", "relative/path"),
    ],
)
def test_plan_rejects_values_that_could_reach_a_shell(field: str, value: str) -> None:
    with pytest.raises(ValueError, match="is not a valid"):
        plan(**{field: value})


LOG = [
    "2026-01-01T00:00:00Z [installer] aurea-crm installer 11.0.0 for /srv/crm",
    "2026-01-01T00:00:01Z [preflight] done in 0.2s",
    "2026-01-01T00:00:01Z [migrate_db] start",
    "2026-01-01T00:00:02Z [migrate_db] FAILED (exit 3): injected fault at step migrate_db",
]


def test_failed_step_comes_from_the_failed_line_else_the_last_step() -> None:
    assert failed_step(LOG) == "migrate_db"
    assert failed_step(LOG[:3]) == "migrate_db"
    assert failed_step(LOG[:1]) == "installer"
    assert failed_step([]) == "installer"


def test_failure_messages_say_what_failed_and_what_the_restore_did() -> None:
    failure = InstallerFailedError("dev", "migrate_db", 3, LOG, "the installer reported failure")
    rolled_back = str(UpgradeRolledBackError(failure, BACKUP_ID, "10.2.0"))
    assert "failed at step 'migrate_db' (exit code 3)" in rolled_back
    assert LOG[-1] in rolled_back
    assert f"RESTORE SUCCEEDED: dev was restored from backup {BACKUP_ID}" in rolled_back
    broken = RollbackFailedError(failure, BACKUP_ID, RuntimeError("dump missing at /srv/backups/x"))
    assert str(broken).startswith("!!! UPGRADE FAILED AND RESTORE FAILED on dev")
    assert "dump missing at /srv/backups/x" in str(broken)
    assert not isinstance(broken, UpgradeRolledBackError)
