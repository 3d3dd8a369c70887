"""Backups and restores of a real estate environment: verified pieces, retention, and an exact round trip."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg2
import pytest

from crm_estate import Estate, Installation
from managed_upgrade.errors import BackupError, OperationError, RestoreError
from managed_upgrade.ledger import Ledger, migrate
from managed_upgrade.operations.backup import BackupTarget, create_backup, list_backups
from managed_upgrade.operations.release_source import DirectoryReleaseSource, fetch_release
from managed_upgrade.operations.restore import restore_backup
from managed_upgrade.operations.staging import StagingTarget, stage_release
from managed_upgrade.operations.upgrade import UpgradePlan, run_installer
from managed_upgrade.transport.database import DbTarget, restore_database, table_contents
from managed_upgrade.transport.remote import RemoteHost

pytestmark = pytest.mark.integration


@dataclass
class Env:
    installation: Installation
    host: RemoteHost
    db: DbTarget

    @property
    def install_path(self) -> str:
        return str(self.installation.install_path)

    @property
    def backup_path(self) -> str:
        return str(self.installation.backup_path)

    def target(self, retention: int = 3) -> BackupTarget:
        return BackupTarget(
            customer_id=self.installation.customer_id,
            environment="dev",
            host=self.host,
            install_path=self.install_path,
            backup_path=self.backup_path,
            database=self.db,
            retention=retention,
        )

    def tree(self) -> list[dict[str, Any]]:
        return self.host.run_agent("tree", self.install_path)["entries"]


@pytest.fixture
def env(fresh_installation, remote_host, db_target) -> Env:
    installation = fresh_installation("dev", "10.2.0")
    return Env(installation, remote_host("dev"), db_target(installation.db_name))


def clock(start: datetime) -> Iterator[datetime]:
    moment = start
    while True:
        yield moment
        moment += timedelta(minutes=1)


def test_a_backup_holds_a_verified_archive_manifest_dump_and_descriptor(env: Env) -> None:
    result = create_backup(env.target())
    directory = Path(result.directory)
    assert sorted(p.name for p in directory.iterdir()) == [
        "backup.json",
        "config-db.dump",
        "install.manifest.json",
        "install.tar.zst",
    ]
    descriptor = json.loads((directory / "backup.json").read_text())
    assert descriptor == result.descriptor
    assert descriptor["version"] == "10.2.0"
    assert descriptor["customer_id"] == env.installation.customer_id
    assert descriptor["database"]["name"] == env.installation.db_name
    assert descriptor["install_path"] == env.install_path
    for item in descriptor["files"]:
        assert env.host.sha256(str(directory / item["name"])) == item["sha256"]
        assert (directory / item["name"]).stat().st_size == item["size"]
    manifest = json.loads((directory / "install.manifest.json").read_text())["entries"]
    assert {e["path"] for e in manifest} >= {"VERSION", "bin/crm", "settings/system.properties"}
    assert descriptor["entries"] == len(manifest)
    listing = subprocess.run(
        ["tar", "--zstd", "-tf", str(directory / "install.tar.zst")], capture_output=True, check=True
    )
    assert "./VERSION" in listing.stdout.decode().splitlines()
    toc = subprocess.run(
        ["pg_restore", "--list", str(directory / "config-db.dump")], capture_output=True, check=True
    )
    assert "TABLE public crm_settings" in toc.stdout.decode()
    assert not list(Path(env.backup_path).glob("*.partial"))


def test_retention_keeps_the_newest_n_and_removes_abandoned_partials(env: Env) -> None:
    times = clock(datetime(2026, 3, 1, 9, tzinfo=UTC))
    ids = [create_backup(env.target(retention=2), now=lambda: next(times)).backup_id for _ in range(2)]
    abandoned = Path(env.backup_path) / "20260301T085900Z-dev-abcdef.partial"
    abandoned.mkdir()
    third = create_backup(env.target(retention=2), now=lambda: next(times))
    assert third.pruned == (ids[0],)
    assert [d["backup_id"] for d in list_backups(env.host, env.backup_path)] == [ids[1], third.backup_id]
    assert not abandoned.exists()


def test_retention_never_removes_the_backup_just_made(env: Env) -> None:
    later = clock(datetime(2026, 3, 2, 9, tzinfo=UTC))
    existing = create_backup(env.target(), now=lambda: next(later)).backup_id
    skewed = create_backup(env.target(retention=1), now=lambda: datetime(2026, 3, 1, 9, tzinfo=UTC))
    assert skewed.pruned == ()
    assert {d["backup_id"] for d in list_backups(env.host, env.backup_path)} == {existing, skewed.backup_id}


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_round_trip_restores_exactly_what_the_installer_changed(
    estate: Estate, env: Env, tmp_path: Path, compression: str
) -> None:
    tree_before = env.tree()
    db_before = table_contents(env.db)
    backup = create_backup(env.target(), compression=compression)  # type: ignore[arg-type]
    assert backup.descriptor["compression"] == compression

    estate.ensure_release("11.0.0")
    source = DirectoryReleaseSource(estate.releases_dir, "aurea-crm", "11.0.0")
    release = fetch_release(source, "aurea-crm", "11.0.0", tmp_path / "cache")
    staging = str(env.installation.staging_path)
    stage_release(release, [StagingTarget("dev", env.host, staging)])
    plan = UpgradePlan(env.install_path, staging, env.backup_path, backup.backup_id, "11.0.0")
    assert run_installer(env.host, plan) == 0
    assert (env.installation.install_path / "VERSION").read_text() == "11.0.0\n"
    assert env.tree() != tree_before
    assert table_contents(env.db) != db_before

    result = restore_backup(env.host, env.install_path, env.backup_path, backup.backup_id, env.db)

    assert result.version == "10.2.0"
    assert result.status.ok
    assert env.tree() == tree_before  # paths, types, modes, sizes and sha256 of every file
    assert table_contents(env.db) == db_before  # tables the upgrade added are gone too
    parent = env.installation.install_path.parent
    assert sorted(p.name for p in parent.iterdir() if p.name.startswith(".crm")) == []


@pytest.fixture
def small_backup_disk(env: Env) -> Iterator[Path]:
    """The environment's backup folder on a real file system of 256 KiB (a tmpfs), owned as before."""
    folder = env.installation.backup_path
    owner = folder.stat()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(folder)], check=True)
    os.chown(folder, owner.st_uid, owner.st_gid)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def test_a_backup_target_too_small_fails_clearly_before_anything_is_written(
    env: Env, small_backup_disk: Path
) -> None:
    tree_before = env.tree()

    with pytest.raises(BackupError, match=r"not enough space .* free, about .* needed.*Nothing was written"):
        create_backup(env.target())

    assert list(small_backup_disk.iterdir()) == []  # not even a partial folder
    assert env.tree() == tree_before


