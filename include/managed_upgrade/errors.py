"""Failures of the real environment operations, typed so callers can tell "retry" from "call a human".

Every message names the host, file or database involved and what was expected, because the person
reading it is a consultant looking at a failed task in the Airflow UI, not at this code.

A command failing on a host raises :class:`managed_upgrade.transport.remote.RemoteCommandError` (an
:class:`OperationError` too), defined where command lines are built and described.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def describe_error(error: Any) -> str | None:
    """``UpgradeRolledBackError: ...`` for an exception (the type tells which failure it is); text as it
    is; None for no error."""
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return None if error is None else str(error)


class OperationError(RuntimeError):
    """Base class: an operation on an environment (staging, backup, upgrade, settings) failed."""


class ManifestError(OperationError):
    """A checksum manifest is malformed, or the files do not match the list it gives."""


class ChecksumMismatchError(OperationError):
    """A file's sha256 differs from what its manifest promises; the bad copy was not kept."""

    def __init__(self, name: str, where: str, expected: str, actual: str) -> None:
        self.name = name
        self.where = where
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"checksum mismatch for {name} on {where}: expected sha256 {expected}, got {actual}; "
            "the corrupt copy was discarded (never stored under its final name)"
        )


class StagingError(OperationError):
    """Staging failed on several hosts at once; ``failures`` maps each host to its error."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        lines = "\n".join(f"  {host}: {error}" for host, error in failures.items())
        super().__init__(f"staging failed on {len(failures)} hosts:\n{lines}")


class BackupError(OperationError):
    """A backup could not be taken or did not verify; the environment must not be touched."""


class RestoreError(OperationError):
    """Restoring an environment from a backup failed; see the message for what is left where."""


class InstallerFailedError(OperationError):
    """The vendor installer failed (or left the installation broken) and nothing was restored yet."""

    def __init__(
        self, host: str, step: str, exit_code: int | None, log_tail: Sequence[str], reason: str
    ) -> None:
        self.host = host
        self.step = step
        self.exit_code = exit_code
        self.log_tail = tuple(log_tail)
        self.reason = reason
        tail = "\n".join(f"    {line}" for line in self.log_tail) or "    (log empty)"
        super().__init__(
            f"upgrade on {host} failed at step {step!r} (exit code {exit_code}): {reason}\n"
            f"  last installer log lines:\n{tail}"
        )


class UpgradeRolledBackError(OperationError):
    """The upgrade failed and the environment was restored to the backup taken just before it.

    The task still fails (the environment is not upgraded), but the environment runs its old version.
    """

    def __init__(self, failure: InstallerFailedError, backup_id: str, version: str) -> None:
        self.failure = failure
        self.backup_id = backup_id
        self.version = version
        super().__init__(
            f"{failure}\n"
            f"RESTORE SUCCEEDED: {failure.host} was restored from backup {backup_id}; "
            f"it runs version {version} again (VERSION and `bin/crm status` verified)."
        )


class RollbackFailedError(OperationError):
    """The upgrade failed AND restoring the backup failed: the environment needs a human now."""

    def __init__(self, failure: InstallerFailedError, backup_id: str, restore_error: BaseException) -> None:
        self.failure = failure
        self.backup_id = backup_id
        self.restore_error = restore_error
        super().__init__(
            f"!!! UPGRADE FAILED AND RESTORE FAILED on {failure.host} - manual recovery needed !!!\n"
            f"{failure}\n"
            f"restore from backup {backup_id} failed: {restore_error}"
        )
