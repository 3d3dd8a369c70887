"""Operations asked to write or delete outside the allowed roots on a real estate host refuse, and touch
nothing: not the folder outside, not the installation, not the config database.

Each test gets a fresh installation whose folders (``crm/``, ``staging/``, ``backups/``) live in one
folder, the allowed root. Beside it lies a folder "outside" the root holding a victim file, owned by the
host's service user (so only the policy, not file permissions, keeps an operation out), and inside the
root a symlink ``link`` leading to it: a path through ``link`` is under the root as written but not as
it really is.
"""

from __future__ import annotations

import os
import pwd
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from crm_estate import Estate, Installation
from managed_upgrade.operations.backup import BackupTarget, create_backup, prune_backups
from managed_upgrade.operations.fix_bundle import BundleFile, FixBundle, apply_fix_bundle
from managed_upgrade.operations.restore import restore_backup
from managed_upgrade.operations.settings_snapshot import capture_settings, reapply_settings, save_snapshot
from managed_upgrade.operations.staging import StagingTarget, stage_to_host
from managed_upgrade.operations.upgrade import UpgradePlan, prepare_upgrade
from managed_upgrade.transport.database import DbTarget, table_contents
from managed_upgrade.transport.path_policy import PathPolicyError
from managed_upgrade.transport.remote import RemoteCommandError, RemoteHost

pytestmark = pytest.mark.integration


@dataclass
class Area:
    installation: Installation
    host: RemoteHost
    db: DbTarget
    root: Path
    outside: Path

    @property
    def roots(self) -> tuple[str, ...]:
        return (str(self.root),)

    @property
    def link(self) -> str:
        return str(self.root / "link")

    def outside_state(self) -> dict[str, bytes | str]:
        """Everything under the outside folder: what must not change."""
        state: dict[str, bytes | str] = {}
        for path in sorted(self.outside.rglob("*")):
            key = str(path.relative_to(self.outside))
            state[key] = path.read_bytes() if path.is_file() else "dir"
        return state

    def install_state(self) -> dict[str, object]:
        return {
            "tree": self.host.run_agent("tree", str(self.installation.install_path))["entries"],
            "settings": table_contents(self.db, "crm_settings"),
            "root": sorted(os.listdir(self.root)),
        }


@pytest.fixture
def area(estate: Estate, fresh_installation, remote_host, db_target) -> Iterator[Area]:
    installation = fresh_installation("dev", "10.2.0")
    root = installation.install_path.parent
    outside = root.parent / f"outside-{uuid.uuid4().hex[:10]}"
    (outside / "staging" / "11.0.0").mkdir(parents=True)
    (outside / "victim").write_text("keep me\n")
    (outside / "app").mkdir()
    for name in ("installer.py", "SHA256SUMS"):  # a "release" outside the root
        (outside / "staging" / "11.0.0" / name).write_text("print('must not run')\n")
    (root / "link").symlink_to(outside, target_is_directory=True)
    user = pwd.getpwnam(estate.user)
    for path in (outside, *outside.rglob("*")):
        os.chown(path, user.pw_uid, user.pw_gid)
    os.chown(root / "link", user.pw_uid, user.pw_gid, follow_symlinks=False)
    try:
        yield Area(installation, remote_host("dev"), db_target(installation.db_name), root, outside)
    finally:
        shutil.rmtree(outside, ignore_errors=True)


# --- deleting ---------------------------------------------------------------------------------------


def test_remove_tree_removes_inside_the_roots(area: Area) -> None:
    scratch = f"{area.root}/scratch/deeper"
    area.host.makedirs(scratch)
    area.host.write_bytes(f"{scratch}/file", b"x")
    assert area.host.remove_tree(f"{area.root}/scratch", area.roots) is True
    assert not (area.root / "scratch").exists()


def test_remove_tree_refuses_outside_the_roots_as_written(area: Area) -> None:
    before = area.outside_state()
    for path in (str(area.outside / "victim"), f"{area.root}/../{area.outside.name}/victim", str(area.root)):
        with pytest.raises(PathPolicyError, match=r"refusing to remove .*allowed root"):
            area.host.remove_tree(path, area.roots)
    with pytest.raises(PathPolicyError, match="is in the system directory /etc"):
        area.host.remove_tree("/etc/hostname")  # no roots given: the always-refused rules still hold
    assert area.outside_state() == before


def test_the_host_agent_refuses_a_path_that_really_leads_out_of_the_roots(area: Area) -> None:
    before = area.outside_state()
    with pytest.raises(
        RemoteCommandError, match=r"refusing to remove .*/link/victim: it is really .*/victim"
    ):
        area.host.remove_tree(f"{area.link}/victim", area.roots)  # under the root as written
    with pytest.raises(RemoteCommandError, match="is in the system directory /etc"):
        area.host.run_agent("remove", "/tmp/../etc/hostname")  # the agent checks on its own, too
    assert area.outside_state() == before
    assert area.host.remove_tree(area.link, area.roots) is True  # the symlink itself, never its target
    assert area.outside_state() == before


