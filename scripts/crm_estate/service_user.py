"""The simulated hosts' service user: whom the SSH logins, the vendor installer and the test cases run as.

On a real customer host the upgrade logs in as a non-root service account that owns the installation,
its staging and backup folders, and nothing else. The estate does the same: run as root, it creates a
system user (:data:`SERVICE_USER`, ``crmsvc`` unless ``$ESTATE_SERVICE_USER`` says otherwise), makes
the sshd accept only that user, and hands it the folders it works in (:func:`hand_over`): the install
roots ``<host>/crm``, ``<host>/staging``, ``<host>/backups`` and ``<host>/isolated``. Everything else under
the estate root (keys, sshd configs and logs, releases, state) stays root's and read-only to it. Run as an
ordinary user, the estate's user is that user: already unprivileged, owning everything it made.

Its folders are set-group-id with its group, the classic Unix way for several people to work in one
tree: what root (a test, an operator) creates in them belongs to the service user's group, and with
:func:`share_with_service_user` (umask without the group-write bit) stays changeable by the service user.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = os.environ.get("ESTATE_SERVICE_USER", "crmsvc")
SERVICE_HOME = Path("/var/lib") / SERVICE_USER
SERVICE_SHELL = "/bin/sh"
"""The login shell sshd runs commands with; test cases still cannot run a shell (their argv goes to
``exec timeout``) and are checked by name before that."""
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class ServiceUserError(RuntimeError):
    """The service user could not be created or used."""


@dataclass(frozen=True)
class ServiceUser:
    """Whom the simulated hosts run things as."""

    name: str
    uid: int
    gid: int
    home: Path

    @property
    def is_current_user(self) -> bool:
        return self.uid == os.geteuid()


def current_user() -> ServiceUser:
    entry = pwd.getpwuid(os.geteuid())
    return ServiceUser(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def ensure_service_user(name: str = SERVICE_USER) -> ServiceUser:
    """The service user, created first if the estate runs as root and it does not exist yet.

    Not root: the current user (it cannot create accounts, and is unprivileged already).
    """
    if os.geteuid() != 0:
        return current_user()
    if not _USER_NAME.fullmatch(name) or name == "root":
        raise ServiceUserError(f"service user name {name!r} is not a valid non-root user name")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = _create(name)
    if entry.pw_uid == 0:
        raise ServiceUserError(f"service user {name} has uid 0; it must be an unprivileged account")
    return ServiceUser(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def _create(name: str) -> pwd.struct_passwd:
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    home = Path("/var/lib") / name
    # -p '*': no password, but not "locked" ('!'), which sshd would refuse even for key logins.
    argv = [useradd, "--system", "--user-group", "--create-home", "--home-dir", str(home)]
    argv += ["--shell", SERVICE_SHELL, "--comment", "simulated CRM service account", "-p", "*", name]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    try:
        return pwd.getpwnam(name)  # another estate may have created it at the same moment
    except KeyError:
        raise ServiceUserError(
            f"cannot create the service user {name} (exit {result.returncode}): {result.stderr.strip()}"
        ) from None


def hand_over(user: ServiceUser, paths: Iterable[Path], stop_at: Iterable[Path]) -> None:
    """Make ``user`` own each path (recursively) and its parent folders up to, not including, ``stop_at``.

    A no-op when the estate runs as ``user`` already. Symlinks are changed themselves, never followed.
    """
    if user.is_current_user or os.geteuid() != 0:
        return
    stops = {Path(os.path.normpath(stop)) for stop in stop_at}
    for given in paths:
        path = Path(os.path.normpath(given))
        if not path.exists():
            continue
        _chown_tree(path, user)
        parent = path.parent
        while parent not in stops and parent != parent.parent:
            _chown(parent, user)
            parent = parent.parent


def make_traversable(user: ServiceUser, root: Path) -> list[Path]:
    """Let ``user`` reach ``root``: give ``o+x`` (enter, not list) to each folder above it that it cannot
    enter (e.g. pytest's private ``/tmp/pytest-of-root``); returns the folders changed."""
    if user.is_current_user or os.geteuid() != 0:
        return []
    changed = []
    for folder in reversed(Path(os.path.normpath(root)).parents):
        info = folder.stat()
        if info.st_uid == user.uid or info.st_mode & 0o001:
            continue
        if info.st_gid == user.gid and info.st_mode & 0o010:
            continue
        folder.chmod(stat.S_IMODE(info.st_mode) | 0o001)
        changed.append(folder)
    return changed


def share_with_service_user(user: ServiceUser) -> None:
    """Root working in the service user's folders: create files and folders group-writable (umask
    without ``g+w``), so the service user (their group, through the set-group-id folders) can change
    them. A no-op unless run as root for another service user."""
    if user.is_current_user or os.geteuid() != 0:
        return
    current = os.umask(0)
    os.umask(current & ~0o020)


def _chown_tree(path: Path, user: ServiceUser) -> None:
    _chown(path, user)
    if not path.is_dir() or path.is_symlink():
        return
    for directory, folders, files in os.walk(path):
        for name in (*folders, *files):
            _chown(Path(directory) / name, user)


def _chown(path: Path, user: ServiceUser) -> None:
    """Owner and group the service user; folders also set-group-id (their new entries get its group)."""
    os.chown(path, user.uid, user.gid, follow_symlinks=False)
    info = path.lstat()
    if stat.S_ISDIR(info.st_mode) and not info.st_mode & stat.S_ISGID:
        path.chmod(stat.S_IMODE(info.st_mode) | stat.S_ISGID)
