"""What the Development environment looks like before anything changes, for the consultant's analysis.

The seed asks the consultant to "analyse the Development Environment and understand the installation
and the modules". The inventory task collects raw facts over SSH and from the config database; this
module turns those raw outputs into one JSON-ready dict (XCom, ledger) and a markdown section for the
analysis gate, and flags what deserves a look (version drift, a broken installation, little disk).
Parsing lives here, away from SSH and Airflow, so every odd output is unit-tested.

Only setting *keys* are kept: values may hold credentials (``database.properties``), and the analysis
needs to know which settings exist, not their secrets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from managed_upgrade.markdown import md
from managed_upgrade.operations.settings_files import parse_properties
from managed_upgrade.vocabulary import is_safe

DISK_HEADROOM_FACTOR = 3
"""Free space wanted on the install filesystem, as a multiple of the installation's size
(a backup archive, the staged release and the upgraded files side by side)."""

MAX_KEYS_SHOWN = 30
"""Setting keys listed per file in the markdown (all are kept in the dict)."""


class InventoryError(ValueError):
    """A raw output could not be read; names the source and shows the start of what was received."""

    def __init__(self, source: str, problem: str, raw: str = "") -> None:
        shown = f" (got {raw[:200]!r})" if raw else ""
        super().__init__(f"{source}: {problem}{shown}")


@dataclass(frozen=True)
class HostFacts:
    """Raw outputs read from the host (file contents and command outputs, undecoded)."""

    version_file: str | None
    """Content of ``VERSION``; ``None`` when the file is missing."""
    module_descriptors: Mapping[str, str] = field(default_factory=dict)
    """``modules/<dir>/module.yaml`` contents by directory name."""
    settings_files: Mapping[str, str] = field(default_factory=dict)
    """``settings/*.properties`` contents by file name."""
    du_output: str = ""
    """``du -sk -- <install_path>``."""
    df_output: str = ""
    """``df -Pk -- <install_path>``."""
    crm_status_exit_code: int | None = None
    crm_status_output: str = ""
    """stdout of ``bin/crm status``."""


@dataclass(frozen=True)
class DatabaseFacts:
    """Raw answers of the config database (read in a READ ONLY transaction)."""

    schema_versions: tuple[str, ...]
    """Every row of ``crm_schema_version`` (exactly one is healthy)."""
    table_rows: Mapping[str, int]
    """Exact row count per ``schema.table``."""
    server_version: str = ""
    size_bytes: int | None = None


# --- parsers ----------------------------------------------------------------------------------


def parse_version_file(text: str | None) -> str | None:
    """The ``X.Y.Z`` in ``VERSION``, ``None`` if absent; anything else is an error."""
    if text is None:
        return None
    version = text.strip()
    if not is_safe("version", version):
        raise InventoryError("VERSION", "does not hold a version X.Y.Z", text)
    return version


def parse_module_descriptor(directory: str, text: str) -> dict[str, str]:
    """``key: value`` lines of ``module.yaml`` (flat); ``name`` defaults to the directory."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and not key.startswith((" ", "#")):
            fields[key.strip()] = value.strip().strip("'\"")
    fields.setdefault("name", directory)
    fields["directory"] = directory
    return fields


def parse_properties_keys(text: str) -> list[str]:
    """Keys of a properties file in file order, read as the CRM (Java) reads them."""
    return list(parse_properties(text))


def parse_du_kib(output: str) -> int:
    """Size in KiB from ``du -sk`` (first field of the last line)."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines or not lines[-1].split()[0].isdigit():
        raise InventoryError("du -sk", "no size in the output", output)
    return int(lines[-1].split()[0])


def parse_df(output: str) -> dict[str, Any]:
    """``df -Pk`` (POSIX format): size, used, available in KiB, use percent, mount point."""
    lines = [line for line in output.splitlines() if line.strip()]
    if len(lines) < 2:
        raise InventoryError("df -Pk", "expected a header and one data line", output)
    parts = lines[-1].split()
    if len(parts) < 6 or not all(part.isdigit() for part in parts[1:4]) or not parts[4].endswith("%"):
        raise InventoryError("df -Pk", "data line is not '<fs> <size> <used> <avail> <pct>% <mount>'", output)
    return {
        "filesystem": parts[0],
        "size_kib": int(parts[1]),
        "used_kib": int(parts[2]),
        "available_kib": int(parts[3]),
        "used_percent": int(parts[4].rstrip("%")),
        "mount": " ".join(parts[5:]),
    }


def parse_crm_status(exit_code: int | None, output: str) -> dict[str, Any]:
    """``bin/crm status`` JSON plus its exit code; unreadable output becomes a problem, not an error."""
    try:
        data = json.loads(output) if output.strip() else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return {
            "exit_code": exit_code,
            "ok": False,
            "version": None,
            "schema_version": None,
            "modules": [],
            "problems": [f"bin/crm status printed no JSON: {output.strip()[:200]!r}"],
        }
    return {
        "exit_code": exit_code,
        "ok": bool(data.get("ok")) and exit_code == 0,
        "version": data.get("version"),
        "schema_version": data.get("schema_version"),
        "modules": [str(name) for name in data.get("modules") or []],
        "problems": [str(problem) for problem in data.get("problems") or []],
    }


# --- the inventory ----------------------------------------------------------------------------


def build_inventory(
    host: HostFacts,
    database: DatabaseFacts,
    *,
    environment: str,
    install_path: str,
    expected_version: str,
    collected_at: str = "",
) -> dict[str, Any]:
    """One JSON-ready dict of the environment, with ``findings`` that need the consultant's eye."""
    version = parse_version_file(host.version_file)
    modules = [
        parse_module_descriptor(directory, text)
        for directory, text in sorted(host.module_descriptors.items())
    ]
    settings = {name: parse_properties_keys(text) for name, text in sorted(host.settings_files.items())}
    disk: dict[str, Any] = {"install_kib": parse_du_kib(host.du_output) if host.du_output else None}
    if host.df_output:
        disk["filesystem"] = parse_df(host.df_output)
    crm_status = parse_crm_status(host.crm_status_exit_code, host.crm_status_output)
    schema_version = database.schema_versions[0] if len(database.schema_versions) == 1 else None
    inventory: dict[str, Any] = {
        "environment": environment,
        "install_path": install_path,
        "collected_at": collected_at,
        "version": version,
        "expected_version": expected_version,
        "modules": modules,
        "settings": settings,
        "disk": disk,
        "crm_status": crm_status,
        "database": {
            "schema_version": schema_version,
            "schema_version_rows": list(database.schema_versions),
            "server_version": database.server_version,
            "size_bytes": database.size_bytes,
            "tables": dict(sorted(database.table_rows.items())),
        },
    }
    inventory["findings"] = findings(inventory)
    return inventory


def findings(inventory: Mapping[str, Any]) -> list[str]:
    """What the consultant must look at before approving the analysis; empty when all is as expected."""
    found = []
    version, expected = inventory["version"], inventory["expected_version"]
    if version is None:
        found.append("VERSION file is missing")
    elif version != expected:
        found.append(f"installed version {version} differs from the config's current version {expected}")
    for module in inventory["modules"]:
        if version and module.get("version") and module["version"] != version:
            found.append(f"module {module['name']} is version {module['version']}, installation is {version}")
    status = inventory["crm_status"]
    if not status["ok"]:
        problems = "; ".join(status["problems"]) or f"exit code {status['exit_code']}"
        found.append(f"`bin/crm status` reports a broken installation: {problems}")
    database = inventory["database"]
    rows = database["schema_version_rows"]
    if len(rows) != 1:
        found.append(f"config DB has {len(rows)} schema version rows, expected exactly 1")
    elif version and database["schema_version"] != version:
        found.append(f"config DB schema is {database['schema_version']} but VERSION says {version}")
    disk = inventory["disk"]
    filesystem = disk.get("filesystem")
    if disk.get("install_kib") and filesystem:
        wanted = DISK_HEADROOM_FACTOR * disk["install_kib"]
        if filesystem["available_kib"] < wanted:
            found.append(
                f"only {_size(filesystem['available_kib'])} free on {filesystem['mount']}; "
                f"backup, staging and upgrade want about {_size(wanted)}"
            )
    return found


# --- markdown ---------------------------------------------------------------------------------


def _size(kib: float | None) -> str:
    if kib is None:
        return "unknown"
    for unit in ("KiB", "MiB", "GiB"):
        if kib < 1024:
            return f"{kib:.0f} {unit}" if unit == "KiB" else f"{kib:.1f} {unit}"
        kib /= 1024
    return f"{kib:.1f} TiB"


def render_markdown(inventory: Mapping[str, Any]) -> str:
    """The inventory as a markdown section (the analysis gate shows it under the questionnaire)."""
    status = inventory["crm_status"]
    database = inventory["database"]
    disk = inventory["disk"]
    lines = [
        f"### {md(inventory['environment']).upper()} system inventory",
        "",
        f"- Installation: {md(inventory['install_path'])}",
        f"- Installed version: **{md(inventory['version'] or 'missing')}**"
        f" (config says {md(inventory['expected_version'])})",
        f"- `bin/crm status`: {'ok' if status['ok'] else '**BROKEN**'} (exit code {status['exit_code']})",
        f"- Config DB schema version: {md(database['schema_version'] or 'unknown')}"
        + (f", PostgreSQL {md(database['server_version'])}" if database["server_version"] else "")
        + (f", {_size(database['size_bytes'] / 1024)}" if database["size_bytes"] is not None else ""),
        f"- Disk: installation {_size(disk.get('install_kib'))}",
    ]
    if filesystem := disk.get("filesystem"):
        lines[-1] += (
            f"; {_size(filesystem['available_kib'])} free of {_size(filesystem['size_kib'])} on "
            f"{md(filesystem['mount'])} ({filesystem['used_percent']}% used)"
        )
    if inventory["collected_at"]:
        lines.append(f"- Collected at {md(inventory['collected_at'])}")
    lines += ["", "**Findings:** " + ("none" if not inventory["findings"] else "")]
    lines += [f"- {md(finding)}" for finding in inventory["findings"]]
    lines += ["", "| Module | Version | Vendor |", "|---|---|---|"]
    lines += [
        "| " + " | ".join(md(m.get(key, "")) for key in ("name", "version", "vendor")) + " |"
        for m in inventory["modules"]
    ] or ["| (none found) | | |"]
    lines += ["", "| Settings file | Keys |", "|---|---|"]
    for name, keys in inventory["settings"].items():
        shown = ", ".join(md(key) for key in keys[:MAX_KEYS_SHOWN])
        more = f" … and {len(keys) - MAX_KEYS_SHOWN} more" if len(keys) > MAX_KEYS_SHOWN else ""
        lines.append(f"| {md(name)} | {shown}{more} |")
    lines += ["", "| Config DB table | Rows |", "|---|---:|"]
    lines += [f"| {md(table)} | {rows} |" for table, rows in database["tables"].items()]
    return "\n".join(lines) + "\n"
