"""Backs up an environment before anything touches it: install folder and config DB, verified, with retention.

A backup lives on the environment's host at ``<backup_path>/<backup_id>/``:

* ``install.tar.zst`` -- GNU ``tar`` of the install folder compressed by ``zstd`` on the host
  (``install.tar.gz`` with gzip if the host has no zstd);
* ``install.manifest.json`` -- every member of the archive with type, mode, size and the sha256 of
  its content as read back from the archive;
* ``config-db.dump`` -- ``pg_dump -Fc`` of the config DB (made on the worker, checked with
  ``pg_restore --list``, sent to the host and hashed there);
* ``backup.json`` -- the descriptor: id, customer, environment, version (from ``VERSION``), creation
  time, install path, database name, and size and sha256 of each of the files above.

Everything happens concurrently, because the disk, not the CPU, bounds a backup: on the host one
command (:mod:`managed_upgrade.transport.host_agent` ``backup``) runs ``tar`` with ``zstd`` and, while the
archive grows, reads it back from disk, decompresses it and hashes every member (that listing is the
manifest), and walks the install folder; the worker meanwhile dumps the DB server and streams the
verified dump into that command's stdin. The archive's members must match the folder entry for
entry (path, type, mode, size, link target), and the dump's sha256 computed on the host must equal
the worker's. Everything is written under ``<backup_id>.partial/`` and renamed to ``<backup_id>/``
only once verified, so a directory with a backup id as its name is always a complete, verified
backup. Retention keeps the newest N verified backups of the environment and removes abandoned
``.partial`` directories; it never removes the backup just made. The install folder read and every
folder written or deleted must lie under the environment's allowed roots; each is confined
(:func:`managed_upgrade.transport.path_policy.confine`, symlinks resolved on the host) right before.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from managed_upgrade.errors import BackupError, OperationError
from managed_upgrade.operations.installation import read_version
from managed_upgrade.transport.database import DbTarget, DumpInfo, database_size, dump_database
from managed_upgrade.transport.manifest import iter_chunks
from managed_upgrade.transport.path_policy import Roots, confine, require_under
from managed_upgrade.transport.remote import RemoteHost, agent_argv
from managed_upgrade.vocabulary import require

log = logging.getLogger(__name__)

BACKUP_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}Z-[a-z0-9]{1,16}-[0-9a-f]{6}$"
"""``<UTC time>-<environment>-<random>``: sorts by time, names a directory, safe in any command line."""
_BACKUP_ID = re.compile(BACKUP_ID_PATTERN, re.ASCII)
DESCRIPTOR = "backup.json"
MANIFEST = "install.manifest.json"
DUMP = "config-db.dump"
PARTIAL_SUFFIX = ".partial"
FORMAT = 1
Compression = Literal["auto", "zstd", "gzip"]
"""``auto``: zstd where the host has it, else gzip."""


def require_backup_id(backup_id: str) -> str:
    if not isinstance(backup_id, str) or not _BACKUP_ID.fullmatch(backup_id):
        raise ValueError(f"backup id {backup_id!r} is not valid (must match {BACKUP_ID_PATTERN})")
    return backup_id


def new_backup_id(environment: str, now: datetime | None = None) -> str:
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    label = re.sub(r"[^a-z0-9]", "", environment.lower())[:16] or "env"
    return require_backup_id(f"{moment:%Y%m%dT%H%M%SZ}-{label}-{secrets.token_hex(3)}")


def backup_dir(backup_path: str, backup_id: str) -> str:
    require("absolute path", backup_path)
    return posixpath.join(backup_path, require_backup_id(backup_id))


@dataclass(frozen=True)
class BackupTarget:
    """What to back up: one environment's install folder on its host and its config DB."""

    customer_id: str
    environment: str
    host: RemoteHost
    install_path: str
    backup_path: str
    database: DbTarget
    retention: int = 3
    allowed_roots: Roots = None
    """The environment's allowed roots (``None``: only the always-refused paths are refused)."""

    def __post_init__(self) -> None:
        require("absolute path", self.install_path)
        require("absolute path", self.backup_path)
        require_under(self.install_path, self.allowed_roots, action="back up", label=self.host.label)
        require_under(self.backup_path, self.allowed_roots, action="write backups to", label=self.host.label)
        if self.retention < 1:
            raise ValueError(f"retention must keep at least one backup, got {self.retention}")


@dataclass(frozen=True)
class BackupResult:
    """A verified backup and what retention removed."""

    descriptor: dict[str, Any]
    directory: str
    pruned: tuple[str, ...]
    seconds: float

    @property
    def backup_id(self) -> str:
        backup_id: str = self.descriptor["backup_id"]
        return backup_id

    def summary(self) -> dict[str, Any]:
        """Compact, JSON-able (XCom): ids, version, location, checksums, what was pruned."""
        return {
            "backup_id": self.backup_id,
            "environment": self.descriptor["environment"],
            "version": self.descriptor["version"],
            "directory": self.directory,
            "files": {item["name"]: item["sha256"] for item in self.descriptor["files"]},
            "database": self.descriptor["database"]["name"],
            "pruned": list(self.pruned),
            "seconds": round(self.seconds, 2),
        }


