"""Captures a customer's settings before an upgrade and puts back every value the installer reset.

The vendor installer overwrites ``settings/*.properties`` and the ``crm_settings`` table with release
defaults ("Re-apply settings as needed" in the process). Before the upgrade the current values of
both (except ``database.properties``, which the installer leaves alone and which holds the DB
login) are captured into a JSON snapshot kept beside the backup, with the version they ran on.
Afterwards it is a three-way merge, as a version-control merge is: the snapshot (the customer's
side), the values after the installer (the new release's side) and, as common ancestor, the old
release's defaults (:mod:`managed_upgrade.operations.release_defaults`):

* a value the customer had changed from the old default is restored (the customer's value wins);
  when the new release changed that default too it is still restored, and flagged as a conflict;
* a value the customer had left at the old default keeps the new release's default: putting the
  old default back would silently undo the upgrade (a new theme, a new search engine);
* a value that is equal is unchanged;
* a customer key the new version no longer has ("vanished") is written back and flagged for the
  consultant (it may be obsolete, but silently dropping a customer setting is worse); an old
  default the new version dropped stays dropped;
* a key the new version added is left at its default and reported.

Without the old release's defaults (release no longer in the repository, a snapshot from before
versions were recorded) every differing value is restored, and the report asks for a review.

Files are read and written through SFTP (atomic replace, original mode kept), never through a
shell, and ``crm_settings`` only with parameterized SQL, so keys and values are always literal.
A value that would break the ``key=value`` line format (any line break ``str.splitlines`` knows, NUL) is
refused; the format itself is :mod:`~managed_upgrade.operations.settings_files`. Every file written
(snapshot, settings) is confined to the environment's allowed roots
(:func:`managed_upgrade.transport.path_policy.confine`) right before.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from psycopg2 import sql

from managed_upgrade.errors import OperationError
from managed_upgrade.markdown import code, md
from managed_upgrade.operations.backup import backup_dir
from managed_upgrade.operations.settings_files import (
    SETTINGS_DIR,
    SETTINGS_SUFFIX,
    parse_properties,
    set_properties,
)
from managed_upgrade.transport.database import DbTarget
from managed_upgrade.transport.path_policy import Roots, confine
from managed_upgrade.transport.remote import RemoteHost
from managed_upgrade.vocabulary import require

if TYPE_CHECKING:
    from managed_upgrade.operations.release_defaults import ReleaseDefaults

log = logging.getLogger(__name__)

EXCLUDED_FILES = frozenset({"database.properties"})
SETTINGS_TABLE = "crm_settings"
SNAPSHOT_NAME = "settings.snapshot.json"
DB_SOURCE = f"db:{SETTINGS_TABLE}"
REMOVED = "(removed by the new release)"  # reported as the "new" value of a dropped old default
MAX_KEY_LENGTH = 1024
MAX_VALUE_LENGTH = 65_536
_FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.properties$")
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|credential|private", re.IGNORECASE)


def shown(key: str, value: str) -> str:
    """``value`` for reports and logs, masked when the key looks like it holds a secret."""
    return "***" if _SECRET_KEY.search(key) else value


class SettingsError(OperationError):
    """A snapshot is malformed or a setting cannot be written back safely."""


def require_key(key: str, where: str) -> str:
    """A setting key as the CRM can hold it: text, no NUL, bounded. Files get it escaped as Java writes it."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH or _unwritable(key):
        raise SettingsError(
            f"{where}: setting key {key!r:.80} is not allowed (1-{MAX_KEY_LENGTH} characters, no NUL or "
            "lone surrogate)"
        )
    return key


def require_value(value: str, where: str) -> str:
    """A setting value: text, no NUL, bounded (line breaks are fine: the files escape them)."""
    if not isinstance(value, str) or len(value) > MAX_VALUE_LENGTH or _unwritable(value):
        raise SettingsError(
            f"{where}: setting value {value!r:.80} cannot be written back (at most {MAX_VALUE_LENGTH} "
            "characters, no NUL or lone surrogate)"
        )
    return value


