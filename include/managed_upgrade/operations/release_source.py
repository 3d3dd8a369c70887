"""Fetches a release (its files and ``SHA256SUMS``) once into a worker-side cache, verified file by file.

The release repository is only read here: a source yields the manifest and file streams, and
:func:`fetch_release` copies them into ``<cache root>/<product>/<version>/``, hashing while copying
(one read of each byte), writing ``<name>.part`` and renaming only after the digest matches, so the
cache never holds a corrupt file under its final name. Today the source is a directory (an Airflow
``fs`` connection's ``extra.path``); an SFTP or HTTP source only has to implement
:class:`ReleaseSource`'s three methods.

When the source is a local directory on the same file system, a file is "fetched" by hard-linking it
into the cache and hashing it there: no second copy is written (a 1 GiB release would otherwise
cost a full disk write before staging starts). A later in-place change to the source shows up as a
changed mtime and is fetched and verified again.

A cached file that was verified before is not re-hashed while its size, mtime and inode are those
recorded at verification (rsync's quick check); the host-side verification after every transfer
still catches any later corruption.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from managed_upgrade.errors import ChecksumMismatchError, ManifestError
from managed_upgrade.transport.manifest import MANIFEST_NAME, Manifest, iter_chunks
from managed_upgrade.vocabulary import require

_VERIFIED_RECORD = ".verified.json"
CACHE_ENV_VAR = "MANAGED_UPGRADE_RELEASE_CACHE"


def default_cache_root() -> Path:
    """``$MANAGED_UPGRADE_RELEASE_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/managed-upgrade/releases``."""
    explicit = os.environ.get(CACHE_ENV_VAR)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "managed-upgrade" / "releases"


class ReleaseSource(Protocol):
    """Where releases come from; ``description`` names it in error messages."""

    description: str

    def list_files(self) -> list[str]:
        """Names of every file of the release, the manifest included."""
        ...

    def read_manifest(self) -> bytes: ...

    def open_file(self, name: str) -> BinaryIO: ...

    def local_path(self, name: str) -> Path | None:
        """The file's path if it is on a local file system (it may then be hard-linked), else None."""
        ...


class DirectoryReleaseSource:
    """A release directory ``<root>/<product>/<version>/`` (an ``fs`` connection's ``extra.path`` root)."""

    def __init__(self, root: str | Path, product: str, version: str) -> None:
        require("product", product)
        require("version", version)
        self.directory = Path(root) / product / version
        self.description = f"release source {self.directory}"

    def list_files(self) -> list[str]:
        if not self.directory.is_dir():
            raise ManifestError(f"{self.description}: no such release directory")
        names = []
        for entry in sorted(self.directory.iterdir()):
            if not entry.is_file() or entry.is_symlink():
                raise ManifestError(
                    f"{self.description}: unexpected entry {entry.name!r} (not a regular file)"
                )
            names.append(entry.name)
        return names

    def read_manifest(self) -> bytes:
        path = self.directory / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(f"{self.description}: {MANIFEST_NAME} missing")
        return path.read_bytes()

    def open_file(self, name: str) -> BinaryIO:
        return (self.directory / name).open("rb")

    def local_path(self, name: str) -> Path | None:
        return self.directory / name


@dataclass(frozen=True)
class CachedFile:
    """One verified file of a cached release."""

    name: str
    path: Path
    size: int
    sha256: str
    fetched: bool  # False when the cache already held it


@dataclass(frozen=True)
class CachedRelease:
    """A release in the worker's cache, every file verified against its manifest."""

    product: str
    version: str
    directory: Path
    manifest: Manifest
    files: tuple[CachedFile, ...]  # manifest order, then SHA256SUMS itself last

    def file(self, name: str) -> CachedFile:
        for cached in self.files:
            if cached.name == name:
                return cached
        raise KeyError(name)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One fetch per release directory at a time (parallel tasks may stage the same release)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _quick_key(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns, info.st_ino]


def _link_or_copy_verified(source: ReleaseSource, name: str, target: Path, expected: str) -> int:
    """Link (same file system) or copy to ``<target>.part`` and hash it; rename only if it matches."""
    partial = target.with_name(target.name + ".part")
    partial.unlink(missing_ok=True)
    digest = hashlib.sha256()
    size = 0
    local = source.local_path(name)
    linked = False
    if local is not None:
        try:
            os.link(local, partial)
            linked = True
        except OSError:  # another file system, or links not allowed: copy instead
            linked = False
    if linked:
        with partial.open("rb") as handle:
            for chunk in iter_chunks(handle):
                digest.update(chunk)
                size += len(chunk)
    else:
        with source.open_file(name) as stream, partial.open("wb") as sink:
            for chunk in iter_chunks(stream):
                digest.update(chunk)
                sink.write(chunk)
                size += len(chunk)
    actual = digest.hexdigest()
    if actual != expected:
        partial.unlink()
        raise ChecksumMismatchError(name, source.description, expected, actual)
    partial.replace(target)
    return size


def fetch_release(
    source: ReleaseSource, product: str, version: str, cache_root: Path | None = None
) -> CachedRelease:
    """Bring the release into the cache (or reuse the verified copy there) and return it."""
    require("product", product)
    require("version", version)
    directory = (cache_root or default_cache_root()) / product / version
    with _locked(directory):
        manifest_bytes = source.read_manifest()
        try:
            manifest_text = manifest_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{source.description}: {MANIFEST_NAME} is not UTF-8 text") from exc
        manifest = Manifest.parse(manifest_text, f"{source.description}/{MANIFEST_NAME}")
        manifest.check_listing(source.list_files(), source.description)

        record_path = directory / _VERIFIED_RECORD
        try:
            record: dict[str, dict[str, Any]] = json.loads(record_path.read_text())
        except (FileNotFoundError, ValueError):
            record = {}
        files = []
        for name, expected in manifest.entries.items():
            target = directory / name
            known = record.get(name)
            if (
                known is not None
                and known.get("sha256") == expected
                and target.is_file()
                and known.get("quick") == _quick_key(target)
            ):
                files.append(CachedFile(name, target, target.stat().st_size, expected, fetched=False))
                continue
            size = _link_or_copy_verified(source, name, target, expected)
            record[name] = {"sha256": expected, "quick": _quick_key(target)}
            files.append(CachedFile(name, target, size, expected, fetched=True))
        for stale in set(record) - set(manifest.entries):
            record.pop(stale)
            (directory / stale).unlink(missing_ok=True)

        manifest_path = directory / MANIFEST_NAME
        partial = manifest_path.with_name(MANIFEST_NAME + ".part")
        partial.write_bytes(manifest_bytes)
        partial.replace(manifest_path)
        manifest_digest = hashlib.sha256(manifest_bytes).hexdigest()
        files.append(
            CachedFile(MANIFEST_NAME, manifest_path, len(manifest_bytes), manifest_digest, fetched=True)
        )

        temporary_record = record_path.with_name(_VERIFIED_RECORD + ".part")
        temporary_record.write_text(json.dumps(record, indent=2, sort_keys=True))
        temporary_record.replace(record_path)
    return CachedRelease(product, version, directory, manifest, tuple(files))
