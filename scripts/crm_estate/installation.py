"""Provisions a fake aurea-crm installation and its config DB at a given version.

An installation is what a customer environment looks like before an upgrade: the release's
files, customer customizations in settings/*.properties and in crm_settings (so the installer's
settings reset has something to destroy and "re-apply settings" something to restore), a
database.properties pointing at its config DB, and business data in that DB.
"""

from __future__ import annotations

import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from crm_estate.catalogue import release_content, render_properties
from crm_estate.database import PgServer, check_db_name
from crm_estate.releases import PAYLOAD
from managed_upgrade.operations.settings_files import parse_properties

ACCOUNTS = 20
CONTACTS_PER_ACCOUNT = 2
COUNTRIES = ("DE", "US", "FR", "GB", "NL")
FAULT_FILE = ".installer-fault"


@dataclass(frozen=True)
class Installation:
    """One provisioned installation (paths on the simulated host, its config DB)."""

    customer_id: str
    env: str
    version: str
    install_path: Path
    staging_path: Path
    backup_path: Path
    db_name: str

    @property
    def crm(self) -> Path:
        return self.install_path / "bin" / "crm"

    @property
    def fault_file(self) -> Path:
        return self.install_path / FAULT_FILE


def customer_file_settings(customer_id: str) -> dict[str, dict[str, str]]:
    """Settings a customer changed in settings/*.properties (all differ from every release default)."""
    domain = customer_id.replace("_", "-") + ".example.com"
    return {
        "system.properties": {"session.timeout.minutes": "90", "locale.default": "de_DE"},
        "mail.properties": {"mail.smtp.host": f"smtp.{domain}", "mail.sender": f"crm@{domain}"},
        "integration.properties": {
            "integration.erp.enabled": "true",
            "integration.erp.endpoint": f"https://erp.{domain}/api",
        },
    }


def customer_db_settings() -> dict[str, str]:
    """crm_settings values a customer changed (all differ from every release default)."""
    return {"password.min_length": "12", "report.row_limit": "50000", "export.format": "xlsx"}


def _write_settings(install_path: Path, customer_id: str, server: PgServer, db_name: str) -> None:
    settings = install_path / "settings"
    for name, changes in customer_file_settings(customer_id).items():
        path = settings / name
        values = parse_properties(path.read_text())
        values.update(changes)
        path.write_text(render_properties(values, f"customized by {customer_id}"))
    database = {"host": server.host, "port": str(server.port), "dbname": db_name, "user": server.user}
    (settings / "database.properties").write_text(render_properties(database, "config database"))


def _extract_release_files(release_dir: Path, install_path: Path) -> None:
    with tarfile.open(release_dir / PAYLOAD, "r:gz") as archive:
        members = [
            member
            for member in archive.getmembers()
            if member.name.split("/", 1)[0] in {"bin", "lib", "modules", "settings"}
        ]
        archive.extractall(install_path, members=members, filter="data")


def provision_config_db(
    server: PgServer,
    db_name: str,
    version: str,
    customer_id: str,
    owner_tag: str,
    reader_role: str | None = None,
) -> None:
    """Create the DB fresh: baseline schema, business data, later migrations, settings, version; then
    let ``reader_role`` (the read-only test role) read it."""
    check_db_name(db_name)
    content = release_content(version)
    server.create_database(db_name, owner_tag)
    conn = server.connect(db_name)
    try:
        with conn, conn.cursor() as cur:
            migrations = list(content.migrations.items())
            baseline_version, baseline_sql = migrations[0]
            cur.execute(baseline_sql)
            cur.execute("INSERT INTO crm_migration_history (version) VALUES (%s)", (baseline_version,))
            for number in range(1, ACCOUNTS + 1):
                cur.execute(
                    "INSERT INTO crm_accounts (name, country) VALUES (%s, %s) RETURNING id",
                    (f"{customer_id} account {number:03d}", COUNTRIES[number % len(COUNTRIES)]),
                )
                (account_id,) = cur.fetchone()
                for contact in range(1, CONTACTS_PER_ACCOUNT + 1):
                    cur.execute(
                        "INSERT INTO crm_contacts (account_id, email) VALUES (%s, %s)",
                        (account_id, f"contact{contact}.account{number:03d}@{customer_id}.example.com"),
                    )
            for migration_version, migration_sql in migrations[1:]:
                cur.execute(migration_sql)
                cur.execute("INSERT INTO crm_migration_history (version) VALUES (%s)", (migration_version,))
            cur.execute("INSERT INTO crm_schema_version (version) VALUES (%s)", (version,))
            settings = {**content.db_settings, **customer_db_settings()}
            cur.executemany("INSERT INTO crm_settings (key, value) VALUES (%s, %s)", sorted(settings.items()))
    finally:
        conn.close()
    if reader_role is not None:
        server.grant_reader(db_name, reader_role)


def provision_installation(
    *,
    server: PgServer,
    release_dir: Path,
    owner_tag: str,
    customer_id: str,
    env: str,
    version: str,
    install_path: Path,
    staging_path: Path,
    backup_path: Path,
    db_name: str,
    reader_role: str | None = None,
) -> Installation:
    """(Re)create the installation at ``install_path`` and its config DB at ``version``.

    Paths must already be checked to lie inside the estate root (the caller owns that rule)."""
    if install_path.exists():
        shutil.rmtree(install_path)
    install_path.mkdir(parents=True)
    _extract_release_files(release_dir, install_path)
    (install_path / "logs").mkdir()
    (install_path / "VERSION").write_text(f"{version}\n")
    _write_settings(install_path, customer_id, server, db_name)
    staging_path.mkdir(parents=True, exist_ok=True)
    backup_path.mkdir(parents=True, exist_ok=True)
    provision_config_db(server, db_name, version, customer_id, owner_tag, reader_role)
    return Installation(
        customer_id=customer_id,
        env=env,
        version=version,
        install_path=install_path,
        staging_path=staging_path,
        backup_path=backup_path,
        db_name=db_name,
    )