# --- writing: backup, prune, restore, staging, upgrade, settings, fixes ------------------------------


def _target(area: Area, backup_path: str) -> BackupTarget:
    return BackupTarget(
        customer_id=area.installation.customer_id,
        environment="dev",
        host=area.host,
        install_path=str(area.installation.install_path),
        backup_path=backup_path,
        database=area.db,
        allowed_roots=area.roots,
    )


def test_backup_refuses_a_backup_folder_outside_the_roots(area: Area) -> None:
    before = area.outside_state()
    with pytest.raises(PathPolicyError, match=r"refusing to write backups to .* not under the allowed roots"):
        _target(area, str(area.outside / "backups"))
    with pytest.raises(
        PathPolicyError, match=r"refusing to write a backup to .*/link/backups/.* resolves to"
    ):
        create_backup(_target(area, f"{area.link}/backups"))
    with pytest.raises(PathPolicyError, match=r"refusing to prune backups in .* resolves to"):
        prune_backups(
            area.host, f"{area.link}", 1, keep="20270101T000000Z-dev-abcdef", allowed_roots=area.roots
        )
    assert area.outside_state() == before


def test_restore_refuses_an_installation_that_leads_out_of_the_roots(area: Area) -> None:
    backup = create_backup(_target(area, str(area.installation.backup_path)))
    install = str(area.installation.install_path)
    before, outside_before = area.install_state(), area.outside_state()

    with pytest.raises(PathPolicyError, match=r"refusing to restore .* not under the allowed roots"):
        restore_backup(
            area.host,
            install,
            str(area.installation.backup_path),
            backup.backup_id,
            area.db,
            (str(area.outside),),
        )
    # the installation moved outside, a symlink left in its place: lexically fine, really outside
    moved = area.outside / "crm"
    os.rename(install, moved)
    os.symlink(moved, install)
    try:
        with pytest.raises(PathPolicyError, match=r"refusing to restore .*/crm: it resolves to .*/outside-"):
            restore_backup(
                area.host, install, str(area.installation.backup_path), backup.backup_id, area.db, area.roots
            )
    finally:
        os.unlink(install)
        os.rename(moved, install)
    assert area.install_state() == before  # no folder swapped or unpacked, the config DB not restored
    assert area.outside_state() == outside_before


def test_staging_refuses_a_staging_folder_that_leads_out_of_the_roots(area: Area) -> None:
    before = area.outside_state()
    release = SimpleNamespace(version="11.1.0", files=[])
    with pytest.raises(PathPolicyError, match=r"refusing to stage a release in .*/link/staging/11.1.0"):
        stage_to_host(release, StagingTarget("dev", area.host, f"{area.link}/staging", area.roots))  # type: ignore[arg-type]
    assert area.outside_state() == before


def test_upgrade_refuses_to_run_an_installer_from_outside_the_roots(area: Area) -> None:
    backup = create_backup(_target(area, str(area.installation.backup_path)))
    plan = UpgradePlan(
        str(area.installation.install_path),
        f"{area.link}/staging",  # holds an installer.py, outside the root
        str(area.installation.backup_path),
        backup.backup_id,
        "11.0.0",
        area.roots,
    )
    before = area.install_state()
    with pytest.raises(PathPolicyError, match=r"refusing to run an installer from .*/link/staging/11.0.0"):
        prepare_upgrade(area.host, plan, area.db)
    assert not area.host.exists(plan.snapshot_path)  # nothing written into the backup either
    assert area.install_state() == before


def test_settings_are_never_written_outside_the_roots(area: Area) -> None:
    before = area.outside_state()
    install = str(area.installation.install_path)
    snapshot = capture_settings(area.host, install, area.db, version="10.2.0")
    with pytest.raises(PathPolicyError, match="refusing to write the settings snapshot to"):
        save_snapshot(area.host, f"{area.link}/snapshot.json", snapshot, allowed_roots=area.roots)
    with pytest.raises(PathPolicyError, match="refusing to re-apply settings to"):
        reapply_settings(area.host, install, area.db, snapshot, allowed_roots=(str(area.outside),))
    assert area.outside_state() == before


def test_fix_bundle_refuses_an_install_folder_that_leads_out_of_the_roots(area: Area) -> None:
    before = area.outside_state()
    bundle = FixBundle.create(files=[BundleFile.of("victim", b"overwritten\n", 0o644)])
    with pytest.raises(PathPolicyError, match=r"refusing to apply a fix to .*/link/app: it resolves to"):
        apply_fix_bundle(
            area.host, f"{area.link}/app", area.db, bundle, label="dev", allowed_roots=area.roots
        )
    assert area.outside_state() == before
