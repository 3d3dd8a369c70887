"""Runs the vendor installer on an environment and decides, from facts on the host, whether it worked.

The upgrade is split into three steps so the long middle one can run without holding a worker:

1. :func:`prepare_upgrade` -- checks the staged release and the protecting backup exist, captures the
   settings snapshot (kept in the backup; the first capture wins on retries) and tells whether the
   target version already runs (then nothing is run again);
2. the installer itself -- :func:`installer_argv` is the one command (``python3 <staging>/<version>/
   installer.py --install-path P --log L``, its log written into the backup directory); the Airflow
   operator runs it detached and waits in a trigger, :func:`run_installer` runs it in place;
3. :func:`conclude_upgrade` -- exit code 0, ``VERSION`` equal to the target and ``bin/crm status`` ok, or
   :class:`InstallerFailedError` with the failed step, exit code and the log's last lines.

:func:`roll_back` restores the backup after a failure and always raises: :class:`UpgradeRolledBackError`
when the old version runs again, :class:`RollbackFailedError` (loud, distinct) when the restore failed.

The installer writes the install folder and, like the snapshot and the detached job's files, the
backup directory: :func:`prepare_upgrade` confines both to the plan's ``allowed_roots`` on the host
(:func:`managed_upgrade.transport.path_policy.confine`) before anything is written, and a roll-back restores
under the same roots.
"""

from __future__ import annotations

import logging
import posixpath
import re
import time
from dataclasses import dataclass
from typing import Any, NoReturn

from managed_upgrade.errors import (
    InstallerFailedError,
    OperationError,
    RollbackFailedError,
    UpgradeRolledBackError,
)
from managed_upgrade.operations.backup import backup_dir, read_descriptor, require_backup_id
from managed_upgrade.operations.installation import CrmStatus, crm_status, read_version
from managed_upgrade.operations.restore import restore_backup
from managed_upgrade.operations.settings_snapshot import capture_settings, save_snapshot, snapshot_path
from managed_upgrade.transport.database import DbTarget
from managed_upgrade.transport.manifest import MANIFEST_NAME
from managed_upgrade.transport.path_policy import Roots, confine, require_under
from managed_upgrade.transport.remote import RemoteHost
from managed_upgrade.vocabulary import parse_version, require

log = logging.getLogger(__name__)

INSTALLER = "installer.py"
LOG_TAIL_LINES = 25
_STEP_IN_LINE = re.compile(r"\[(?P<step>[a-z_]+)\]")


@dataclass(frozen=True)
class UpgradePlan:
    """One environment's upgrade: where things are, the target, and the backup protecting it."""

    install_path: str
    staging_path: str
    backup_path: str
    backup_id: str
    target_version: str
    allowed_roots: Roots = None
    """The environment's allowed roots (``None``: only the always-refused paths are refused)."""

    def __post_init__(self) -> None:
        for path in (self.install_path, self.staging_path, self.backup_path):
            require("absolute path", path)
            require_under(path, self.allowed_roots, action="upgrade with")
        require("version", self.target_version)
        require_backup_id(self.backup_id)

    @property
    def release_dir(self) -> str:
        return posixpath.join(self.staging_path, self.target_version)

    @property
    def backup_dir(self) -> str:
        return backup_dir(self.backup_path, self.backup_id)

    @property
    def log_path(self) -> str:
        """The installer log is written beside the backup, so it is kept with it."""
        return posixpath.join(self.backup_dir, f"installer-{self.target_version}.log")

    @property
    def snapshot_path(self) -> str:
        return snapshot_path(self.backup_path, self.backup_id)

    @property
    def job_base_dir(self) -> str:
        """Where a detached installer run keeps its pid, output and exit code files."""
        return posixpath.join(self.backup_dir, "installer-job")


LOCKED_EXIT_CODE = 201
"""What the installer command exits with when another installer holds the installation's lock
(``flock --conflict-exit-code``); the vendor installer itself exits 0 or 1."""


def installer_lock_path(plan: UpgradePlan) -> str:
    """One lock per installation, beside its backups: never two installers on it at once."""
    return posixpath.join(plan.backup_path, ".installer.lock")


def installer_argv(plan: UpgradePlan) -> list[str]:
    """The vendor installer command line (an argv list; joined with :func:`shlex.join` by the runner).

    The installer runs under ``flock`` on :func:`installer_lock_path`, held as long as it runs: a
    second one (a retry that lost track of the first, a second worker) exits at once with
    :data:`LOCKED_EXIT_CODE` without touching anything.
    """
    return [
        "flock",
        "--nonblock",
        "--conflict-exit-code",
        str(LOCKED_EXIT_CODE),
        installer_lock_path(plan),
        "python3",
        posixpath.join(plan.release_dir, INSTALLER),
        "--install-path",
        plan.install_path,
        "--log",
        plan.log_path,
    ]


