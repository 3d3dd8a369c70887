"""Puts an environment back to a backup: install folder and config DB, each swapped in only when complete.

Order, chosen so a failure leaves the environment either untouched or fully restored:

1. check the backup's files on the host against ``backup.json`` (sha256 computed on the host);
2. unpack the archive into a sibling of the install folder and compare it with the backup's
   manifest (every path, type, mode, size and sha256);
3. restore the config DB into a sibling database (see :mod:`managed_upgrade.transport.database`);
4. swap the database in (two renames), then the install folder (two renames, undone if the second
   fails);
5. verify: ``VERSION`` equals the backup's version and ``bin/crm status`` is ok.

Every :class:`RestoreError` says what is where at the moment it happened. Every folder it creates,
replaces or deletes (the install folder and its two siblings) is confined to the environment's
allowed roots (:func:`managed_upgrade.transport.path_policy.confine`) right before, and deletions are done
by the host agent, which checks the real path again.
"""

from __future__ import annotations

import logging
import posixpath
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from managed_upgrade.errors import OperationError, RestoreError
from managed_upgrade.operations.backup import (
    DESCRIPTOR,
    DUMP,
    MANIFEST,
    backup_dir,
    read_descriptor,
    require_backup_id,
)
from managed_upgrade.operations.installation import CrmStatus, verify_running_version
from managed_upgrade.transport.database import DbTarget, restore_database
from managed_upgrade.transport.manifest import file_sha256
from managed_upgrade.transport.path_policy import Roots, confine, require_under
from managed_upgrade.transport.remote import RemoteHost
from managed_upgrade.vocabulary import require

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreResult:
    """A completed, verified restore."""

    backup_id: str
    version: str
    status: CrmStatus
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {"backup_id": self.backup_id, "version": self.version, "crm_status_ok": self.status.ok}


def compare_tree(manifest: list[dict[str, Any]], tree: list[dict[str, Any]]) -> list[str]:
    """Differences between a backup manifest and a described tree, content hashes included."""

    def key(entry: dict[str, Any]) -> tuple[Any, ...]:
        return (entry["type"], entry["mode"], entry["size"], entry.get("sha256"), entry.get("target"))

    expected = {entry["path"]: key(entry) for entry in manifest}
    actual = {entry["path"]: key(entry) for entry in tree}
    problems = [f"missing: {path}" for path in sorted(expected.keys() - actual.keys())]
    problems += [f"unexpected: {path}" for path in sorted(actual.keys() - expected.keys())]
    problems += [
        f"differs: {path}"
        for path in sorted(expected.keys() & actual.keys())
        if expected[path] != actual[path]
    ]
    return problems


def _file_entry(descriptor: dict[str, Any], name: str) -> dict[str, Any]:
    files: list[dict[str, Any]] = descriptor["files"]
    for entry in files:
        if entry["name"] == name:
            return entry
    raise RestoreError(f"backup {descriptor['backup_id']}: {DESCRIPTOR} lists no {name}")


def _check_backup_files(host: RemoteHost, directory: str, descriptor: dict[str, Any]) -> None:
    for entry in descriptor["files"]:
        path = posixpath.join(directory, entry["name"])
        if not host.exists(path):
            raise RestoreError(f"{host.label}: backup file {path} is missing; nothing was changed")
        actual = host.sha256(path)
        if actual != entry["sha256"]:
            raise RestoreError(
                f"{host.label}: backup file {path} is corrupt "
                f"(sha256 {actual}, {DESCRIPTOR} says {entry['sha256']}); "
                "nothing was changed"
            )


def _unpack(
    host: RemoteHost,
    archive: str,
    compression: str,
    destination: str,
    manifest: list[dict[str, Any]],
    roots: Roots,
) -> None:
    confine(host, destination, roots, action="unpack a backup into")
    host.remove_tree(destination, roots)
    host.makedirs(destination)
    flag = "--zstd" if compression == "zstd" else "--gzip"
    host.run(
        ["tar", flag, "--extract", "--preserve-permissions", "--file", archive, "--directory", destination]
    )
    problems = compare_tree(manifest, host.run_agent("tree", destination)["entries"])
    if problems:
        shown = "; ".join(problems[:10])
        raise RestoreError(
            f"{host.label}: the unpacked backup at {destination} does not match "
            f"the backup manifest ({shown}); "
            "the installation was not changed"
        )


