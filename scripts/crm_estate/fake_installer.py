#!/usr/bin/env python3
"""The vendor installer of the fake aurea-crm release (shipped as ``<release>/installer.py``).

It upgrades an installation the way a real vendor installer does, with real side effects and
real ways to fail half-way, so the upgrade DAG's backup, restore, log capture and re-apply
settings logic is exercised for real. It runs on the simulated host with the system python3 and
the ``psql`` client only, so it uses nothing but the standard library.

    python3 installer.py --install-path /path/to/crm [--log FILE] [--slow SECONDS]

Steps (in order): preflight, unpack, migrate_db, reset_settings, write_version.
A file ``<install_path>/.installer-fault`` whose lines name a step makes the run fail at that
step (exit 3) after the earlier steps did their damage; a line ``slow:N`` makes the run take N
seconds longer (like ``--slow N``).

Exit codes: 0 upgraded, 1 failed, 2 refused by preflight (nothing changed), 3 injected fault.

Like a careful vendor installer it leaves nothing behind that the installation's owner (the host's
service user) cannot change: started as root on an installation root does not own, it gives every file
it wrote back to that owner when it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

STEPS = ("preflight", "unpack", "migrate_db", "reset_settings", "write_version")
VERSION_PATTERN = re.compile(r"^\d+\.\d+\.\d+$")
FAULT_FILE = ".installer-fault"
REPLACED_DIRS = ("lib", "modules", "bin")
EXIT_FAILED, EXIT_REFUSED, EXIT_FAULT = 1, 2, 3
RELEASE_DIR = Path(__file__).resolve().parent


class InstallerError(Exception):
    """A step failed; ``exit_code`` tells the caller whether anything was changed."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class InjectedFault(InstallerError):
    def __init__(self, step: str, fault_file: Path) -> None:
        super().__init__(f"injected fault at step {step} (requested by {fault_file})", EXIT_FAULT)


class Log:
    """Timestamped lines to stdout and to the log file."""

    def __init__(self) -> None:
        self.handle: IO[str] | None = None
        self.path: Path | None = None
        self.step = "installer"

    def open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = path.open("a", encoding="utf-8")
        self.path = path

    def __call__(self, message: str) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        line = f"{stamp} [{self.step}] {message}"
        print(line, flush=True)
        if self.handle is not None:
            self.handle.write(line + "\n")
            self.handle.flush()


log = Log()


def parse_version(version: str) -> tuple[int, ...]:
    if not VERSION_PATTERN.match(version):
        raise InstallerError(f"{version!r} is not a version (X.Y.Z)", EXIT_REFUSED)
    return tuple(int(part) for part in version.split("."))


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


class Plan:
    """What this run was asked to do, read once before any step."""

    def __init__(self, install_path: Path, slow: float) -> None:
        self.install_path = install_path
        self.fault_file = install_path / FAULT_FILE
        self.fault_steps: set[str] = set()
        self.slow = slow
        self.release: dict = {}
        self.current_version = ""
        self.db: dict[str, str] = {}

    @property
    def target_version(self) -> str:
        return self.release["version"]

    def read_fault_file(self) -> None:
        if not self.fault_file.is_file():
            return
        for raw in self.fault_file.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line in STEPS:
                self.fault_steps.add(line)
            elif line.startswith("slow:"):
                try:
                    self.slow = max(self.slow, float(line.removeprefix("slow:")))
                except ValueError:
                    raise InstallerError(
                        f"{self.fault_file}: bad slow value {line!r}", EXIT_REFUSED
                    ) from None
            else:
                raise InstallerError(
                    f"{self.fault_file}: unknown directive {line!r} (expected one of {', '.join(STEPS)} "
                    f"or slow:SECONDS)",
                    EXIT_REFUSED,
                )

    def fault_here(self, step: str) -> None:
        if step in self.fault_steps:
            raise InjectedFault(step, self.fault_file)


