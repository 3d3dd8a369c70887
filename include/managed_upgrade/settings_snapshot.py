"""Captures a customer's settings before an upgrade and puts back every value the installer reset.

The vendor installer overwrites ``settings/*.properties`` and the ``crm_settings`` table with release
defaults ("Re-apply settings as needed" in the process). Before the upgrade the current values of
both (except ``database.properties``, which the installer leaves alone and which holds the DB
login) are captured into a JSON snapshot kept beside the backup. Afterwards the current values are
compared with it:

* a value that differs from the snapshot is restored (the customer's value wins);
* a value that is equal is unchanged;
* a key of the snapshot the new version no longer has ("vanished") is written back too, and flagged
  for the consultant (it may be obsolete, but silently dropping a customer setting is worse);
* a key the new version added is left at its default and reported.

Files are read and written through SFTP (atomic replace, original mode kept), never through a
shell, and ``crm_settings`` only with parameterized SQL, so keys and values are always literal.
A value that would break the ``key=value`` line format (line breaks, NUL) is refused.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg2 import sql

from managed_upgrade.backup import backup_dir
from managed_upgrade.database import DbTarget
from managed_upgrade.errors import OperationError
from managed_upgrade.remote import RemoteHost
from managed_upgrade.safe import require

log = logging.getLogger(__name__)

SETTINGS_DIR = "settings"
SETTINGS_SUFFIX = ".properties"
EXCLUDED_FILES = frozenset({"database.properties"})
SETTINGS_TABLE = "crm_settings"
SNAPSHOT_NAME = "settings.snapshot.json"
DB_SOURCE = f"db:{SETTINGS_TABLE}"
_KEY = re.compile(r"^[^\s=:#!][^\s=]*$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.properties$")
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|credential|private", re.IGNORECASE)


def shown(key: str, value: str) -> str:
    """``value`` for reports and logs, masked when the key looks like it holds a secret."""
    return "***" if _SECRET_KEY.search(key) else value


class SettingsError(OperationError):
    """A snapshot is malformed or a setting cannot be written back safely."""


def require_key(key: str, where: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise SettingsError(
            f"{where}: setting key {key!r} is not allowed (no spaces, '=', or leading '#', '!', ':')"
        )
    return key


def require_value(value: str, where: str) -> str:
    if not isinstance(value, str) or any(c in value for c in "\n\r\x00"):
        raise SettingsError(
            f"{where}: setting value {value!r} would break the key=value format (line break or NUL)"
        )
    return value


def parse_properties(text: str) -> dict[str, str]:
    """``key=value`` lines as the CRM reads them: blank lines and ``#`` comments ignored, last one wins."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, value = stripped.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def set_properties(text: str, changes: Mapping[str, str]) -> str:
    """``text`` with the values of ``changes`` set: lines edited in place, missing keys appended."""
    pending = dict(changes)
    lines = text.splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key = stripped.split("=", 1)[0].strip()
        if key in changes:
            lines[index] = f"{key}={changes[key]}"
            pending.pop(key, None)
    if pending:
        lines.append("# re-applied by the managed upgrade (not present in this release's file)")
        lines.extend(f"{key}={value}" for key, value in pending.items())
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SettingsSnapshot:
    """Customer settings at one moment: per properties file its values, and ``crm_settings``."""

    captured_at: str
    install_path: str
    files: dict[str, dict[str, str]]
    database: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "captured_at": self.captured_at,
            "install_path": self.install_path,
            "files": self.files,
            "database": self.database,
        }

    @classmethod
    def from_json(cls, data: Any, source: str) -> SettingsSnapshot:
        """Validate a stored snapshot (it is read back from a host, so it is checked like input)."""
        try:
            files = {str(name): dict(values) for name, values in data["files"].items()}
            database = dict(data["database"])
            snapshot = cls(str(data["captured_at"]), str(data["install_path"]), files, database)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise SettingsError(f"{source}: not a settings snapshot ({exc})") from exc
        for name, values in snapshot.files.items():
            if not _FILE_NAME.fullmatch(name) or name in EXCLUDED_FILES:
                raise SettingsError(f"{source}: settings file name {name!r} is not allowed")
            for key, value in values.items():
                require_key(key, f"{source}: {name}")
                require_value(value, f"{source}: {name}: {key}")
        for key, value in snapshot.database.items():
            if not isinstance(key, str) or not key or not isinstance(value, str):
                raise SettingsError(f"{source}: {SETTINGS_TABLE} entry {key!r}={value!r} is not text")
        return snapshot


@dataclass
class ReapplyReport:
    """What re-applying a snapshot did, per source (file name or ``db:crm_settings``) and key."""

    restored: list[dict[str, str]] = field(default_factory=list)  # {source, key, was, now}
    unchanged: list[dict[str, str]] = field(default_factory=list)  # {source, key}
    vanished: list[dict[str, str]] = field(
        default_factory=list
    )  # {source, key, value}: written back, flagged
    added: list[dict[str, str]] = field(default_factory=list)  # {source, key, value}: new default, left

    def summary(self) -> dict[str, Any]:
        """Compact, JSON-able (XCom); values of secret-looking keys masked."""

        def masked(items: list[dict[str, str]]) -> list[dict[str, str]]:
            return [
                {
                    name: shown(item["key"], text) if name in ("was", "now", "value") else text
                    for name, text in item.items()
                }
                for item in items
            ]

        return {
            "restored": masked(self.restored),
            "unchanged": len(self.unchanged),
            "vanished_kept": masked(self.vanished),
            "added_by_release": masked(self.added),
            "needs_review": bool(self.vanished),
        }


def snapshot_path(backup_path: str, backup_id: str) -> str:
    """Where the snapshot of the upgrade protected by ``backup_id`` is kept: inside that backup."""
    return posixpath.join(backup_dir(backup_path, backup_id), SNAPSHOT_NAME)