def _swap_folder(host: RemoteHost, fresh: str, live: str, retired: str, roots: Roots) -> None:
    """``live`` -> ``retired``, ``fresh`` -> ``live``; the first rename is undone if the second fails."""
    for path in (fresh, live, retired):
        confine(host, path, roots, action="swap the restored folder via")
    had_live = host.exists(live)
    if had_live:
        host.remove_tree(retired, roots)
        host.rename(live, retired)
    try:
        host.rename(fresh, live)
    except Exception as exc:
        if had_live:
            host.rename(retired, live)
        raise RestoreError(
            f"{host.label}: could not move the restored folder {fresh} to {live} ({exc}); "
            f"{live} was put back as it was"
        ) from exc


def restore_backup(
    host: RemoteHost,
    install_path: str,
    backup_path: str,
    backup_id: str,
    database: DbTarget,
    allowed_roots: Roots = None,
) -> RestoreResult:
    """Restore the install folder and config DB of one environment from backup ``backup_id``.

    ``allowed_roots``: the environment's roots; every folder written or deleted must lie below one.
    """
    started = time.monotonic()
    require("absolute path", install_path)
    require_under(install_path, allowed_roots, action="restore", label=host.label)
    require_under(backup_path, allowed_roots, action="restore from", label=host.label)
    require_backup_id(backup_id)
    directory = backup_dir(backup_path, backup_id)
    descriptor = read_descriptor(host, backup_path, backup_id)
    if descriptor["install_path"] != install_path:
        raise RestoreError(
            f"backup {backup_id} is of {descriptor['install_path']}, not of {install_path}; "
            "refusing to restore it there"
        )
    if descriptor["database"]["name"] != database.dbname:
        raise RestoreError(
            f"backup {backup_id} holds database {descriptor['database']['name']}, "
            f"not {database.dbname}; refusing to restore it there"
        )
    archive_name = descriptor["files"][0]["name"]
    parent, name = posixpath.split(install_path.rstrip("/"))
    fresh = posixpath.join(parent, f".{name}.restore-{backup_id}")
    retired = posixpath.join(parent, f".{name}.retired-{backup_id}")
    tag = backup_id.rsplit("-", 1)[-1]
    for path in (install_path, fresh, retired):  # before anything (the config DB too) is touched
        confine(host, path, allowed_roots, action="restore")

    _check_backup_files(host, directory, descriptor)
    manifest = host.read_json(posixpath.join(directory, MANIFEST))["entries"]
    _unpack(
        host,
        posixpath.join(directory, archive_name),
        descriptor["compression"],
        fresh,
        manifest,
        allowed_roots,
    )

    with tempfile.TemporaryDirectory(prefix="managed-upgrade-restore-") as work:
        local_dump = Path(work) / DUMP
        host.download(posixpath.join(directory, DUMP), local_dump)
        expected = _file_entry(descriptor, DUMP)["sha256"]
        if file_sha256(local_dump) != expected:
            host.remove_tree(fresh, allowed_roots)
            raise RestoreError(
                f"{host.label}: {directory}/{DUMP} changed on its way to the worker; nothing was changed"
            )
        try:
            restore_database(database, local_dump, tag)
        except RestoreError as exc:
            host.remove_tree(fresh, allowed_roots)
            raise RestoreError(f"{exc}; the install folder {install_path} was not changed either") from exc

    try:
        _swap_folder(host, fresh, install_path, retired, allowed_roots)
    except RestoreError as exc:
        raise RestoreError(
            f"{exc}. The config DB {database.dbname} IS already restored to backup {backup_id}; "
            f"the unpacked install folder is at {fresh}"
        ) from exc
    try:
        status = verify_running_version(host, install_path, descriptor["version"])
    except OperationError as exc:
        raise RestoreError(
            f"restore of backup {backup_id} completed but the environment does not run: {exc}; "
            f"the folder it replaced is kept at {retired}"
        ) from exc
    host.remove_tree(retired, allowed_roots)
    log.info("%s: restored %s and %s from backup %s", host.label, install_path, database.dbname, backup_id)
    return RestoreResult(backup_id, descriptor["version"], status, time.monotonic() - started)