def read_release_manifest() -> dict:
    payload = RELEASE_DIR / "payload.tar.gz"
    if not payload.is_file():
        raise InstallerError(f"{payload} missing; stage the whole release directory", EXIT_REFUSED)
    with tarfile.open(payload, "r:gz") as archive:
        member = archive.extractfile("release.json")
        if member is None:
            raise InstallerError(f"{payload} has no release.json", EXIT_REFUSED)
        return json.load(member)


def verify_release_checksums() -> None:
    sums = RELEASE_DIR / "SHA256SUMS"
    if not sums.is_file():
        raise InstallerError(f"{sums} missing; stage the whole release directory", EXIT_REFUSED)
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        expected, _, name = line.partition("  ")
        path = RELEASE_DIR / name
        if not path.is_file():
            raise InstallerError(f"{path} listed in SHA256SUMS is missing", EXIT_REFUSED)
        if file_sha256(path) != expected:
            raise InstallerError(f"{path} does not match SHA256SUMS (corrupt transfer?)", EXIT_REFUSED)
        log(f"checksum ok: {name}")


def run_psql(db: dict[str, str], script: str, variables: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``script`` in one transaction; values only ever reach SQL as psql :'variables'."""
    psql = shutil.which("psql")
    if psql is None:
        raise InstallerError("psql not found on PATH of this host")
    argv = [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
    argv += ["-h", db["host"], "-p", db["port"], "-U", db["user"], "-d", db["dbname"], "-f", "-"]
    for name, value in variables.items():
        argv += ["-v", f"{name}={value}"]
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    if db.get("password"):
        env["PGPASSWORD"] = db["password"]
    return subprocess.run(argv, input=script, capture_output=True, text=True, env=env, check=False)


def schema_version(db: dict[str, str]) -> str:
    result = run_psql(db, "SELECT version FROM crm_schema_version;\n", {})
    if result.returncode != 0:
        raise InstallerError(f"cannot read schema version of {db['dbname']}: {result.stderr.strip()}")
    return result.stdout.strip()


def crm_status(install_path: Path) -> dict:
    result = subprocess.run(
        [sys.executable, str(install_path / "bin" / "crm"), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        return {"ok": False, "problems": [f"bin/crm status failed: {result.stderr.strip()}"]}


def slow_down(seconds: float) -> None:
    if seconds <= 0:
        return
    log(f"slow mode: this step takes {seconds:.0f}s longer")
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(1.0, remaining))
        log(f"still working ({max(0.0, deadline - time.monotonic()):.0f}s left)")


# ---------------------------------------------------------------------------------------- steps


def preflight(plan: Plan) -> None:
    """Refuse (exit 2, nothing changed) unless the payload is intact, the path upgradable and the
    installation healthy."""
    verify_release_checksums()
    version_file = plan.install_path / "VERSION"
    if not version_file.is_file():
        raise InstallerError(
            f"{plan.install_path} is not an aurea-crm installation (no VERSION)", EXIT_REFUSED
        )
    plan.current_version = version_file.read_text().strip()
    current, target = parse_version(plan.current_version), parse_version(plan.target_version)
    minimum = parse_version(plan.release["min_upgradable_from"])
    if not current < target:
        raise InstallerError(
            f"unsupported upgrade path {plan.current_version} -> {plan.target_version}: "
            f"the target must be newer than the installed version",
            EXIT_REFUSED,
        )
    if current < minimum:
        raise InstallerError(
            f"unsupported upgrade path {plan.current_version} -> {plan.target_version}: "
            f"upgrade to {plan.release['min_upgradable_from']} first",
            EXIT_REFUSED,
        )
    log(f"upgrade path {plan.current_version} -> {plan.target_version} is supported")
    properties = plan.install_path / "settings" / "database.properties"
    if not properties.is_file():
        raise InstallerError(f"{properties} missing", EXIT_REFUSED)
    plan.db = parse_properties(properties.read_text())
    health = crm_status(plan.install_path)
    if not health.get("ok"):
        raise InstallerError(
            f"installation is not healthy, refusing to upgrade: {'; '.join(health.get('problems', []))}",
            EXIT_REFUSED,
        )
    log(f"installation healthy (version {health['version']}, schema {health['schema_version']})")
    plan.fault_here("preflight")


def safe_members(archive: tarfile.TarFile, prefixes: tuple[str, ...]) -> list[tarfile.TarInfo]:
    members = []
    for member in archive.getmembers():
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
            raise InstallerError(f"payload member {member.name!r} is unsafe; refusing to unpack")
        if path.parts and path.parts[0] in prefixes:
            members.append(member)
    return members


def unpack(plan: Plan) -> None:
    """Replace lib/, modules/ and bin/ with the release's (in place, like the real thing)."""
    slow_down(plan.slow)
    with tarfile.open(RELEASE_DIR / "payload.tar.gz", "r:gz") as archive:
        members = safe_members(archive, REPLACED_DIRS)
        for name in REPLACED_DIRS:
            shutil.rmtree(plan.install_path / name, ignore_errors=True)
            log(f"removed old {name}/")
        files = [member for member in members if member.isfile()]
        crash_after = len(files) // 2 if "unpack" in plan.fault_steps else None
        for index, member in enumerate(files):
            if crash_after is not None and index == crash_after:
                log(f"extracted {index} of {len(files)} files")
                plan.fault_here("unpack")
            target = plan.install_path / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None  # isfile() members always have data
            with source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1024 * 1024)
            target.chmod(0o755 if member.mode & 0o111 else 0o644)
    log(f"unpacked {len(files)} files of release {plan.target_version}")