def _unwritable(text: str) -> bool:
    return "\x00" in text or any("\ud800" <= character <= "\udfff" for character in text)


@dataclass(frozen=True)
class SettingsSnapshot:
    """Customer settings at one moment: per properties file its values, and ``crm_settings``."""

    captured_at: str
    install_path: str
    files: dict[str, dict[str, str]]
    database: dict[str, str]
    version: str | None = None  # the version these values ran on (unknown in format 1 snapshots)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 2,
            "captured_at": self.captured_at,
            "install_path": self.install_path,
            "version": self.version,
            "files": self.files,
            "database": self.database,
        }

    @classmethod
    def from_json(cls, data: Any, source: str) -> SettingsSnapshot:
        """Validate a stored snapshot (it is read back from a host, so it is checked like input)."""
        try:
            files = {str(name): dict(values) for name, values in data["files"].items()}
            database = dict(data["database"])
            version = data.get("version")
            snapshot = cls(
                str(data["captured_at"]),
                str(data["install_path"]),
                files,
                database,
                None if version is None else str(version),
            )
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
    """What re-applying a snapshot did, per source (file name or ``db:crm_settings``) and key.

    ``base`` is the version whose defaults served as common ancestor (None when unknown, with the
    reason in ``base_problem``).
    """

    base: str | None = None
    base_problem: str | None = None
    # {source, key, was, now}; a conflict also has old_default and new_default
    restored: list[dict[str, str]] = field(default_factory=list)
    unchanged: list[dict[str, str]] = field(default_factory=list)  # {source, key}
    vanished: list[dict[str, str]] = field(default_factory=list)  # {source, key, value}: written back
    new_defaults: list[dict[str, str]] = field(default_factory=list)  # {source, key, old, new}: kept
    added: list[dict[str, str]] = field(default_factory=list)  # {source, key, value}: new key, left

    @property
    def conflicts(self) -> list[dict[str, str]]:
        """Restored values whose default the new release changed as well."""
        return [item for item in self.restored if "new_default" in item]

    @property
    def needs_review(self) -> bool:
        return bool(self.vanished or self.conflicts or self.base is None)

    def summary(self) -> dict[str, Any]:
        """Compact, JSON-able (XCom); values of secret-looking keys masked."""
        values = ("was", "now", "value", "old", "new", "old_default", "new_default")

        def masked(items: list[dict[str, str]]) -> list[dict[str, str]]:
            return [
                {name: shown(item["key"], text) if name in values else text for name, text in item.items()}
                for item in items
            ]

        return {
            "base": self.base,
            "base_problem": self.base_problem,
            "restored": masked(self.restored),
            "conflicts": masked(self.conflicts),
            "unchanged": len(self.unchanged),
            "new_defaults_kept": masked(self.new_defaults),
            "vanished_kept": masked(self.vanished),
            "added_by_release": masked(self.added),
            "needs_review": self.needs_review,
        }


def merge_settings(
    source: str,
    saved: Mapping[str, str],
    current: Mapping[str, str],
    base: Mapping[str, str] | None,
    report: ReapplyReport,
) -> dict[str, str]:
    """The three-way merge of one source (rules in the module docstring); returns the values to write.

    ``base`` None means the old defaults are unknown: every customer value wins.
    """
    changes: dict[str, str] = {}
    for key, value in saved.items():
        customer_chose = base is None or base.get(key) != value
        if key not in current:
            if customer_chose:
                report.vanished.append({"source": source, "key": key, "value": value})
                changes[key] = value
            else:
                report.new_defaults.append({"source": source, "key": key, "old": value, "new": REMOVED})
        elif current[key] == value:
            report.unchanged.append({"source": source, "key": key})
        elif not customer_chose:
            report.new_defaults.append({"source": source, "key": key, "old": value, "new": current[key]})
        else:
            item = {"source": source, "key": key, "was": current[key], "now": value}
            if base is not None and key in base and base[key] != current[key]:
                item |= {"old_default": base[key], "new_default": current[key]}
            report.restored.append(item)
            changes[key] = value
    report.added.extend(
        {"source": source, "key": key, "value": value} for key, value in current.items() if key not in saved
    )
    return changes


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