class InstallerLockedError(OperationError):
    """Another installer runs on the installation; nothing was changed and nothing is restored."""


@dataclass(frozen=True)
class InstallerJob:
    """A detached installer run found on the host: its files and what became of it."""

    job_id: str
    job_dir: str
    log_file: str
    exit_code_file: str
    exit_code: int | None
    """Set once the run ended (the wrapper writes it atomically)."""
    running: bool
    """No exit code yet and its process is alive."""


def installer_jobs(host: RemoteHost, plan: UpgradePlan) -> list[InstallerJob]:
    """Every detached installer run of this upgrade (its backup's job folder), oldest try first.

    A retry of the upgrade task (a worker killed while it waited, a cleared task) finds the run an
    earlier try started and follows it instead of starting the installer again.
    """
    if not host.is_dir(plan.job_base_dir):
        return []
    jobs = []
    for name in sorted(host.listdir(plan.job_base_dir), key=_try_number):
        job_dir = posixpath.join(plan.job_base_dir, name)
        exit_code_file = posixpath.join(job_dir, "exit_code")
        exit_code = _read_exit_code(host, exit_code_file)
        running = exit_code is None and _alive(host, posixpath.join(job_dir, "pid"))
        jobs.append(
            InstallerJob(
                name, job_dir, posixpath.join(job_dir, "stdout.log"), exit_code_file, exit_code, running
            )
        )
    return jobs


_TRY = re.compile(r"_try([0-9]{1,6})_", re.ASCII)
_DIGITS = re.compile(r"-?[0-9]{1,3}", re.ASCII)


def _try_number(job_id: str) -> tuple[int, str]:
    found = _TRY.search(job_id)
    return (int(found[1]) if found else 0, job_id)


def _read_exit_code(host: RemoteHost, path: str) -> int | None:
    if not host.exists(path):
        return None
    text = host.read_text(path).strip()
    return int(text) if _DIGITS.fullmatch(text) else None


def _alive(host: RemoteHost, pid_file: str) -> bool:
    """Whether the job's process group still runs (its pid file is written as it starts)."""
    if not host.exists(pid_file):
        return True  # started a moment ago: the wrapper writes the pid first thing
    pid = host.read_text(pid_file).strip()
    if not pid.isascii() or not pid.isdigit():
        return False
    return host.run(["kill", "-0", pid], check=False, timeout=30).exit_code == 0


@dataclass(frozen=True)
class Preparation:
    """What :func:`prepare_upgrade` found and did."""

    from_version: str
    already_upgraded: bool
    snapshot_written: bool


def prepare_upgrade(host: RemoteHost, plan: UpgradePlan, database: DbTarget) -> Preparation:
    """Check preconditions, keep the settings snapshot; say whether the target already runs."""
    descriptor = read_descriptor(host, plan.backup_path, plan.backup_id)
    if descriptor["install_path"] != plan.install_path:
        raise OperationError(
            f"backup {plan.backup_id} is of {descriptor['install_path']}, not {plan.install_path}; "
            "an upgrade must be protected by a backup of the same installation"
        )
    current = read_version(host, plan.install_path)
    if current == plan.target_version:
        status = crm_status(host, plan.install_path)
        if status.ok:
            return Preparation(current, already_upgraded=True, snapshot_written=False)
    if parse_version(current) > parse_version(plan.target_version):
        raise OperationError(
            f"{host.label}: {plan.install_path} runs {current}, newer than the target {plan.target_version}"
        )
    for name in (INSTALLER, MANIFEST_NAME):
        if not host.exists(posixpath.join(plan.release_dir, name)):
            raise OperationError(
                f"{host.label}: {plan.release_dir}/{name} is missing; "
                f"stage release {plan.target_version} first"
            )
    confine(host, plan.release_dir, plan.allowed_roots, action="run an installer from")
    confine(host, plan.install_path, plan.allowed_roots, action="upgrade")
    confine(host, plan.backup_dir, plan.allowed_roots, action="write the installer log and snapshot to")
    snapshot = capture_settings(host, plan.install_path, database, version=current)
    written = save_snapshot(host, plan.snapshot_path, snapshot, allowed_roots=plan.allowed_roots)
    return Preparation(descriptor["version"], already_upgraded=False, snapshot_written=written)


