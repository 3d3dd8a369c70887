"""Hostile values through every path that reaches a remote shell or SQL: rejected, or passed literally.

Each payload would, if a shell ever interpreted it, create a canary file or delete a victim
directory on the host. Values with a strict pattern (paths, versions, backup ids, database names,
release file names) must be rejected with an error naming the value; values that are free text by
nature (file names on the host, setting keys and values) must arrive literally. After every test
the canary must be absent and the victim present.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from crm_estate import Estate
from managed_upgrade.errors import ManifestError
from managed_upgrade.operations.backup import BackupTarget, create_backup
from managed_upgrade.operations.installation import read_version
from managed_upgrade.operations.release_source import DirectoryReleaseSource, fetch_release
from managed_upgrade.operations.restore import restore_backup
from managed_upgrade.operations.settings_files import parse_properties
from managed_upgrade.operations.settings_snapshot import (
    SettingsError,
    SettingsSnapshot,
    capture_settings,
    read_db_settings,
    reapply_settings,
)
from managed_upgrade.operations.staging import release_directory
from managed_upgrade.operations.upgrade import UpgradePlan
from managed_upgrade.transport.database import DbTarget
from managed_upgrade.transport.manifest import Manifest
from managed_upgrade.transport.transfer import OpenSshSender, ParamikoSender

pytestmark = pytest.mark.integration

BACKUP_ID = "20260101T120000Z-dev-0a1b2c"


@pytest.fixture
def traps(estate: Estate) -> Iterator[SimpleNamespace]:
    """A canary path that must never appear, a victim directory that must survive, and the payloads."""
    base = estate.layout.host_dir("dev") / "isolated" / f"injection-{uuid.uuid4().hex[:10]}"
    victim = base / "victim"
    victim.mkdir(parents=True)
    canary = base / "canary"
    payloads = [
        f"1.0; rm -rf {victim}",
        f"$(touch {canary})",
        f"`touch {canary}`",
        f"'; touch {canary}; '",
        f'"; touch {canary}; "',
        f"x && touch {canary}",
        f"x | touch {canary}",
        f"a b\ntouch {canary}",
        f"x > {canary}",
    ]
    yield SimpleNamespace(base=base, victim=victim, canary=canary, payloads=payloads)
    try:
        assert not canary.exists(), "an injected command ran"
        assert victim.is_dir(), "an injected rm ran"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def with_rm_root(payloads: list[str]) -> list[str]:
    """Validation-only tests also get the classic, which must never get anywhere near a shell."""
    return ["1.0; rm -rf /", *payloads]


# --------------------------------------------------------------- values with a strict pattern


def test_paths_versions_and_backup_ids_are_rejected_before_any_command(traps, remote_host, db_target) -> None:
    host = remote_host("dev")
    db = DbTarget("127.0.0.1", 5432, "postgres", "postgres")
    good = {
        "install_path": "/srv/crm",
        "staging_path": "/srv/staging",
        "backup_path": "/srv/backups",
        "backup_id": BACKUP_ID,
        "target_version": "11.0.0",
    }
    for payload in with_rm_root(traps.payloads):
        for field in good:
            with pytest.raises(ValueError, match=r"not a valid|not valid") as error:
                UpgradePlan(**{**good, field: payload})
            assert repr(payload) in str(error.value)
        for path_field in ("install_path", "backup_path"):
            values = {"install_path": "/srv/crm", "backup_path": "/srv/backups", path_field: payload}
            with pytest.raises(ValueError, match="not a valid absolute path"):
                BackupTarget("acme", "dev", host, database=db, **values)
        with pytest.raises(ValueError, match="not a valid"):
            release_directory("/srv/staging", payload)
        with pytest.raises(ValueError, match="not a valid"):
            release_directory(payload, "11.0.0")
        with pytest.raises(ValueError, match="not a valid version"):
            DirectoryReleaseSource("/srv/releases", "aurea-crm", payload)
        with pytest.raises(ValueError, match="not a valid absolute path"):
            read_version(host, payload)
        with pytest.raises(ValueError, match="not a valid"):
            restore_backup(host, payload, "/srv/backups", BACKUP_ID, db)
        with pytest.raises(ValueError, match="backup id"):
            restore_backup(host, "/srv/crm", "/srv/backups", payload, db)
        with pytest.raises(ValueError, match="not a valid absolute path"):
            capture_settings(host, payload, db)


def test_database_names_are_rejected(traps) -> None:
    for payload in with_rm_root(traps.payloads):
        with pytest.raises(ValueError, match=r"database name .* is not allowed"):
            DbTarget("127.0.0.1", 5432, "postgres", payload)


def test_release_file_names_in_a_manifest_are_rejected(traps, tmp_path: Path) -> None:
    for payload in with_rm_root(traps.payloads):
        line = payload.splitlines()[0]
        with pytest.raises(ManifestError):
            Manifest.parse(f"{'a' * 64}  {line}\n")
    release = tmp_path / "repo" / "aurea-crm" / "11.0.0"
    release.mkdir(parents=True)
    (release / "installer.py").write_text("x")
    (release / "SHA256SUMS").write_text(f"{'b' * 64}  $(touch {traps.canary})\n")
    with pytest.raises(ManifestError, match="file name"):
        fetch_release(
            DirectoryReleaseSource(tmp_path / "repo", "aurea-crm", "11.0.0"), "aurea-crm", "11.0.0", tmp_path
        )


def test_operators_reject_hostile_templated_values_before_connecting(traps) -> None:
    from managed_upgrade_airflow.operators.stage_release import StageReleaseOperator
    from managed_upgrade_airflow.operators.upgrade_environment import UpgradeEnvironmentOperator

    for payload in with_rm_root(traps.payloads):
        stage = StageReleaseOperator(
            task_id="stage", release_conn_id="missing", product="aurea-crm", version=payload, environments={}
        )
        with pytest.raises(ValueError, match="not a valid version"):
            stage.execute({})  # type: ignore[arg-type]
        upgrade = UpgradeEnvironmentOperator(
            task_id="upgrade",
            environment="dev",
            ssh_conn_id="missing",
            db_conn_id="missing",
            install_path="/srv/crm",
            staging_path="/srv/staging",
            backup_path="/srv/backups",
            backup_id=BACKUP_ID,
            target_version=payload,
        )
        with pytest.raises(ValueError, match="not a valid version"):
            upgrade.execute({})  # type: ignore[arg-type]


# ----------------------------------------------------------------- values passed literally


def test_command_arguments_reach_the_host_literally(traps, remote_host) -> None:
    host = remote_host("dev")
    for payload in traps.payloads:
        assert host.run(["printf", "%s", payload]).text == payload


def test_file_names_on_the_host_are_literal(traps, remote_host, tmp_path: Path) -> None:
    host = remote_host("dev")
    local = tmp_path / "data.bin"
    local.write_bytes(b"payload bytes")
    for index, payload in enumerate(traps.payloads):
        name = payload.replace("/", "_")  # a file name, not a path
        directory = traps.base / f"dir {index} {name}"
        host.makedirs(str(directory))
        assert directory.is_dir()
        for sender in (OpenSshSender(host.endpoint, "dev"), ParamikoSender(host)):
            target = directory / f"{sender.name} {name}"
            received = sender.send(local, str(target))
            assert target.read_bytes() == b"payload bytes"
            assert received.size == len(b"payload bytes")
            assert host.sha256(str(target)) == received.sha256
        host.remove_tree(str(directory))
        assert not directory.exists()


def test_the_detached_job_wrapper_keeps_arguments_literal(traps, remote_host) -> None:
    import shlex

    from airflow.providers.ssh.utils.remote_job import RemoteJobPaths, build_posix_wrapper_command

    host = remote_host("dev")
    for index, payload in enumerate(traps.payloads):
        paths = RemoteJobPaths(job_id=f"job{index}", remote_os="posix", base_dir=str(traps.base / "jobs"))
        wrapper = build_posix_wrapper_command(command=shlex.join(["printf", "%s", payload]), paths=paths)
        host.run(["bash", "-c", wrapper])
        deadline = time.monotonic() + 30
        while not Path(paths.exit_code_file).exists():
            assert time.monotonic() < deadline, "the detached job never finished"
            time.sleep(0.1)
        assert Path(paths.exit_code_file).read_text() == "0"
        assert Path(paths.log_file).read_text() == payload


def test_setting_keys_and_values_are_literal_in_files_and_sql(
    traps, fresh_installation, remote_host, db_target
) -> None:
    installation = fresh_installation("dev", "10.2.0")
    host, db = remote_host("dev"), db_target(installation.db_name)
    snapshot = capture_settings(host, str(installation.install_path), db)
    values = [payload for payload in traps.payloads if "\n" not in payload]
    files = {name: dict(settings) for name, settings in snapshot.files.items()}
    database = dict(snapshot.database)
    for index, value in enumerate(values):
        files["system.properties"][f"custom.key{index}"] = value
        database[f"custom.key{index} {value}"] = value  # table keys are data: anything goes
    hostile = SettingsSnapshot(snapshot.captured_at, snapshot.install_path, files, database)

    reapply_settings(host, str(installation.install_path), db, hostile)

    system = parse_properties((installation.install_path / "settings" / "system.properties").read_text())
    in_db = read_db_settings(db)
    for index, value in enumerate(values):
        assert system[f"custom.key{index}"] == value
        assert in_db[f"custom.key{index} {value}"] == value
    assert len(in_db) == len(database)


def test_setting_values_that_look_like_file_syntax_are_written_back_escaped_never_as_new_lines(
    traps, fresh_installation, remote_host, db_target
):
    installation = fresh_installation("dev", "10.2.0")
    host, db = remote_host("dev"), db_target(installation.db_name)
    snapshot = capture_settings(host, str(installation.install_path), db)
    settings_file = installation.install_path / "settings" / "system.properties"
    hostile = {
        "ui.theme": f"a\nevil.key=$(touch {traps.canary})",
        f"bad key $(touch {traps.canary})": "x",
        "#not.a.comment": "y",
    }
    files = {**snapshot.files, "system.properties": {**snapshot.files["system.properties"], **hostile}}
    reapply_settings(
        host,
        str(installation.install_path),
        db,
        SettingsSnapshot(snapshot.captured_at, snapshot.install_path, files, snapshot.database),
    )

    assert parse_properties(settings_file.read_text()) == files["system.properties"]  # no key injected
    assert "evil.key" not in parse_properties(settings_file.read_text())
    assert not traps.canary.exists()

    before = settings_file.read_text()
    nul = {**snapshot.files, "system.properties": {"ui.theme": "a\x00b"}}
    with pytest.raises(SettingsError, match="cannot be written back"):
        reapply_settings(
            host,
            str(installation.install_path),
            db,
            SettingsSnapshot(snapshot.captured_at, snapshot.install_path, nul, snapshot.database),
        )
    assert settings_file.read_text() == before


def test_a_backup_with_hostile_file_names_in_the_install_folder_round_trips(
    traps, fresh_installation, remote_host, db_target
) -> None:
    installation = fresh_installation("dev", "10.2.0")
    host, db = remote_host("dev"), db_target(installation.db_name)
    for index, payload in enumerate(traps.payloads):
        (installation.install_path / "logs" / f"{index} {payload.replace('/', '_')}").write_text(payload)
    tree = host.run_agent("tree", str(installation.install_path))["entries"]
    target = BackupTarget(
        installation.customer_id,
        "dev",
        host,
        str(installation.install_path),
        str(installation.backup_path),
        db,
    )
    backup = create_backup(target)
    shutil.rmtree(installation.install_path / "logs")
    restore_backup(host, str(installation.install_path), str(installation.backup_path), backup.backup_id, db)
    assert host.run_agent("tree", str(installation.install_path))["entries"] == tree