def compare_listing(tree: list[dict[str, Any]], archive: list[dict[str, Any]]) -> list[str]:
    """Differences between a folder and an archive's members (path, type, mode, size, link target)."""

    def key(entry: dict[str, Any]) -> tuple[Any, ...]:
        return (
            entry["type"],
            entry["mode"],
            entry["size"] if entry["type"] == "file" else 0,
            entry.get("target"),
        )

    expected = {entry["path"]: key(entry) for entry in tree}
    actual = {entry["path"]: key(entry) for entry in archive}
    problems = [f"missing from the archive: {path}" for path in sorted(expected.keys() - actual.keys())]
    problems += [f"not in the folder: {path}" for path in sorted(actual.keys() - expected.keys())]
    problems += [
        f"{path}: folder (type, mode, size, target) {expected[path]} != archive {actual[path]}"
        for path in sorted(expected.keys() & actual.keys())
        if expected[path] != actual[path]
    ]
    return problems


def _dump_chunks(dump: Future[DumpInfo]) -> Iterator[bytes]:
    """The verified dump's bytes, once ``pg_dump`` and ``pg_restore --list`` are done (for stdin)."""
    info = dump.result()
    with info.path.open("rb") as handle:
        yield from iter_chunks(handle)


def require_space(host: RemoteHost, target: BackupTarget) -> None:
    """Refuse, before writing anything, a backup the backup folder's file system cannot hold.

    The estimate is the install folder plus the database as they are, uncompressed: the archive is
    usually smaller, but a backup that fills the disk half-way would fail anyway, later and on a full
    disk shared with the installation.
    """
    needed = tree_bytes(host, target.install_path) + database_size(target.database)
    free = free_bytes(host, target.backup_path)
    if free < needed:
        raise BackupError(
            f"{host.label}: not enough space for a backup of {target.install_path} in {target.backup_path}: "
            f"{_size(free)} free, about {_size(needed)} needed (install folder and database, uncompressed). "
            "Nothing was written or changed; free space there, or move backup_path, and retry"
        )


def tree_bytes(host: RemoteHost, path: str) -> int:
    """Bytes under ``path`` on the host (``du -sk``)."""
    text = host.run(["du", "-sk", "--", path], timeout=600).text.split()
    return int(text[0]) * 1024 if text and text[0].isascii() and text[0].isdigit() else 0


def free_bytes(host: RemoteHost, path: str) -> int:
    """Bytes free for unprivileged writes on the file system holding ``path`` (``df -Pk``)."""
    lines = host.run(["df", "-Pk", "--", path], timeout=60).text.splitlines()
    fields = lines[-1].split() if len(lines) >= 2 else []
    if len(fields) < 4 or not fields[3].isascii() or not fields[3].isdigit():
        raise BackupError(f"{host.label}: cannot tell the free space of {path} from df: {lines!r}")
    return int(fields[3]) * 1024


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count < 2**30 else f"{count / 2**30:.2f} GiB"


