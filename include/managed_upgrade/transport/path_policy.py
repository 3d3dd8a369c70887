"""Where operations may write or delete on a customer host: below the environment's allowed roots, and
never in a system directory, whatever the roots say.

An environment declares ``allowed_roots`` (absolute folders; default :data:`DEFAULT_ALLOWED_ROOTS`);
its ``install_path``, ``staging_path`` and ``backup_path`` must lie strictly below one of them. Some
paths are refused always: ``/`` and the system directories (/bin, /boot, /dev, /etc, /lib*, /proc,
/root, /run, /sbin, /sys, /usr, /var except /var/opt and /var/local, and everything below them),
shared parents themselves (/home, /tmp, /opt, /srv, ...), any path through ``.ssh`` or ``.gnupg``,
and a root itself.

The rules (:func:`path_problem`, :func:`root_problem`) live in :mod:`managed_upgrade.transport.host_agent`,
which applies them on the host too: its ``remove`` command resolves symlinks with ``realpath`` before
it deletes anything. Here they serve the config (:func:`environment_path_problems`) and the
operations, which call :func:`confine` right before they write or delete: the path as written
(``..`` resolved lexically) and as it really is on the host (symlinks resolved by the SFTP server)
must both be allowed, else :class:`PathPolicyError` names the path and the roots.

``roots=None`` (an operation called without an environment's roots) still applies the always-refused
rules; an empty tuple allows nothing.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from managed_upgrade.errors import OperationError
from managed_upgrade.transport.host_agent import (
    BARE_DIRECTORIES,
    SECRET_COMPONENTS,
    SYSTEM_TREE_EXCEPTIONS,
    SYSTEM_TREES,
    normalize_path,
    path_problem,
    root_problem,
)

if TYPE_CHECKING:
    import paramiko

__all__ = [
    "BARE_DIRECTORIES",
    "DEFAULT_ALLOWED_ROOTS",
    "MAX_ALLOWED_ROOTS",
    "SECRET_COMPONENTS",
    "SYSTEM_TREES",
    "SYSTEM_TREE_EXCEPTIONS",
    "PathPolicyError",
    "Roots",
    "confine",
    "environment_path_problems",
    "normalize_path",
    "path_problem",
    "real_path",
    "require_under",
    "root_problem",
]

DEFAULT_ALLOWED_ROOTS: tuple[str, ...] = ("/opt", "/srv", "/var/opt", "/data")
"""Where an environment's folders may live unless its config says otherwise: the FHS places for add-on
software (/opt, /var/opt) and site data (/srv), and the conventional data volume mount (/data)."""

MAX_ALLOWED_ROOTS = 16

Roots = Sequence[str] | None
"""Allowed roots of an environment; ``None``: only the always-refused rules apply."""


class PathPolicyError(OperationError, ValueError):
    """A path an operation was about to write or delete is outside the allowed roots (or a system path)."""


class _Host(Protocol):
    """What :func:`real_path` and :func:`confine` use of a
    :class:`~managed_upgrade.transport.remote.RemoteHost` (described, not imported: ``remote`` imports
    this module)."""

    label: str

    @property
    def sftp(self) -> paramiko.SFTPClient: ...


def _roots_text(roots: Roots) -> str:
    return "none declared" if roots is None else ", ".join(roots) or "none"


def _refusal(label: str | None, action: str, path: str, problem: str, roots: Roots) -> PathPolicyError:
    where = f"{label}: " if label else ""
    named = "" if "allowed roots" in problem else f" (allowed roots: {_roots_text(roots)})"
    return PathPolicyError(f"{where}refusing to {action} {path}: it {problem}{named}; nothing was changed")


def require_under(path: str, roots: Roots, *, action: str = "write to", label: str | None = None) -> str:
    """``path`` (normalized) if it may be written or deleted under ``roots``; else :class:`PathPolicyError`.

    Lexical only (``..`` and ``//`` resolved as text); :func:`confine` also asks the host.
    """
    problem = path_problem(path, roots)
    if problem is not None:
        raise _refusal(label, action, path, problem, roots)
    normal = normalize_path(path)
    assert normal is not None  # path_problem refuses a path that is not absolute
    return normal


def real_path(host: _Host, path: str) -> str:
    """``path`` as it really is on the host: the longest existing prefix with its symlinks resolved (by
    the SFTP server's ``realpath``), the missing rest appended as written."""
    current = normalize_path(path)
    if current is None:
        raise PathPolicyError(f"{host.label}: {path!r} is not an absolute path")
    missing: list[str] = []
    while True:
        try:
            resolved = host.sftp.normalize(current)
            break
        except FileNotFoundError:  # does not exist (yet): resolve its parent
            if current == "/":
                raise
            missing.append(posixpath.basename(current))
            current = posixpath.dirname(current)
        except OSError as error:  # unreadable on the way: what it really is cannot be known, so refuse
            raise PathPolicyError(
                f"{host.label}: cannot tell where {path} really leads ({current}: {error}); "
                "nothing was changed"
            ) from error
    return posixpath.join(resolved, *reversed(missing))


def confine(host: _Host, path: str, roots: Roots, *, action: str = "write to") -> str:
    """Refuse (:class:`PathPolicyError`) unless ``path`` may be written or deleted, as written and as it
    really is on ``host`` (a symlink on the way that leads out of the roots is caught); returns ``path``.

    Called by every operation right before it writes or deletes.
    """
    require_under(path, roots, action=action, label=host.label)
    real = real_path(host, path)
    real_roots = None if roots is None else [real_path(host, root) for root in roots]
    problem = path_problem(real, real_roots)
    if problem is not None:
        raise _refusal(host.label, action, path, f"resolves to {real}, which {problem}", roots)
    return path


def environment_path_problems(
    roots: Sequence[str], paths: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """``(field, problem)`` for each bad root and each ``(field, path)`` outside ``roots`` (config checks)."""
    problems = []
    for index, root in enumerate(roots):
        problem = root_problem(root)
        if problem is not None:
            problems.append((f"allowed_roots[{index}]", f"{problem} (got {root!r})"))
    if problems:
        return problems
    for field, path in paths:
        problem = path_problem(path, roots)
        if problem is not None:
            problems.append((field, f"{problem} (got {path!r})"))
    return problems