def capture_settings(
    host: RemoteHost, install_path: str, database: DbTarget, version: str | None = None
) -> SettingsSnapshot:
    """Read every customer settings file and the ``crm_settings`` table (running on ``version``)."""
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
        version=version,
    )


def save_snapshot(
    host: RemoteHost,
    path: str,
    snapshot: SettingsSnapshot,
    overwrite: bool = False,
    allowed_roots: Roots = None,
) -> bool:
    """Store ``snapshot`` at ``path``; an existing one is kept unless ``overwrite`` (returns whether written).

    Keeping the first snapshot matters on retries: a second capture after a half-run installer
    would record the reset defaults as the customer's settings.
    """
    if host.exists(path) and not overwrite:
        log.info("%s: keeping the existing settings snapshot %s", host.label, path)
        return False
    confine(host, path, allowed_roots, action="write the settings snapshot to")
    host.write_json(path, snapshot.to_json())
    return True


def load_snapshot(host: RemoteHost, path: str) -> SettingsSnapshot:
    try:
        data = host.read_json(path)
    except FileNotFoundError:
        raise SettingsError(f"{host.label}: no settings snapshot at {path}") from None
    return SettingsSnapshot.from_json(data, f"{host.label}:{path}")


def _reapply_file(
    host: RemoteHost,
    directory: str,
    name: str,
    saved: dict[str, str],
    base: Mapping[str, str] | None,
    report: ReapplyReport,
    roots: Roots = None,
) -> None:
    path = posixpath.join(directory, name)
    for key, value in saved.items():
        require_key(key, path)
        require_value(value, f"{path}: {key}")
    exists = host.exists(path)
    text = host.read_text(path) if exists else ""
    changes = merge_settings(name, saved, parse_properties(text), base, report)
    if changes:
        attrs = host.stat(path) if exists else None
        mode = (attrs.st_mode or 0o644) & 0o7777 if attrs is not None else 0o644
        confine(host, path, roots, action="re-apply settings to")
        host.write_bytes(path, set_properties(text, changes).encode(), mode=mode)


def _reapply_database(
    database: DbTarget, saved: dict[str, str], base: Mapping[str, str] | None, report: ReapplyReport
) -> None:
    table = sql.Identifier(SETTINGS_TABLE)
    connection = database.connect()
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(sql.SQL("SELECT key, value FROM {} FOR UPDATE").format(table))
            current = {str(key): str(value) for key, value in cursor.fetchall()}
            changes = merge_settings(DB_SOURCE, saved, current, base, report)
            for key, value in changes.items():
                if key in current:
                    statement = sql.SQL("UPDATE {} SET value = %s WHERE key = %s").format(table)
                    cursor.execute(statement, (value, key))
                else:
                    statement = sql.SQL("INSERT INTO {} (key, value) VALUES (%s, %s)").format(table)
                    cursor.execute(statement, (key, value))
    finally:
        connection.close()