def create_backup(
    target: BackupTarget,
    backup_id: str | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    compression: Compression = "auto",
) -> BackupResult:
    """Take, verify and keep a backup of ``target`` (see the module docstring); prune old ones.

    On the host it is one command (the host agent's ``backup``): tar, manifest hashing and the
    list-back run there concurrently while the worker dumps the DB and streams the verified dump
    into the same command's stdin.
    """
    started = time.monotonic()
    host = target.host
    backup_id = require_backup_id(backup_id) if backup_id else new_backup_id(target.environment, now())
    final = backup_dir(target.backup_path, backup_id)
    partial = final + PARTIAL_SUFFIX
    roots = target.allowed_roots
    confine(host, target.install_path, roots, action="back up")
    if host.exists(final):
        raise BackupError(f"{host.label}: backup {final} already exists; refusing to overwrite it")
    version = read_version(host, target.install_path)
    confine(host, partial, roots, action="write a backup to")
    require_space(host, target)
    host.remove_small_tree(partial)
    host.makedirs(partial)
    log.info("%s: backing up %s (version %s) to %s", host.label, target.install_path, version, final)

    try:
        with (
            tempfile.TemporaryDirectory(prefix="managed-upgrade-backup-") as work,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg_dump") as pool,
        ):
            dump_future = pool.submit(dump_database, target.database, Path(work) / DUMP)
            answer = host.run(
                agent_argv("backup", target.install_path, partial, compression, DUMP),
                stdin=_dump_chunks(dump_future),
            ).json()
            dump = dump_future.result()
        received = answer["dump"]
        if received["sha256"] != dump.sha256 or received["size"] != dump.size:
            raise BackupError(
                f"{host.label}: the DB dump arrived damaged at {partial}/{DUMP}: sha256 {received['sha256']} "
                f"({received['size']} bytes), expected {dump.sha256} ({dump.size} bytes)"
            )
        problems = compare_listing(answer["tree"], answer["manifest"])
        if problems:
            shown = "; ".join(problems[:10]) + (
                f"; ... {len(problems) - 10} more" if len(problems) > 10 else ""
            )
            archive = f"{partial}/{answer['archive']['name']}"
            raise BackupError(f"{host.label}: archive {archive} does not match the install folder: {shown}")
        manifest = {"root": target.install_path, "entries": answer["manifest"]}
        manifest_bytes = host.write_json(posixpath.join(partial, MANIFEST), manifest)
    except Exception as exc:
        host.remove_small_tree(partial)
        if isinstance(exc, OperationError):
            raise
        raise BackupError(f"{host.label}: backup of {target.install_path} failed: {exc}") from exc

    archive = answer["archive"]
    descriptor = {
        "format": FORMAT,
        "backup_id": backup_id,
        "customer_id": target.customer_id,
        "environment": target.environment,
        "host": host.label,
        "version": version,
        "created_at": now().astimezone(UTC).isoformat(timespec="microseconds"),
        "install_path": target.install_path,
        "compression": answer["compression"],
        "entries": len(answer["manifest"]),
        "files": [
            {"name": archive["name"], "size": archive["size"], "sha256": archive["sha256"]},
            {
                "name": MANIFEST,
                "size": len(manifest_bytes),
                "sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            },
            {"name": DUMP, "size": dump.size, "sha256": dump.sha256},
        ],
        "database": {"name": target.database.dbname, "dump": DUMP, "toc_entries": dump.toc_entries},
        "verified": {"archive_listing": "matches manifest", "pg_restore_list": "ok"},
    }
    host.write_json(posixpath.join(partial, DESCRIPTOR), descriptor)
    confine(host, final, roots, action="write a backup to")
    host.rename(partial, final)
    pruned = prune_backups(host, target.backup_path, target.retention, keep=backup_id, allowed_roots=roots)
    return BackupResult(descriptor, final, tuple(pruned), time.monotonic() - started)


def read_descriptor(host: RemoteHost, backup_path: str, backup_id: str) -> dict[str, Any]:
    """The ``backup.json`` of a complete backup; raises :class:`BackupError` if there is none."""
    path = posixpath.join(backup_dir(backup_path, backup_id), DESCRIPTOR)
    try:
        descriptor: dict[str, Any] = host.read_json(path)
    except FileNotFoundError:
        raise BackupError(
            f"{host.label}: no backup {backup_id} under {backup_path} ({path} missing)"
        ) from None
    if descriptor.get("backup_id") != backup_id or "verified" not in descriptor:
        raise BackupError(f"{host.label}: {path} is not the descriptor of a verified backup {backup_id}")
    return descriptor


def list_backups(host: RemoteHost, backup_path: str) -> list[dict[str, Any]]:
    """Descriptors of the complete backups under ``backup_path``, oldest first."""
    require("absolute path", backup_path)
    if not host.is_dir(backup_path):
        return []
    found = []
    for name in host.listdir(backup_path):
        if _BACKUP_ID.fullmatch(name):
            try:
                found.append(read_descriptor(host, backup_path, name))
            except BackupError:
                log.warning("%s: %s/%s is not a complete backup; left alone", host.label, backup_path, name)
    return sorted(found, key=lambda descriptor: (descriptor["created_at"], descriptor["backup_id"]))


def prune_backups(
    host: RemoteHost, backup_path: str, retention: int, keep: str, allowed_roots: Roots = None
) -> list[str]:
    """Keep the newest ``retention`` backups (always ``keep`` too); remove the rest and stale partials.

    Refused (:class:`~managed_upgrade.transport.path_policy.PathPolicyError`) unless ``backup_path`` really
    lies under ``allowed_roots``; entries are removed with ``lstat`` semantics (a symlink is unlinked,
    never followed).
    """
    confine(host, backup_path, allowed_roots, action="prune backups in")
    backups = list_backups(host, backup_path)
    ids = [descriptor["backup_id"] for descriptor in backups]
    survivors = set(ids[-retention:]) | {keep}
    pruned = [backup_id for backup_id in ids if backup_id not in survivors]
    for backup_id in pruned:
        host.remove_small_tree(backup_dir(backup_path, backup_id))
    for name in host.listdir(backup_path):
        stem = name.removesuffix(PARTIAL_SUFFIX)
        if name.endswith(PARTIAL_SUFFIX) and _BACKUP_ID.fullmatch(stem) and stem < keep:
            host.remove_small_tree(posixpath.join(backup_path, name))  # abandoned by an earlier, failed run
    if pruned:
        log.info("%s: retention (%d) removed backups %s", host.label, retention, ", ".join(pruned))
    return pruned
