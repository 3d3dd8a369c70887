"""Builds and verifies the release repository: ``<root>/releases/aurea-crm/<version>/``.

Each release holds ``installer.py`` (the fake installer), ``payload.tar.gz`` (lib, modules,
default settings, migrations, bin/crm) and ``SHA256SUMS``. Content is deterministic (seeded by
product and version, fixed tar metadata), so rebuilding a release yields identical checksums.
Benchmarks rebuild a release with a large incompressible payload (``--size-mib``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from crm_estate import catalogue, crm_cli, fake_installer
from crm_estate.catalogue import (
    LIB_FILE_BYTES,
    MIN_UPGRADABLE_FROM,
    ReleaseContent,
    parse_version,
    release_content,
    render_properties,
)
from crm_estate.layout import PRODUCT

PAYLOAD = "payload.tar.gz"
INSTALLER = "installer.py"
CHECKSUMS = "SHA256SUMS"
_TAR_MTIME = 1_700_000_000  # fixed, so rebuilds are byte-identical


@dataclass(frozen=True)
class PayloadSize:
    """Extra incompressible bytes in lib/blobs/ (benchmarks); zero by default."""

    total_bytes: int = 0
    files: int = 1

    @classmethod
    def mib(cls, size_mib: float, files: int) -> PayloadSize:
        if size_mib < 0 or files < 1:
            raise ValueError(f"--size-mib must be >= 0 and --files >= 1, got {size_mib} and {files}")
        return cls(total_bytes=int(size_mib * 1024 * 1024), files=files)


class _SeededStream(io.RawIOBase):
    """Deterministic pseudo-random bytes of a fixed length, hashed as they are read."""

    def __init__(self, seed: str, size: int) -> None:
        self._random = random.Random(seed)  # filler data, not security
        self._remaining = size
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self._remaining:
            size = self._remaining
        data = self._random.randbytes(size)
        self._remaining -= size
        self.sha256.update(data)
        return data


class _PayloadWriter:
    """Adds members to a deterministic tar stream."""

    def __init__(self, archive: tarfile.TarFile) -> None:
        self.archive = archive
        self.lib_hashes: dict[str, str] = {}

    def _info(self, name: str, size: int, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, mode, _TAR_MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def directory(self, name: str) -> None:
        info = self._info(name, 0, 0o755)
        info.type = tarfile.DIRTYPE
        self.archive.addfile(info)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.archive.addfile(self._info(name, len(data), mode), io.BytesIO(data))
        if name.startswith("lib/"):
            self.lib_hashes[name.removeprefix("lib/")] = hashlib.sha256(data).hexdigest()

    def stream(self, name: str, seed: str, size: int) -> None:
        source = _SeededStream(seed, size)
        self.archive.addfile(self._info(name, size, 0o644), source)
        self.lib_hashes[name.removeprefix("lib/")] = source.sha256.hexdigest()


def _module_descriptor(name: str, version: str) -> bytes:
    return f"name: {name}\nversion: {version}\nvendor: Aurea\n".encode()


def _write_payload(path: Path, content: ReleaseContent, size: PayloadSize) -> None:
    version = content.version
    manifest = {
        "product": PRODUCT,
        "version": version,
        "min_upgradable_from": MIN_UPGRADABLE_FROM,
        "modules": list(content.modules),
        "settings_files": sorted(content.settings_files),
        "settings_defaults": content.settings_files,
        "db_settings": content.db_settings,
        "migrations": list(content.migrations),
    }
    level = 0 if size.total_bytes else 6  # big payloads are incompressible: store, do not burn CPU
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=level) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        writer = _PayloadWriter(archive)
        writer.file("release.json", (json.dumps(manifest, indent=2) + "\n").encode())
        for directory in ("bin", "lib", "modules", "settings", "migrations"):
            writer.directory(directory)
        writer.file("bin/crm", Path(crm_cli.__file__).read_bytes(), mode=0o755)
        writer.file("lib/RELEASE", f"{version}\n".encode())
        for name in content.lib_files:
            writer.stream(f"lib/{name}", f"{PRODUCT}:{version}:{name}", LIB_FILE_BYTES)
        if size.total_bytes:
            writer.directory("lib/blobs")
            per_file, remainder = divmod(size.total_bytes, size.files)
            for index in range(size.files):
                blob = f"lib/blobs/blob-{index:04d}.bin"
                writer.stream(blob, f"{PRODUCT}:{version}:{blob}", per_file + (1 if index < remainder else 0))
        lib_manifest = "".join(f"{digest}  {name}\n" for name, digest in sorted(writer.lib_hashes.items()))
        writer.file("lib/MANIFEST.sha256", lib_manifest.encode())
        for module in content.modules:
            writer.directory(f"modules/{module}")
            writer.file(f"modules/{module}/module.yaml", _module_descriptor(module, version))
        for name, values in sorted(content.settings_files.items()):
            header = f"{PRODUCT} {version} defaults"
            writer.file(f"settings/{name}", render_properties(values, header).encode())
        for migration, sql in content.migrations.items():
            writer.file(f"migrations/{migration}.sql", sql.encode())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sources_fingerprint() -> str:
    """Hash of the code that shapes a release; a change means existing releases are stale."""
    digest = hashlib.sha256()
    for module in (fake_installer, crm_cli, catalogue, sys.modules[__name__]):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def _build_info_path(releases_dir: Path, version: str) -> Path:
    # Beside, not inside, the release directory: a release holds exactly what SHA256SUMS lists.
    return releases_dir / PRODUCT / f".{version}.build.json"


def build_release(releases_dir: Path, version: str, size: PayloadSize | None = None) -> Path:
    """(Re)build one release atomically; return its directory."""
    parse_version(version)
    size = size or PayloadSize()
    content = release_content(version)
    final = releases_dir / PRODUCT / version
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.parent / f".{version}.build-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        shutil.copyfile(fake_installer.__file__, work / INSTALLER)
        (work / INSTALLER).chmod(0o755)
        _write_payload(work / PAYLOAD, content, size)
        sums = "".join(f"{file_sha256(work / name)}  {name}\n" for name in (INSTALLER, PAYLOAD))
        (work / CHECKSUMS).write_text(sums)
        if final.exists():
            retired = final.parent / f".{version}.old-{os.getpid()}"
            final.rename(retired)
            work.rename(final)
            shutil.rmtree(retired)
        else:
            work.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    build_info = {"sources": sources_fingerprint(), "extra_bytes": size.total_bytes, "files": size.files}
    _build_info_path(releases_dir, version).write_text(json.dumps(build_info) + "\n")
    return final


def _read_build_info(releases_dir: Path, version: str) -> dict:
    try:
        return json.loads(_build_info_path(releases_dir, version).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def release_problems(releases_dir: Path, version: str) -> list[str]:
    """Why the release must be (re)built: checksum problems, or built from older estate code."""
    problems = verify_release(releases_dir / PRODUCT / version)
    if not problems and _read_build_info(releases_dir, version).get("sources") != sources_fingerprint():
        problems.append("built by an older version of the estate code; `scripts/estate up` rebuilds it")
    return problems


def ensure_release(releases_dir: Path, version: str) -> bool:
    """Build the release unless an intact one from the current sources exists; True if built.

    A rebuild keeps the payload size a benchmark asked for."""
    if not release_problems(releases_dir, version):
        return False
    info = _read_build_info(releases_dir, version)
    size = PayloadSize(total_bytes=int(info.get("extra_bytes", 0)), files=int(info.get("files", 1)))
    build_release(releases_dir, version, size)
    return True


def verify_release(release_dir: Path) -> list[str]:
    """Problems with a release directory (empty when SHA256SUMS matches every file it lists)."""
    sums = release_dir / CHECKSUMS
    if not sums.is_file():
        return [f"{sums} missing"]
    problems = []
    listed = set()
    for number, line in enumerate(sums.read_text().splitlines(), start=1):
        expected, sep, name = line.partition("  ")
        if not sep or len(expected) != 64:
            problems.append(f"{sums}:{number}: not '<sha256>  <name>': {line!r}")
            continue
        listed.add(name)
        path = release_dir / name
        if not path.is_file():
            problems.append(f"{path} listed in {CHECKSUMS} but missing")
        elif file_sha256(path) != expected:
            problems.append(f"{path} does not match its {CHECKSUMS} entry")
    for required in (INSTALLER, PAYLOAD):
        if required not in listed:
            problems.append(f"{sums} does not list {required}")
    return problems


def read_release_manifest(release_dir: Path) -> dict:
    with tarfile.open(release_dir / PAYLOAD, "r:gz") as archive:
        member = archive.extractfile("release.json")
        if member is None:
            raise ValueError(f"{release_dir / PAYLOAD} has no release.json")
        return json.load(member)