def reapply_settings(
    host: RemoteHost,
    install_path: str,
    database: DbTarget,
    snapshot: SettingsSnapshot,
    base: ReleaseDefaults | None = None,
    base_problem: str | None = None,
    allowed_roots: Roots = None,
) -> ReapplyReport:
    """Put every customer value of ``snapshot`` back (see the module docstring for the rules).

    ``base``: the defaults of the release the snapshot was taken on; without it (``base_problem``
    says why) every value that differs is restored. ``allowed_roots``: the environment's roots; every
    settings file written must really lie below one.
    """
    require("absolute path", install_path)
    confine(host, install_path, allowed_roots, action="re-apply settings to")
    if snapshot.install_path != install_path:
        raise SettingsError(
            f"snapshot was taken of {snapshot.install_path}, not {install_path}; refusing to apply it"
        )
    directory = posixpath.join(install_path, SETTINGS_DIR)
    if base is not None and snapshot.version is not None and base.version != snapshot.version:
        raise SettingsError(
            f"snapshot was taken on version {snapshot.version}, but the defaults given are of "
            f"{base.version}; refusing to merge against the wrong ancestor"
        )
    report = ReapplyReport(
        base=base.version if base else None,
        base_problem=None if base else base_problem or "the old release's defaults were not given",
    )
    for name, saved in sorted(snapshot.files.items()):
        old_defaults = base.files.get(name, {}) if base else None
        _reapply_file(host, directory, name, saved, old_defaults, report, allowed_roots)
    for name in _settings_files(host, install_path):
        if name not in snapshot.files:  # a settings file the new version introduced
            values = parse_properties(host.read_text(posixpath.join(directory, name)))
            report.added.extend({"source": name, "key": key, "value": value} for key, value in values.items())
    _reapply_database(database, snapshot.database, base.database if base else None, report)
    for item in report.restored:
        was = shown(item["key"], item["was"])
        log.info(
            "%s: restored %s %s (the installer had set %r)", host.label, item["source"], item["key"], was
        )
    for item in report.conflicts:
        log.warning(
            "%s: %s %s: the customer's value was restored, but the new release changed its default "
            "from %r to %r; please review",
            host.label,
            item["source"],
            item["key"],
            shown(item["key"], item["old_default"]),
            shown(item["key"], item["new_default"]),
        )
    for item in report.new_defaults:
        log.info("%s: %s %s keeps the new release's default", host.label, item["source"], item["key"])
    for item in report.vanished:
        log.warning(
            "%s: %s %s is not in the new version; written back, please review",
            host.label,
            item["source"],
            item["key"],
        )
    return report


def reapply_review_markdown(summary: Mapping[str, Any]) -> str:
    """What the consultant should look at before the customer signs: from :meth:`ReapplyReport.summary`."""
    base = summary.get("base")
    restored = summary.get("restored") or []
    conflicts = summary.get("conflicts") or []
    kept = summary.get("new_defaults_kept") or []
    vanished = summary.get("vanished_kept") or []
    added = summary.get("added_by_release") or []
    ancestor = f"the defaults of {md(base)}" if base else "unknown"
    lines = [
        "| Settings re-applied | |",
        "|---|---|",
        f"| Customer values restored | {len(restored)} |",
        f"| New release defaults kept | {len(kept)} |",
        f"| Customer keys the new release no longer has (kept) | {len(vanished)} |",
        f"| Keys the new release added | {len(added)} |",
        f"| Compared against | {ancestor} |",
        "",
    ]
    if not base:
        problem = summary.get("base_problem") or "the old release's defaults were not available"
        lines += [
            f"> **Review every restored value**: {md(problem)}, so a value the customer never changed "
            "may have been set back to the old default.",
            "",
        ]
    review = [
        (
            item,
            "customer value restored; the new release changed the default "
            f"from {code(item['old_default'], cell=True)} to {code(item['new_default'], cell=True)}",
        )
        for item in conflicts
    ] + [
        (item, f"kept with {code(item['value'], cell=True)}, but the new release no longer has this key")
        for item in vanished
    ]
    if review:
        lines += ["| Where | Setting | To review |", "|---|---|---|"]
        lines += [
            f"| {md(item['source'])} | {code(item['key'], cell=True)} | {note} |" for item, note in review
        ]
        lines.append("")
    if kept:
        changes = ", ".join(f"{code(item['key'])} {code(item['old'])} → {code(item['new'])}" for item in kept)
        lines += [f"New defaults taken over (the customer had not changed them): {changes}", ""]
    return "\n".join(lines).rstrip() + "\n"
