"""The release checksum manifest (``SHA256SUMS``): the single source of truth for what a release holds.

A release is only staged if every file it contains is listed with its sha256 and every listed file is
present; the manifest is parsed strictly because its file names end up in paths on customer hosts.
Format: the ``sha256sum`` output format, one ``<64 hex digits>  <name>`` (or ``<hex> *<name>``) per line.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from managed_upgrade.errors import ManifestError

MANIFEST_NAME = "SHA256SUMS"
FILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$"
"""Release file names: flat (no directories), no spaces, quotes or shell metacharacters."""

_LINE = re.compile(r"^(?P<digest>[0-9a-fA-F]{64}) [ *](?P<name>.+)$")
_FILE_NAME = re.compile(FILE_NAME_PATTERN)
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
CHUNK_SIZE = 4 * 1024 * 1024


def require_file_name(name: str, where: str = "release file name") -> str:
    """Return ``name`` if it is a safe flat release file name, else raise :class:`ManifestError`."""
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name) or name in (".", ".."):
        raise ManifestError(f"{where} {name!r} is not allowed (must match {FILE_NAME_PATTERN})")
    return name


def require_digest(digest: str, where: str = "sha256 digest") -> str:
    """Return ``digest`` (lower-case hex) if it is a sha256 hex digest, else raise."""
    if not isinstance(digest, str) or not _HEX_DIGEST.fullmatch(digest.lower()):
        raise ManifestError(f"{where} {digest!r} is not a sha256 hex digest")
    return digest.lower()


@dataclass(frozen=True)
class Manifest:
    """Expected sha256 per release file name, in manifest order."""

    entries: Mapping[str, str]

    def __post_init__(self) -> None:
        if not self.entries:
            raise ManifestError(f"{MANIFEST_NAME} lists no files")
        for name, digest in self.entries.items():
            require_file_name(name, f"{MANIFEST_NAME} entry")
            require_digest(digest, f"{MANIFEST_NAME} digest of {name}")
        if MANIFEST_NAME in self.entries:
            raise ManifestError(f"{MANIFEST_NAME} must not list itself")

    @classmethod
    def parse(cls, text: str, source: str = MANIFEST_NAME) -> Manifest:
        """Parse ``sha256sum`` output; every problem names ``source`` and the line number."""
        entries: dict[str, str] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            match = _LINE.fullmatch(raw)
            if match is None:
                raise ManifestError(f"{source}:{number}: not '<sha256>  <name>': {raw[:200]!r}")
            name = match["name"]
            require_file_name(name, f"{source}:{number}: file name")
            if name == MANIFEST_NAME:
                raise ManifestError(f"{source}:{number}: the manifest must not list itself")
            if name in entries:
                raise ManifestError(f"{source}:{number}: {name} is listed twice")
            entries[name] = match["digest"].lower()
        if not entries:
            raise ManifestError(f"{source}: lists no files")
        return cls(entries)

    def render(self) -> str:
        """The manifest in ``sha256sum`` format (what ``sha256sum -c`` on a host accepts)."""
        return "".join(f"{digest}  {name}\n" for name, digest in self.entries.items())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.entries)

    def expected(self, name: str) -> str:
        return self.entries[name]

    def check_listing(self, present: Iterable[str], where: str) -> None:
        """Fail unless ``present`` holds exactly the listed files (plus the manifest itself)."""
        names = set(present) - {MANIFEST_NAME}
        unlisted = sorted(names - set(self.entries))
        missing = sorted(set(self.entries) - names)
        problems = []
        if unlisted:
            problems.append(f"not listed in {MANIFEST_NAME}: {', '.join(unlisted)}")
        if missing:
            problems.append(f"listed in {MANIFEST_NAME} but missing: {', '.join(missing)}")
        if problems:
            raise ManifestError(f"{where}: " + "; ".join(problems))


def iter_chunks(stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Big reads: hashing and copying cost per call, so 4 MiB chunks keep both at disk speed."""
    while chunk := stream.read(chunk_size):
        yield chunk


def file_sha256(path: Path) -> str:
    """sha256 of a local file (hashlib uses the CPU's SHA extensions; ~1 GB/s here)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter_chunks(handle):
            digest.update(chunk)
    return digest.hexdigest()
