"""The default settings a release ships: the common ancestor when customer settings are re-applied.

Re-applying needs to know which snapshot values the customer chose and which were only the old
release's defaults (see :mod:`managed_upgrade.operations.settings_snapshot`). A release's
``payload.tar.gz`` describes itself in its first member, ``release.json``: ``settings_defaults`` (file ->
key -> value) and ``db_settings`` (``crm_settings`` key -> value). A release whose ``release.json`` has
no ``settings_defaults`` is read the slow way, from its ``settings/*.properties`` members.

The release is fetched through the verified cache
(:func:`~managed_upgrade.operations.release_source.fetch_release`) first, so a tampered archive can never
decide which customer values are kept.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from managed_upgrade.errors import OperationError
from managed_upgrade.operations.release_source import ReleaseSource, fetch_release
from managed_upgrade.operations.settings_files import SETTINGS_DIR, SETTINGS_SUFFIX, parse_properties

PAYLOAD = "payload.tar.gz"
DESCRIPTOR = "release.json"


class ReleaseDefaultsError(OperationError):
    """A release's default settings cannot be read (missing release, malformed descriptor)."""


@dataclass(frozen=True)
class ReleaseDefaults:
    """Default values of one release: per settings file, and the ``crm_settings`` table."""

    version: str
    files: dict[str, dict[str, str]]
    database: dict[str, str]


def _text_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(key, str) and isinstance(text, str) for key, text in value.items()
    ):
        raise ReleaseDefaultsError(f"{where} is not a mapping of text to text")
    return dict(value)


def _settings_members(archive: tarfile.TarFile) -> dict[str, dict[str, str]]:
    files = {}
    for member in archive:
        directory, name = posixpath.split(posixpath.normpath(member.name))
        if member.isfile() and directory == SETTINGS_DIR and name.endswith(SETTINGS_SUFFIX):
            stream = archive.extractfile(member)
            if stream is not None:
                files[name] = parse_properties(stream.read().decode("utf-8", errors="replace"))
    return files


def parse_payload_defaults(payload: Path, version: str) -> ReleaseDefaults:
    """The defaults described by one payload archive (streamed: only what is needed is read)."""
    where = f"{payload} ({DESCRIPTOR})"
    try:
        with tarfile.open(payload, "r|gz") as archive:
            first = archive.next()
            if first is None or posixpath.normpath(first.name) != DESCRIPTOR:
                raise ReleaseDefaultsError(f"{payload}: the first member is not {DESCRIPTOR}")
            stream = archive.extractfile(first)
            descriptor = json.load(stream) if stream is not None else None
            if not isinstance(descriptor, dict):
                raise ReleaseDefaultsError(f"{where} is not a JSON object")
            if descriptor.get("version") != version:
                raise ReleaseDefaultsError(
                    f"{where} describes version {descriptor.get('version')!r}, not {version}"
                )
            database = _text_map(descriptor.get("db_settings", {}), f"{where} db_settings")
            if "settings_defaults" in descriptor:
                raw = descriptor["settings_defaults"]
                if not isinstance(raw, dict):
                    raise ReleaseDefaultsError(f"{where} settings_defaults is not a mapping")
                files = {
                    name: _text_map(values, f"{where} settings_defaults[{name!r}]")
                    for name, values in raw.items()
                }
            else:
                files = _settings_members(archive)
    except (tarfile.TarError, OSError, ValueError) as error:
        raise ReleaseDefaultsError(f"{payload}: cannot read the release's defaults ({error})") from error
    return ReleaseDefaults(version, files, database)


def read_release_defaults(
    source: ReleaseSource, product: str, version: str, cache_root: Path | None = None
) -> ReleaseDefaults:
    """Fetch (or reuse) the verified release ``version`` and read its default settings."""
    release = fetch_release(source, product, version, cache_root)
    try:
        payload = release.file(PAYLOAD).path
    except KeyError:
        raise ReleaseDefaultsError(f"{source.description}: the release has no {PAYLOAD}") from None
    return parse_payload_defaults(payload, version)