def read_log_tail(host: RemoteHost, path: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a log on the host (empty if it does not exist)."""
    try:
        text = host.read_bytes(path).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return text.splitlines()[-lines:]


def failed_step(log_lines: list[str]) -> str:
    """The installer step named on the log's ``FAILED`` line (else the last step the log mentions)."""
    for line in reversed(log_lines):
        match = _STEP_IN_LINE.search(line)
        if match and "FAILED" in line and match["step"] != "installer":
            return match["step"]
    for line in reversed(log_lines):
        match = _STEP_IN_LINE.search(line)
        if match and match["step"] != "installer":
            return match["step"]
    return "installer"


@dataclass(frozen=True)
class UpgradeResult:
    """A verified upgrade."""

    from_version: str
    to_version: str
    log_path: str
    log_tail: tuple[str, ...]
    status: CrmStatus
    ran_installer: bool

    def summary(self) -> dict[str, Any]:
        return {
            "from_version": self.from_version,
            "to_version": self.to_version,
            "installer_log": self.log_path,
            "log_tail": list(self.log_tail[-10:]),
            "crm_status_ok": self.status.ok,
            "ran_installer": self.ran_installer,
        }


def conclude_upgrade(
    host: RemoteHost, plan: UpgradePlan, exit_code: int | None, from_version: str
) -> UpgradeResult:
    """Judge a finished installer run; raise :class:`InstallerFailedError` unless the target runs.

    :class:`InstallerLockedError` if it did not run because another installer holds the lock.
    """
    if exit_code == LOCKED_EXIT_CODE:
        raise InstallerLockedError(
            f"{host.label}: another installer runs on {plan.install_path} "
            f"(lock {installer_lock_path(plan)}); this one did not start and nothing was changed or restored"
        )
    tail = read_log_tail(host, plan.log_path)
    if exit_code != 0:
        reason = (
            "the installer reported failure"
            if exit_code is not None
            else "the installer's exit code is unknown"
        )
        raise InstallerFailedError(host.label, failed_step(tail), exit_code, tail, reason)
    try:
        version = read_version(host, plan.install_path)
    except OperationError as exc:
        raise InstallerFailedError(host.label, "verify", exit_code, tail, str(exc)) from exc
    status = crm_status(host, plan.install_path)
    if version != plan.target_version or not status.ok:
        expected = plan.target_version
        reason = f"after the installer VERSION says {version} (expected {expected}); {status.describe()}"
        raise InstallerFailedError(host.label, "verify", exit_code, tail, reason)
    return UpgradeResult(from_version, version, plan.log_path, tuple(tail), status, ran_installer=True)


def run_installer(host: RemoteHost, plan: UpgradePlan, timeout: float | None = None) -> int:
    """Run the installer in place (blocking); its output goes to its log file. Returns the exit code."""
    started = time.monotonic()
    result = host.run(installer_argv(plan), check=False, timeout=timeout)
    log.info("%s: installer exited %d after %.1fs", host.label, result.exit_code, time.monotonic() - started)
    return result.exit_code


def roll_back(
    host: RemoteHost, plan: UpgradePlan, database: DbTarget, failure: InstallerFailedError
) -> NoReturn:
    """Restore the backup taken just before the failed upgrade; always raises (see module docstring)."""
    log.error("%s", failure)
    log.warning("%s: restoring backup %s after the failed upgrade", host.label, plan.backup_id)
    try:
        restored = restore_backup(
            host, plan.install_path, plan.backup_path, plan.backup_id, database, plan.allowed_roots
        )
    except Exception as exc:
        raise RollbackFailedError(failure, plan.backup_id, exc) from exc
    raise UpgradeRolledBackError(failure, plan.backup_id, restored.version) from failure


def upgrade_environment(
    host: RemoteHost, plan: UpgradePlan, database: DbTarget, timeout: float | None = None
) -> UpgradeResult:
    """The whole upgrade in one blocking call: prepare, run, verify, roll back on failure."""
    preparation = prepare_upgrade(host, plan, database)
    if preparation.already_upgraded:
        status = crm_status(host, plan.install_path)
        return UpgradeResult(
            plan.target_version, plan.target_version, plan.log_path, (), status, ran_installer=False
        )
    exit_code = run_installer(host, plan, timeout)
    try:
        return conclude_upgrade(host, plan, exit_code, preparation.from_version)
    except InstallerFailedError as failure:
        roll_back(host, plan, database, failure)