def migrate_db(plan: Plan) -> None:
    """Apply every pending migration, bump the schema version and add new default settings, all in
    one transaction."""
    current = schema_version(plan.db)
    log(f"config DB {plan.db['dbname']} is at schema {current}")
    pending = [
        version
        for version in plan.release["migrations"]
        if parse_version(current) < parse_version(version) <= parse_version(plan.target_version)
    ]
    with tarfile.open(RELEASE_DIR / "payload.tar.gz", "r:gz") as archive:
        scripts = []
        for version in pending:
            member = archive.extractfile(f"migrations/{version}.sql")
            if member is None:
                raise InstallerError(f"payload lacks migrations/{version}.sql")
            scripts.append(member.read().decode())
    variables = {"target_version": plan.target_version}
    script = io.StringIO()
    for index, (version, sql) in enumerate(zip(pending, scripts, strict=True)):
        log(f"applying migration {version}")
        script.write(sql + "\n")
        variables[f"migration_{index}"] = version
        script.write(f"INSERT INTO crm_migration_history (version) VALUES (:'migration_{index}');\n")
    script.write("UPDATE crm_schema_version SET version = :'target_version', updated_at = now();\n")
    for index, (key, value) in enumerate(plan.release["db_settings"].items()):
        variables[f"key_{index}"], variables[f"value_{index}"] = key, value
        script.write(
            f"INSERT INTO crm_settings (key, value) VALUES (:'key_{index}', :'value_{index}') "
            "ON CONFLICT (key) DO NOTHING;\n"
        )
    if "migrate_db" in plan.fault_steps:
        script.write("DO $$ BEGIN RAISE EXCEPTION 'injected fault: migration aborted'; END $$;\n")
    result = run_psql(plan.db, script.getvalue(), variables)
    if result.returncode != 0:
        log(f"migration failed, transaction rolled back: {result.stderr.strip()}")
        plan.fault_here("migrate_db")
        raise InstallerError(f"migration of {plan.db['dbname']} failed: {result.stderr.strip()}")
    log(f"config DB {plan.db['dbname']} migrated to schema {plan.target_version}")


