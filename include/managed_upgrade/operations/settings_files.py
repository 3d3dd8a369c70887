"""The installation's settings files, read and edited as the CRM reads them (``settings/*.properties``).

Shared by the settings snapshot (capture and re-apply on a host) and the release defaults (the same
files inside a release's payload), so both parse ``key=value`` lines alike.
"""

from __future__ import annotations

from collections.abc import Mapping

SETTINGS_DIR = "settings"
SETTINGS_SUFFIX = ".properties"


def parse_properties(text: str) -> dict[str, str]:
    """``key=value`` lines as the CRM reads them: blank lines and ``#`` comments ignored, last one wins."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, value = stripped.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def set_properties(text: str, changes: Mapping[str, str]) -> str:
    """``text`` with the values of ``changes`` set: lines edited in place, missing keys appended."""
    pending = dict(changes)
    lines = text.splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key = stripped.split("=", 1)[0].strip()
        if key in changes:
            lines[index] = f"{key}={changes[key]}"
            pending.pop(key, None)
    if pending:
        lines.append("# re-applied by the managed upgrade (not present in this release's file)")
        lines.extend(f"{key}={value}" for key, value in pending.items())
    return "\n".join(lines) + "\n"
