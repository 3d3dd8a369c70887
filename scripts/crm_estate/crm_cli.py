#!/usr/bin/env python3
"""The fake CRM's own command line (shipped as ``<install_path>/bin/crm``): ``crm status``.

It is what an operator (or the upgrade DAG) asks "is this installation healthy and at which
version?". It runs on the simulated host with the system python3 and the ``psql`` client only,
so it uses nothing but the standard library.

``crm status`` prints JSON ``{version, schema_version, modules, ok, problems}`` and exits 1 when
the installation is broken: VERSION missing, lib files missing or corrupt (checked against
lib/MANIFEST.sha256), lib or modules from another release, or a config DB schema version that
differs from VERSION.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

VERSION_PATTERN = re.compile(r"^\d+\.\d+\.\d+$")
INSTALL_ROOT = Path(__file__).resolve().parent.parent


def parse_properties(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, value = stripped.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_version(root: Path, problems: list[str]) -> str | None:
    try:
        version = (root / "VERSION").read_text().strip()
    except FileNotFoundError:
        problems.append("VERSION file missing")
        return None
    if not VERSION_PATTERN.match(version):
        problems.append(f"VERSION file holds {version!r}, not X.Y.Z")
        return None
    return version


def check_lib(root: Path, version: str | None, problems: list[str]) -> None:
    lib = root / "lib"
    manifest = lib / "MANIFEST.sha256"
    if not manifest.is_file():
        problems.append("lib/MANIFEST.sha256 missing")
        return
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        expected, _, name = line.partition("  ")
        path = lib / name
        if not path.is_file():
            problems.append(f"lib/{name} missing")
        elif file_sha256(path) != expected:
            problems.append(f"lib/{name} corrupt (sha256 mismatch)")
    release_file = lib / "RELEASE"
    lib_release = release_file.read_text().strip() if release_file.is_file() else None
    if lib_release is None:
        problems.append("lib/RELEASE missing")
    elif version is not None and lib_release != version:
        problems.append(f"lib is from release {lib_release} but VERSION says {version}")


def read_modules(root: Path, version: str | None, problems: list[str]) -> list[str]:
    modules_dir = root / "modules"
    if not modules_dir.is_dir():
        problems.append("modules/ missing")
        return []
    names = []
    for descriptor in sorted(modules_dir.glob("*/module.yaml")):
        fields = {}
        for line in descriptor.read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        name = fields.get("name", descriptor.parent.name)
        names.append(name)
        if version is not None and fields.get("version") != version:
            problems.append(f"module {name} is version {fields.get('version')} but VERSION says {version}")
    if "core" not in names:
        problems.append("module core missing")
    return names


def read_schema_version(root: Path, problems: list[str]) -> str | None:
    properties_file = root / "settings" / "database.properties"
    if not properties_file.is_file():
        problems.append("settings/database.properties missing")
        return None
    db = parse_properties(properties_file.read_text())
    missing = [key for key in ("host", "port", "dbname", "user") if not db.get(key)]
    if missing:
        problems.append(f"settings/database.properties lacks {', '.join(missing)}")
        return None
    psql = shutil.which("psql")
    if psql is None:
        problems.append("psql not found on PATH")
        return None
    env = dict(os.environ, PGCONNECT_TIMEOUT="5")
    if db.get("password"):
        env["PGPASSWORD"] = db["password"]
    argv = [psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", db["host"], "-p", db["port"]]
    argv += ["-U", db["user"], "-d", db["dbname"], "-c", "SELECT version FROM crm_schema_version"]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30, check=False)
    if result.returncode != 0:
        problems.append(f"config DB {db['dbname']} unreadable: {result.stderr.strip()}")
        return None
    rows = [row for row in result.stdout.splitlines() if row.strip()]
    if len(rows) != 1:
        problems.append(f"config DB {db['dbname']} has {len(rows)} schema version rows, expected 1")
        return None
    return rows[0].strip()


def status(root: Path) -> dict[str, object]:
    problems: list[str] = []
    version = read_version(root, problems)
    check_lib(root, version, problems)
    modules = read_modules(root, version, problems)
    schema_version = read_schema_version(root, problems)
    if version is not None and schema_version is not None and schema_version != version:
        problems.append(f"config DB schema is {schema_version} but VERSION says {version}")
    return {
        "version": version,
        "schema_version": schema_version,
        "modules": modules,
        "ok": not problems,
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crm", description="aurea-crm command line")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="print installation health as JSON; exit 1 when broken")
    commands.add_parser("version", help="print the installed version")
    args = parser.parse_args(argv)
    if args.command == "version":
        problems: list[str] = []
        version = read_version(INSTALL_ROOT, problems)
        print(version or "; ".join(problems))
        return 0 if version else 1
    report = status(INSTALL_ROOT)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