def reset_settings(plan: Plan) -> None:
    """Overwrite settings/*.properties (not database.properties) and crm_settings values with the
    release defaults: customer customizations are lost here, by design of the vendor."""
    settings_dir = plan.install_path / "settings"
    with tarfile.open(RELEASE_DIR / "payload.tar.gz", "r:gz") as archive:
        members = [
            member
            for member in safe_members(archive, ("settings",))
            if member.isfile() and PurePosixPath(member.name).name != "database.properties"
        ]
        for index, member in enumerate(members):
            if index == 1:
                plan.fault_here("reset_settings")
            source = archive.extractfile(member)
            assert source is not None
            target = settings_dir / PurePosixPath(member.name).name
            target.write_bytes(source.read())
            log(f"reset {member.name} to release defaults")
    plan.fault_here("reset_settings")  # also when the release has a single settings file
    variables: dict[str, str] = {}
    script = io.StringIO()
    for index, (key, value) in enumerate(plan.release["db_settings"].items()):
        variables[f"key_{index}"], variables[f"value_{index}"] = key, value
        script.write(
            f"INSERT INTO crm_settings (key, value) VALUES (:'key_{index}', :'value_{index}') "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;\n"
        )
    result = run_psql(plan.db, script.getvalue(), variables)
    if result.returncode != 0:
        raise InstallerError(f"resetting crm_settings failed: {result.stderr.strip()}")
    log(f"reset {len(variables) // 2} crm_settings values to release defaults")


def write_version(plan: Plan) -> None:
    version_file = plan.install_path / "VERSION"
    with version_file.open("w") as handle:  # truncates first, like the real one
        plan.fault_here("write_version")
        handle.write(plan.target_version + "\n")
    log(f"VERSION is now {plan.target_version}")


STEP_FUNCTIONS = {
    "preflight": preflight,
    "unpack": unpack,
    "migrate_db": migrate_db,
    "reset_settings": reset_settings,
    "write_version": write_version,
}


@contextlib.contextmanager
def single_run(install_path: Path) -> Iterator[None]:
    lock_path = install_path / "logs" / ".installer.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InstallerError(f"another installer run holds {lock_path}", EXIT_REFUSED) from None
        yield


def run(install_path: Path, log_path: Path | None, slow: float) -> int:
    plan = Plan(install_path, slow)
    plan.release = read_release_manifest()
    if log_path is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        log_path = install_path / "logs" / f"upgrade-{plan.target_version}-{stamp}.log"
    log.open(log_path)
    log(f"{plan.release['product']} installer {plan.target_version} for {install_path}; log {log_path}")
    plan.read_fault_file()
    with single_run(install_path):
        for step in STEPS:
            log.step = step
            started = time.monotonic()
            log("start")
            STEP_FUNCTIONS[step](plan)
            log(f"done in {time.monotonic() - started:.2f}s")
    log.step = "installer"
    health = crm_status(install_path)
    if not health.get("ok"):
        raise InstallerError(f"post-upgrade check failed: {'; '.join(health.get('problems', []))}")
    log(f"upgrade to {plan.target_version} complete; crm status ok")
    return 0


def give_back(install_path: Path) -> None:
    """Run as root on an installation another user owns: hand what root created back to that owner."""
    if os.geteuid() != 0 or not install_path.is_dir():
        return
    owner = install_path.stat()
    if owner.st_uid == 0:
        return
    for directory, folders, files in os.walk(install_path):
        for name in (*folders, *files):
            path = Path(directory) / name
            if path.lstat().st_uid == 0:
                os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="aurea-crm installer (upgrades an installation in place)")
    parser.add_argument("--install-path", required=True, type=Path, help="the installation to upgrade")
    parser.add_argument("--log", type=Path, help="log file (default <install>/logs/upgrade-<ver>-<utc>.log)")
    parser.add_argument("--slow", type=float, default=0.0, help="take this many seconds longer")
    args = parser.parse_args(argv)
    install_path = args.install_path.absolute()
    try:
        if not install_path.is_dir():
            raise InstallerError(f"install path {install_path} does not exist", EXIT_REFUSED)
        try:
            return run(install_path, args.log, args.slow)
        finally:
            give_back(install_path)
    except InstallerError as exc:
        log(f"FAILED (exit {exc.exit_code}): {exc}")
        return exc.exit_code
    except Exception as exc:  # an installer must log why it died, whatever the reason
        log(f"FAILED (exit {EXIT_FAILED}): unexpected {type(exc).__name__}: {exc}")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