def test_a_disk_that_fills_during_the_backup_fails_it_and_leaves_no_partial_backup(
    env: Env, small_backup_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import managed_upgrade.operations.backup as backup

    monkeypatch.setattr(backup, "require_space", lambda host, target: None)  # as if df had lied

    with pytest.raises(OperationError, match=r"No space left on device"):
        create_backup(env.target())

    assert list(small_backup_disk.iterdir()) == []


def test_a_corrupt_backup_is_refused_before_anything_changes(env: Env) -> None:
    backup = create_backup(env.target())
    archive = Path(backup.directory) / "install.tar.zst"
    with archive.open("ab") as handle:
        handle.write(b"bit rot")
    (env.installation.install_path / "VERSION").write_text("11.0.0\n")
    tree_before = env.tree()
    db_before = table_contents(env.db)

    with pytest.raises(RestoreError, match=r"install\.tar\.zst is corrupt .*nothing was changed"):
        restore_backup(env.host, env.install_path, env.backup_path, backup.backup_id, env.db)

    assert env.tree() == tree_before
    assert table_contents(env.db) == db_before


def test_a_failing_database_restore_leaves_the_live_database_alone(env: Env, tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-dump"
    garbage.write_bytes(b"PGDMP but not really")
    before = table_contents(env.db)
    with pytest.raises(RestoreError, match=f"the live database {env.db.dbname} was not changed"):
        restore_database(env.db, garbage, "t1")
    assert table_contents(env.db) == before
    with env.db.admin() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s", (env.db.dbname + "__%",))
        assert cursor.fetchone()[0] == 0


def test_a_restored_database_keeps_the_comment_that_tags_it(env: Env, estate: Estate) -> None:
    backup = create_backup(env.target())
    restore_backup(env.host, env.install_path, env.backup_path, backup.backup_id, env.db)
    assert env.installation.db_name in estate.pg.tagged_databases(
        f"crm-estate config DB (root {estate.root})"
    )


@pytest.fixture
def ledger_connection(estate: Estate, airflow_connections) -> Iterator[str]:
    name = f"ledger_test_{uuid.uuid4().hex[:10]}"
    admin = estate.pg.connect()
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        connection = psycopg2.connect(estate.pg_dsn(name))
        migrate(connection)
        connection.close()
        conn = {
            "conn_type": "postgres",
            "host": estate.pg.host,
            "port": estate.pg.port,
            "login": estate.pg.user,
        }
        yield airflow_connections.add("managed_upgrade_ledger_test", {**conn, "schema": name}), name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_the_operator_backs_up_and_records_in_the_ledger(
    estate: Estate, fresh_installation, airflow_connections, ledger_connection
) -> None:
    from managed_upgrade_airflow.operators.backup_environment import BackupEnvironmentOperator

    ledger_conn_id, ledger_db = ledger_connection
    installation = fresh_installation("dev", "10.2.0")
    ssh_conn_id, db_conn_id = airflow_connections.add_installation(installation)
    operator = BackupEnvironmentOperator(
        task_id="backup_environment",
        customer_id=installation.customer_id,
        environment="dev",
        ssh_conn_id=ssh_conn_id,
        db_conn_id=db_conn_id,
        install_path=str(installation.install_path),
        backup_path=str(installation.backup_path),
        retention=1,
        ledger_conn_id=ledger_conn_id,
    )
    context = {
        "ti": SimpleNamespace(dag_id="managed_upgrade__test", run_id="manual__1", task_id="dev.backup")
    }
    first = operator.execute(context)  # type: ignore[arg-type]
    second = operator.execute(context)  # type: ignore[arg-type]
    assert second["pruned"] == [first["backup_id"]]
    assert second["version"] == "10.2.0"
    assert set(second["files"]) == {"install.tar.zst", "install.manifest.json", "config-db.dump"}
    connection = psycopg2.connect(estate.pg_dsn(ledger_db))
    rows = Ledger(connection).backups(installation.customer_id, "dev")
    connection.close()
    by_id = {row["backup_id"]: row for row in rows}
    assert by_id[first["backup_id"]]["pruned_at"] is not None
    assert by_id[second["backup_id"]]["pruned_at"] is None
    assert by_id[second["backup_id"]]["location"] == second["directory"]


def test_the_operator_waits_for_the_window_then_takes_one_backup_recorded_once(
    estate: Estate, fresh_installation, airflow_connections, ledger_connection, remote_host, monkeypatch
) -> None:
    """A backup protecting an upgrade waits, deferred, for the environment's window; its resume (after
    a retry that waited for the same opening) takes one backup, recorded once, with one scheduled wait."""
    from zoneinfo import ZoneInfo

    from airflow.sdk.exceptions import TaskDeferred

    from managed_upgrade.config import load_customer_config
    from managed_upgrade.config.run_settings import RunSettings
    from managed_upgrade_airflow.operators import upgrade_window
    from managed_upgrade_airflow.operators.backup_environment import BackupEnvironmentOperator

    berlin = ZoneInfo("Europe/Berlin")
    globex = load_customer_config(
        Path(__file__).resolve().parents[3] / "include" / "customers" / "globex.yaml"
    )
    environments = globex.environments
    windowed = globex.model_copy(  # dev gets prod's windows: fri/sat 22:00-06:00, sun 08:00-18:00
        update={
            "environments": environments.model_copy(
                update={
                    "dev": environments.dev.model_copy(
                        update={"upgrade_windows": environments.prod.upgrade_windows}
                    )
                }
            )
        }
    )
    ledger_conn_id, ledger_db = ledger_connection
    installation = fresh_installation("dev", "10.2.0")
    ssh_conn_id, db_conn_id = airflow_connections.add_installation(installation)
    operator = BackupEnvironmentOperator(
        task_id="dev.backup_environment",
        customer_id=installation.customer_id,
        environment="dev",
        ssh_conn_id=ssh_conn_id,
        db_conn_id=db_conn_id,
        install_path=str(installation.install_path),
        backup_path=str(installation.backup_path),
        retention=3,
        ledger_conn_id=ledger_conn_id,
        config=windowed,
    )
    settings = RunSettings("GLX-1", date(2027, 1, 4), date(2027, 1, 11), date(2027, 3, 31), "R", "11.0.0")
    pushed: dict[str, Any] = {}

    def push(key: str, value: Any) -> None:
        pushed[key] = value

    ti = SimpleNamespace(
        dag_id="managed_upgrade__test",
        run_id=f"manual__{uuid.uuid4().hex[:8]}",
        task_id="dev.backup_environment",
        try_number=1,
        xcom_push=push,
        xcom_pull=lambda task_ids, key="return_value": settings.to_conf(),
    )
    context = {"ti": ti, "dag_run": SimpleNamespace(start_date=datetime(2027, 1, 4, 9, tzinfo=UTC))}
    now = {"at": datetime(2027, 1, 6, 12, tzinfo=berlin)}  # Wednesday noon: outside the windows
    monkeypatch.setattr(upgrade_window, "_now", lambda: now["at"].astimezone(UTC))
    opening = datetime(2027, 1, 8, 22, tzinfo=berlin)

    for _ in range(2):  # the first try, and a retry before the opening
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute(context)  # type: ignore[arg-type]
        assert deferred.value.trigger.moment == opening
    assert pushed["upgrade_window"]["message"].startswith("the backup waits until Fri 2027-01-08 22:00 CET")
    now["at"] = opening + timedelta(seconds=4)
    summary = operator.execute_after_window(context, event={}, awaited=opening.astimezone(UTC).isoformat())  # type: ignore[arg-type]

    connection = psycopg2.connect(estate.pg_dsn(ledger_db))
    try:
        ledger = Ledger(connection)
        backups = ledger.backups(installation.customer_id, "dev")
        events = ledger.events(ti.dag_id, ti.run_id)
    finally:
        connection.close()
    assert [row["backup_id"] for row in backups] == [summary["backup_id"]]
    assert [(e["activity_key"], e["event"], e["try_number"]) for e in events] == [
        ("dev.backup_environment", "waiting_for_window", 1)
    ]
    assert events[0]["detail"]["until"] == opening.astimezone(UTC).isoformat()
    assert pushed["upgrade_window"]["waiting_for"] == "nothing"
    on_host = list_backups(remote_host("dev"), str(installation.backup_path))
    assert [entry["backup_id"] for entry in on_host] == [summary["backup_id"]]
