"""Fetching a release into the worker cache: verified once, reused, never a bad file under its name."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

import pytest

from managed_upgrade.errors import ChecksumMismatchError, ManifestError
from managed_upgrade.operations.release_source import DirectoryReleaseSource, fetch_release

PRODUCT = "aurea-crm"
VERSION = "11.0.0"


def make_release(root: Path, files: dict[str, bytes], listed: dict[str, bytes] | None = None) -> Path:
    directory = root / PRODUCT / VERSION
    directory.mkdir(parents=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    listed = files if listed is None else listed
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in listed.items())
    (directory / "SHA256SUMS").write_text(sums)
    return directory


def fetch(source_class: type[DirectoryReleaseSource], tmp_path: Path):
    return fetch_release(source_class(tmp_path / "repo", PRODUCT, VERSION), PRODUCT, VERSION, tmp_path / "c")


FILES = {"installer.py": b"print('install')\n", "payload.tar.gz": os.urandom(300_000)}


def test_fetch_verifies_every_file_and_reuses_the_cache(tmp_path: Path) -> None:
    make_release(tmp_path / "repo", FILES)
    source = DirectoryReleaseSource(tmp_path / "repo", PRODUCT, VERSION)
    first = fetch_release(source, PRODUCT, VERSION, tmp_path / "cache")
    assert [f.name for f in first.files] == ["installer.py", "payload.tar.gz", "SHA256SUMS"]
    assert all(f.fetched for f in first.files[:2])
    for cached in first.files[:2]:
        assert cached.path.read_bytes() == FILES[cached.name]
        assert cached.sha256 == hashlib.sha256(FILES[cached.name]).hexdigest()
    second = fetch_release(source, PRODUCT, VERSION, tmp_path / "cache")
    assert not any(f.fetched for f in second.files[:2])


def test_local_source_is_hard_linked_not_copied(tmp_path: Path) -> None:
    release = make_release(tmp_path / "repo", FILES)
    cached = fetch_release(
        DirectoryReleaseSource(tmp_path / "repo", PRODUCT, VERSION), PRODUCT, VERSION, tmp_path / "c"
    )
    assert cached.file("payload.tar.gz").path.stat().st_ino == (release / "payload.tar.gz").stat().st_ino


class StreamOnlySource(DirectoryReleaseSource):
    """A source that cannot be linked (what an SFTP or HTTP source looks like to the cache)."""

    def local_path(self, name: str) -> Path | None:
        return None

    def open_file(self, name: str) -> BinaryIO:
        return super().open_file(name)


def test_stream_sources_are_copied(tmp_path: Path) -> None:
    release = make_release(tmp_path / "repo", FILES)
    cached = fetch_release(
        StreamOnlySource(tmp_path / "repo", PRODUCT, VERSION), PRODUCT, VERSION, tmp_path / "c"
    )
    payload = cached.file("payload.tar.gz").path
    assert payload.stat().st_ino != (release / "payload.tar.gz").stat().st_ino
    assert payload.read_bytes() == FILES["payload.tar.gz"]


@pytest.mark.parametrize("source_class", [DirectoryReleaseSource, StreamOnlySource])
def test_a_corrupt_file_fails_with_name_and_both_digests_and_is_not_cached(
    tmp_path: Path, source_class
) -> None:
    listed = dict(FILES)
    make_release(tmp_path / "repo", {**FILES, "payload.tar.gz": b"tampered"}, listed=listed)
    with pytest.raises(ChecksumMismatchError) as error:
        fetch_release(source_class(tmp_path / "repo", PRODUCT, VERSION), PRODUCT, VERSION, tmp_path / "cache")
    message = str(error.value)
    assert "payload.tar.gz" in message
    assert hashlib.sha256(FILES["payload.tar.gz"]).hexdigest() in message
    assert hashlib.sha256(b"tampered").hexdigest() in message
    cache_dir = tmp_path / "cache" / PRODUCT / VERSION
    assert not (cache_dir / "payload.tar.gz").exists()
    assert not (cache_dir / "payload.tar.gz.part").exists()


def test_a_file_not_in_the_manifest_is_an_error(tmp_path: Path) -> None:
    make_release(tmp_path / "repo", {**FILES, "extra.bin": b"x"}, listed=FILES)
    with pytest.raises(ManifestError, match=r"not listed in SHA256SUMS: extra\.bin"):
        fetch_release(
            DirectoryReleaseSource(tmp_path / "repo", PRODUCT, VERSION), PRODUCT, VERSION, tmp_path / "c"
        )


def test_a_listed_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    make_release(tmp_path / "repo", {"installer.py": FILES["installer.py"]}, listed=FILES)
    with pytest.raises(ManifestError, match=r"listed in SHA256SUMS but missing: payload\.tar\.gz"):
        fetch_release(
            DirectoryReleaseSource(tmp_path / "repo", PRODUCT, VERSION), PRODUCT, VERSION, tmp_path / "c"
        )


def test_a_changed_cached_file_is_verified_again(tmp_path: Path) -> None:
    make_release(tmp_path / "repo", FILES)
    source = StreamOnlySource(tmp_path / "repo", PRODUCT, VERSION)
    cached = fetch_release(source, PRODUCT, VERSION, tmp_path / "cache")
    cached.file("installer.py").path.write_bytes(b"changed in the cache")
    again = fetch_release(source, PRODUCT, VERSION, tmp_path / "cache")
    assert again.file("installer.py").fetched
    assert again.file("installer.py").path.read_bytes() == FILES["installer.py"]


@pytest.mark.parametrize("version", ["1.0; rm -rf /", "$(id)", "11.0.0\n", "../11.0.0"])
def test_unsafe_versions_are_rejected_before_any_path_is_built(tmp_path: Path, version: str) -> None:
    with pytest.raises(ValueError, match="not a valid version"):
        DirectoryReleaseSource(tmp_path, PRODUCT, version)
