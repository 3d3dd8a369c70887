"""What an installation says about itself: its ``VERSION`` file and ``bin/crm status``.

Backups record the version, upgrades and restores are only "done" when both agree with what was
expected; this is the one place that asks the host.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field

from managed_upgrade.errors import OperationError
from managed_upgrade.transport.remote import RemoteHost
from managed_upgrade.vocabulary import problem, require


@dataclass(frozen=True)
class CrmStatus:
    """The parsed answer of ``bin/crm status`` (``ok`` is False if it could not even answer)."""

    ok: bool
    exit_code: int
    version: str | None
    schema_version: str | None
    problems: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        state = "ok" if self.ok else "NOT ok: " + "; ".join(self.problems or ("no details",))
        versions = f"version {self.version}, schema {self.schema_version}"
        return f"crm status {state} ({versions}, exit {self.exit_code})"


def read_version(host: RemoteHost, install_path: str) -> str:
    """The installed version from ``<install_path>/VERSION``; raises if missing or not X.Y.Z."""
    require("absolute path", install_path)
    path = posixpath.join(install_path, "VERSION")
    try:
        text = host.read_text(path).strip()
    except FileNotFoundError:
        raise OperationError(f"{host.label}: {path} is missing; is {install_path} an installation?") from None
    found = problem("version", text)
    if found is not None:
        raise OperationError(f"{host.label}: {path} holds {text[:80]!r}: {found}")
    return text


def crm_status(host: RemoteHost, install_path: str, timeout: float = 120) -> CrmStatus:
    """Run ``bin/crm status`` on the host (with ``python3``, so a lost exec bit does not matter)."""
    require("absolute path", install_path)
    result = host.run(
        ["python3", posixpath.join(install_path, "bin", "crm"), "status"], check=False, timeout=timeout
    )
    try:
        report = json.loads(result.stdout)
        return CrmStatus(
            ok=bool(report.get("ok")) and result.exit_code == 0,
            exit_code=result.exit_code,
            version=report.get("version"),
            schema_version=report.get("schema_version"),
            problems=tuple(str(p) for p in report.get("problems") or ()),
        )
    except (ValueError, AttributeError):
        detail = (result.error_text or result.text).strip()[-500:] or "no output"
        return CrmStatus(False, result.exit_code, None, None, (f"bin/crm status gave no JSON: {detail}",))


def verify_running_version(host: RemoteHost, install_path: str, expected: str) -> CrmStatus:
    """Raise unless ``VERSION`` equals ``expected`` and ``bin/crm status`` is ok; return the status."""
    version = read_version(host, install_path)
    status = crm_status(host, install_path)
    if version != expected or not status.ok:
        raise OperationError(
            f"{host.label}: {install_path} should run {expected}: VERSION says {version}, {status.describe()}"
        )
    return status
