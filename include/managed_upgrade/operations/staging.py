"""Puts a verified release on every environment host, resumably and idempotently, verified on the host.

Per host and file: a file already at ``<staging>/<version>/<name>`` with the manifest's sha256 is
skipped; an interrupted earlier transfer left ``<name>.part``, which is resumed from its size;
anything else is sent whole into ``<name>.part``. The host then hashes the complete ``.part`` itself
and only a matching file is renamed to its final name, so a host never holds a bad file under the
name the installer reads. ``SHA256SUMS`` goes last (the installer checks the release against it).
Hosts are served in parallel, one stream each; the transport for big files (see
:mod:`managed_upgrade.transport.transfer`) is the OpenSSH client with the connection's pinned host key unless
it cannot be used. Small files go through the already open paramiko connection: for them a new
OpenSSH handshake costs more than the transfer. The release directory must lie under the
environment's allowed roots, checked on the host (symlinks resolved) before anything is written there.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from managed_upgrade.errors import ChecksumMismatchError, StagingError
from managed_upgrade.operations.release_source import CachedFile, CachedRelease
from managed_upgrade.transport.path_policy import Roots, confine, require_under
from managed_upgrade.transport.remote import RemoteHost
from managed_upgrade.transport.transfer import ParamikoSender, Sender, TransportName, make_sender
from managed_upgrade.vocabulary import require

log = logging.getLogger(__name__)

SMALL_FILE_BYTES = 8 * 1024 * 1024
"""Files up to this size use the open connection instead of a new OpenSSH process."""

Action = Literal["sent", "skipped", "resumed"]


@dataclass(frozen=True)
class StagingTarget:
    """One environment host and the staging root there (the release goes to ``<root>/<version>/``)."""

    name: str
    host: RemoteHost
    staging_path: str
    allowed_roots: Roots = None
    """The environment's allowed roots (``None``: only the always-refused paths are refused)."""

    def __post_init__(self) -> None:
        require_under(self.staging_path, self.allowed_roots, action="stage a release in", label=self.name)


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file on one host."""

    name: str
    action: Action
    bytes_sent: int
    seconds: float


@dataclass
class HostOutcome:
    """Everything staged on one host."""

    target: str
    directory: str
    transport: str
    files: list[FileOutcome] = field(default_factory=list)

    @property
    def bytes_sent(self) -> int:
        return sum(item.bytes_sent for item in self.files)


@dataclass(frozen=True)
class StagingReport:
    """The staging of one release to all hosts."""

    product: str
    version: str
    hosts: tuple[HostOutcome, ...]

    def summary(self) -> dict[str, Any]:
        """Compact, JSON-able: per host and file the action (for XCom and the task log)."""
        return {
            "product": self.product,
            "version": self.version,
            "hosts": {
                host.target: {
                    "directory": host.directory,
                    "transport": host.transport,
                    "bytes_sent": host.bytes_sent,
                    "files": {item.name: item.action for item in host.files},
                }
                for host in self.hosts
            },
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def release_directory(staging_path: str, version: str) -> str:
    """``<staging_path>/<version>`` after checking both may appear in a command line."""
    require("absolute path", staging_path)
    require("version", version)
    return posixpath.join(staging_path, version)


def _stage_file(host: RemoteHost, sender: Sender, cached: CachedFile, directory: str) -> FileOutcome:
    started = time.monotonic()
    if cached.size <= SMALL_FILE_BYTES:
        sender = ParamikoSender(host)
    final = posixpath.join(directory, cached.name)
    partial = final + ".part"

    if host.file_size(final) == cached.size and host.sha256(final) == cached.sha256:
        return FileOutcome(cached.name, "skipped", 0, time.monotonic() - started)

    offset = host.file_size(partial) or 0
    if offset >= cached.size:  # complete or oversized leftovers cannot be trusted: resend whole
        offset = 0
    action: Action = "resumed" if offset else "sent"
    received = sender.send(cached.path, partial, offset)
    sent = received.bytes_sent
    if received.sha256 != cached.sha256 and offset:
        # The kept prefix itself was bad (e.g. left by a different build of the release): start over once.
        log.warning(
            "%s: resumed %s did not verify (%s); sending it whole", host.label, cached.name, received.sha256
        )
        received = sender.send(cached.path, partial, 0)
        sent += received.bytes_sent
        action = "sent"
    if received.sha256 != cached.sha256 or received.size != cached.size:
        host.remove_file(partial)
        raise ChecksumMismatchError(
            cached.name, f"host {host.label} ({partial})", cached.sha256, received.sha256
        )
    host.rename(partial, final)
    return FileOutcome(cached.name, action, sent, time.monotonic() - started)


def stage_to_host(
    release: CachedRelease,
    target: StagingTarget,
    transport: TransportName = "auto",
    on_file: Callable[[str, FileOutcome], None] | None = None,
) -> HostOutcome:
    """Stage every file of ``release`` on one host (see the module docstring)."""
    directory = release_directory(target.staging_path, release.version)
    sender = make_sender(target.host, transport)
    outcome = HostOutcome(target.name, directory, sender.name)
    confine(target.host, directory, target.allowed_roots, action="stage a release in")
    target.host.makedirs(directory)
    for cached in release.files:  # SHA256SUMS is last
        result = _stage_file(target.host, sender, cached, directory)
        outcome.files.append(result)
        log.info(
            "%s: %s %s (%d bytes, %.1fs)",
            target.name,
            result.action,
            cached.name,
            result.bytes_sent,
            result.seconds,
        )
        if on_file is not None:
            on_file(target.name, result)
    return outcome


def stage_release(
    release: CachedRelease,
    targets: Sequence[StagingTarget],
    transport: TransportName = "auto",
    on_file: Callable[[str, FileOutcome], None] | None = None,
) -> StagingReport:
    """Stage ``release`` on all ``targets`` in parallel; the first failure is raised after all finish."""
    names = [target.name for target in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"staging targets must have distinct names, got {names}")
    with ThreadPoolExecutor(max_workers=max(1, len(targets)), thread_name_prefix="stage") as pool:
        futures = [pool.submit(stage_to_host, release, target, transport, on_file) for target in targets]
        outcomes = []
        errors = []
        for target, future in zip(targets, futures, strict=True):
            try:
                outcomes.append(future.result())
            except Exception as exc:
                errors.append((target.name, exc))
    if len(errors) == 1:
        raise errors[0][1]
    if errors:
        raise StagingError(dict(errors)) from errors[0][1]
    return StagingReport(release.product, release.version, tuple(outcomes))