def _settings_files(host: RemoteHost, install_path: str) -> list[str]:
    directory = posixpath.join(install_path, SETTINGS_DIR)
    if not host.is_dir(directory):
        raise SettingsError(f"{host.label}: {directory} is missing")
    return [
        name
        for name in host.listdir(directory)
        if name.endswith(SETTINGS_SUFFIX) and name not in EXCLUDED_FILES and _FILE_NAME.fullmatch(name)
    ]


def read_db_settings(database: DbTarget) -> dict[str, str]:
    connection = database.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("SELECT key, value FROM {} ORDER BY key").format(sql.Identifier(SETTINGS_TABLE))
            )
            return {str(key): str(value) for key, value in cursor.fetchall()}
    finally:
        connection.close()


def capture_settings(host: RemoteHost, install_path: str, database: DbTarget) -> SettingsSnapshot:
    """Read every customer settings file and the ``crm_settings`` table."""
    require("absolute path", install_path)
    directory = posixpath.join(install_path, SETTINGS_DIR)
    files = {
        name: parse_properties(host.read_text(posixpath.join(directory, name)))
        for name in _settings_files(host, install_path)
    }
    return SettingsSnapshot(
        captured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        install_path=install_path,
        files=files,
        database=read_db_settings(database),
    )


def save_snapshot(host: RemoteHost, path: str, snapshot: SettingsSnapshot, overwrite: bool = False) -> bool:
    """Store ``snapshot`` at ``path``; an existing one is kept unless ``overwrite`` (returns whether written).

    Keeping the first snapshot matters on retries: a second capture after a half-run installer
    would record the reset defaults as the customer's settings.
    """
    if host.exists(path) and not overwrite:
        log.info("%s: keeping the existing settings snapshot %s", host.label, path)
        return False
    host.write_json(path, snapshot.to_json())
    return True


def load_snapshot(host: RemoteHost, path: str) -> SettingsSnapshot:
    try:
        data = host.read_json(path)
    except FileNotFoundError:
        raise SettingsError(f"{host.label}: no settings snapshot at {path}") from None
    return SettingsSnapshot.from_json(data, f"{host.label}:{path}")


def _reapply_file(
    host: RemoteHost, directory: str, name: str, saved: dict[str, str], report: ReapplyReport
) -> None:
    path = posixpath.join(directory, name)
    exists = host.exists(path)
    text = host.read_text(path) if exists else ""
    current = parse_properties(text)
    changes: dict[str, str] = {}
    for key, value in saved.items():
        require_key(key, path)
        require_value(value, f"{path}: {key}")
        if key not in current:
            report.vanished.append({"source": name, "key": key, "value": value})
            changes[key] = value
        elif current[key] != value:
            report.restored.append({"source": name, "key": key, "was": current[key], "now": value})
            changes[key] = value
        else:
            report.unchanged.append({"source": name, "key": key})
    report.added.extend(
        {"source": name, "key": key, "value": value} for key, value in current.items() if key not in saved
    )
    if changes:
        mode = (host.stat(path).st_mode or 0o644) & 0o7777 if exists else 0o644
        host.write_bytes(path, set_properties(text, changes).encode(), mode=mode)


def _reapply_database(database: DbTarget, saved: dict[str, str], report: ReapplyReport) -> None:
    table = sql.Identifier(SETTINGS_TABLE)
    connection = database.connect()
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(sql.SQL("SELECT key, value FROM {} FOR UPDATE").format(table))
            current = {str(key): str(value) for key, value in cursor.fetchall()}
            for key, value in saved.items():
                if key not in current:
                    report.vanished.append({"source": DB_SOURCE, "key": key, "value": value})
                    cursor.execute(
                        sql.SQL("INSERT INTO {} (key, value) VALUES (%s, %s)").format(table), (key, value)
                    )
                elif current[key] != value:
                    report.restored.append(
                        {"source": DB_SOURCE, "key": key, "was": current[key], "now": value}
                    )
                    cursor.execute(
                        sql.SQL("UPDATE {} SET value = %s WHERE key = %s").format(table), (value, key)
                    )
                else:
                    report.unchanged.append({"source": DB_SOURCE, "key": key})
            report.added.extend(
                {"source": DB_SOURCE, "key": key, "value": value}
                for key, value in current.items()
                if key not in saved
            )
    finally:
        connection.close()


def reapply_settings(
    host: RemoteHost, install_path: str, database: DbTarget, snapshot: SettingsSnapshot
) -> ReapplyReport:
    """Put every customer value of ``snapshot`` back (see the module docstring for the rules)."""
    require("absolute path", install_path)
    if snapshot.install_path != install_path:
        raise SettingsError(
            f"snapshot was taken of {snapshot.install_path}, not {install_path}; refusing to apply it"
        )
    directory = posixpath.join(install_path, SETTINGS_DIR)
    report = ReapplyReport()
    for name, saved in sorted(snapshot.files.items()):
        _reapply_file(host, directory, name, saved, report)
    for name in _settings_files(host, install_path):
        if name not in snapshot.files:  # a settings file the new version introduced
            values = parse_properties(host.read_text(posixpath.join(directory, name)))
            report.added.extend({"source": name, "key": key, "value": value} for key, value in values.items())
    _reapply_database(database, snapshot.database, report)
    for item in report.restored:
        was = shown(item["key"], item["was"])
        log.info(
            "%s: restored %s %s (the installer had set %r)", host.label, item["source"], item["key"], was
        )
    for item in report.vanished:
        log.warning(
            "%s: %s %s is not in the new version; written back, please review",
            host.label,
            item["source"],
            item["key"],
        )
    return report
