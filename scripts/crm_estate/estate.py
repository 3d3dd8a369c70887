"""The simulated CRM estate as one object: bring it up, check it, tear it down, and use it.

``up``/``down``/``status``/``reset`` back the ``scripts/estate`` command; ``Estate`` is what tests
and benchmarks hold: ports, pinned host keys, client key, SSH and PostgreSQL access, isolated
installations and fault injection.

Least privilege, as on a customer's host: run as root, the hosts' SSH login is the unprivileged
service user (:mod:`crm_estate.service_user`), which owns the install roots, staging and backup folders
and nothing else; customer test queries use a read-only database role of the estate's own
(:func:`crm_estate.database.reader_role`) through their own connections (``test_db_conn_id``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import paramiko

from crm_estate import connections as conn_files
from crm_estate import database, releases, sshd
from crm_estate.catalogue import KNOWN_VERSIONS, parse_version
from crm_estate.customers import EstateCustomer, load_estate_customers
from crm_estate.fake_installer import STEPS as INSTALLER_STEPS
from crm_estate.installation import FAULT_FILE, Installation, provision_installation
from crm_estate.keys import ensure_ed25519_key, key_type_and_data
from crm_estate.layout import (
    ENVIRONMENTS,
    LOOPBACK,
    EstateLayout,
    base_port_from_env,
    root_from_env,
)
from crm_estate.service_user import (
    SERVICE_USER,
    ServiceUser,
    current_user,
    ensure_service_user,
    hand_over,
    make_traversable,
    share_with_service_user,
)
from crm_estate.state import EstateState, HostState, PgState, exclusive_lock, read_state, write_state

PROVISIONING_WORKERS = 4
INSTALL_ROOTS = ("crm", "staging", "backups", "isolated")
"""Folders of each host the service user owns (installations, staged releases, backups, and the
isolated installations and scratch folders of tests)."""
Say = Callable[[str], None]


class EstateError(RuntimeError):
    """The estate is not in a state to do what was asked (message says what to run)."""


def _quiet(_message: str) -> None:
    pass


def host_conn_id(env: str) -> str:
    """Connection id of a simulated host itself, independent of any customer (tests use these)."""
    return f"crm_estate_{env}_ssh"


@dataclass(frozen=True)
class ComponentStatus:
    """One line of `scripts/estate status`."""

    name: str
    healthy: bool
    detail: str


class Estate:
    """A running estate (read from ``<root>/state.json``)."""

    def __init__(self, layout: EstateLayout, state: EstateState) -> None:
        self.layout = layout
        self.state = state
        self._reader_ready = False

    @cached_property
    def customers(self) -> list[EstateCustomer]:
        """Valid customer configs (read once per Estate object)."""
        customers, _errors = load_estate_customers()
        return customers

    @classmethod
    def load(cls, root: str | os.PathLike[str] | None = None) -> Estate:
        layout = EstateLayout(root_from_env(root))
        state = read_state(layout.state_file)
        if state is None:
            raise EstateError(f"no estate at {layout.root} (no state.json); run `scripts/estate up`")
        return cls(layout, state)

    # ------------------------------------------------------------------ what clients need to know

    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def user(self) -> str:
        """The hosts' SSH login: the unprivileged service user (or the estate's own non-root user)."""
        return self.state.user

    @property
    def reader_role(self) -> str:
        """The read-only database role customer test queries run as."""
        return database.reader_role(self.layout)

    @cached_property
    def service_user(self) -> ServiceUser:
        """Who owns the installations on the hosts (whom :attr:`user` logs in as)."""
        return _service_user_named(self.user)

    @property
    def hosts(self) -> dict[str, HostState]:
        return self.state.hosts

    @property
    def client_key_path(self) -> Path:
        return self.layout.client_key

    @property
    def known_hosts_path(self) -> Path:
        return self.layout.known_hosts

    @property
    def pg(self) -> database.PgServer:
        return database.server_from_state(self.state.pg)

    def pg_dsn(self, dbname: str) -> str:
        return self.pg.dsn(dbname)

    def release_dir(self, version: str) -> Path:
        return self.layout.release_dir(version)

    @property
    def releases_dir(self) -> Path:
        return self.layout.releases_dir

    def ssh_connect(self, env: str, timeout: float = 10.0) -> paramiko.SSHClient:
        """Authenticated paramiko client to the ``env`` host (RejectPolicy + the estate's known_hosts)."""
        return sshd.connect(
            self.hosts[env].port, self.user, self.client_key_path, self.known_hosts_path, timeout
        )

    # ------------------------------------------------------------------ Airflow connections

    def ssh_connection(self, env: str) -> dict[str, Any]:
        return conn_files.ssh_connection(self.hosts[env], self.user, self.client_key_path)

    def db_connection(self, dbname: str) -> dict[str, Any]:
        return conn_files.postgres_connection(self.state.pg, database.check_db_name(dbname))

    def test_db_connection(self, dbname: str) -> dict[str, Any]:
        """``dbname`` as the read-only test role (what ``test_db_conn_id`` connections hold)."""
        return conn_files.postgres_connection(
            self.state.pg, database.check_db_name(dbname), login=self.reader_role
        )

    def connections(self) -> dict[str, dict[str, Any]]:
        """Every connection the estate serves: per host, per customer environment, the releases."""
        result = {host_conn_id(env): self.ssh_connection(env) for env in ENVIRONMENTS}
        result[conn_files.RELEASES_CONN_ID] = conn_files.fs_connection(self.releases_dir)
        for customer in self.customers:
            result[customer.release_conn_id] = conn_files.fs_connection(self.releases_dir)
            for env, spec in customer.environments.items():
                result[spec.ssh_conn_id] = self.ssh_connection(env)
                result[spec.db_conn_id] = self.db_connection(customer.db_name(env))
                if spec.test_db_conn_id:
                    result[spec.test_db_conn_id] = self.test_db_connection(customer.db_name(env))
        return result

    def connections_env(self, extra: dict[str, dict[str, Any]] | None = None) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` variables for every connection (plus ``extra`` ones, e.g. a test DB)."""
        return conn_files.as_env_vars({**self.connections(), **(extra or {})})

    def write_connection_files(self) -> None:
        conn_files.write_connection_files(
            self.connections(), self.layout.connections_env, self.layout.connections_json
        )

    # ------------------------------------------------------------------ installations

    def provision_installation(
        self,
        env: str,
        install_path: Path,
        version: str,
        db_name: str,
        customer_id: str,
        staging_path: Path | None = None,
        backup_path: Path | None = None,
    ) -> Installation:
        """(Re)create an installation and its config DB at ``version`` (paths under the root only)."""
        if env not in ENVIRONMENTS:
            raise ValueError(f"env must be one of {', '.join(ENVIRONMENTS)}, got {env!r}")
        install_path = self.layout.require_inside(Path(install_path), "install_path")
        staging_path = self.layout.require_inside(
            Path(staging_path or install_path.with_name(install_path.name + ".staging")), "staging_path"
        )
        backup_path = self.layout.require_inside(
            Path(backup_path or install_path.with_name(install_path.name + ".backups")), "backup_path"
        )
        self.ensure_release(version)
        self.ensure_reader_role()
        installation = provision_installation(
            server=self.pg,
            release_dir=self.release_dir(version),
            owner_tag=database.owner_tag(self.layout),
            customer_id=customer_id,
            env=env,
            version=version,
            install_path=install_path,
            staging_path=staging_path,
            backup_path=backup_path,
            db_name=db_name,
            reader_role=self.reader_role,
        )
        self.hand_over(install_path, staging_path, backup_path)
        return installation

    def ensure_reader_role(self) -> None:
        """Create the read-only test role if it is missing (once per Estate object; ``up`` refreshes it)."""
        if self._reader_ready:
            return
        with exclusive_lock(self.layout.lock_file):
            if not self.pg.role_exists(self.reader_role):
                self.pg.ensure_reader_role(self.reader_role)
        self._reader_ready = True

    def hand_over(self, *paths: Path) -> None:
        """Give ``paths`` (and their own parent folders) to the service user; no-op unless run as root."""
        hand_over(self.service_user, paths, _hand_over_stops(self.layout))

    def share_with_service_user(self) -> None:
        """For a root process that writes into the hosts' folders (tests, demos): what it creates stays
        changeable by the service user (group-writable, in its set-group-id folders)."""
        share_with_service_user(self.service_user)

    def create_isolated_installation(self, env: str = "dev", version: str = "10.2.0") -> Installation:
        """A fresh installation + DB with unique names, for one test (remove with remove_installation)."""
        token = uuid.uuid4().hex[:10]
        base = self.layout.host_dir(env) / "isolated" / token
        return self.provision_installation(
            env=env,
            install_path=base / "crm",
            version=version,
            db_name=f"crm_test_{token}",
            customer_id=f"test_{token}",
            staging_path=base / "staging",
            backup_path=base / "backups",
        )

    def remove_installation(self, installation: Installation) -> None:
        self.pg.drop_database(installation.db_name)
        for path in (installation.install_path, installation.staging_path, installation.backup_path):
            shutil.rmtree(self.layout.require_inside(path, "path"), ignore_errors=True)
        isolated_parent = installation.install_path.parent
        if isolated_parent.parent.name == "isolated":
            shutil.rmtree(isolated_parent, ignore_errors=True)

    def ensure_release(self, version: str) -> Path:
        """Build the release if it is missing (others may build concurrently: serialised by the lock)."""
        parse_version(version)
        release_dir = self.release_dir(version)
        if not (release_dir / releases.CHECKSUMS).exists():
            with exclusive_lock(self.layout.lock_file):
                if not (release_dir / releases.CHECKSUMS).exists():
                    releases.build_release(self.releases_dir, version)
        return release_dir

    def stage_release_locally(self, staging_path: Path, version: str) -> Path:
        """Copy a release into ``staging_path`` without SSH (for tests that are not about staging);
        returns the staged installer."""
        staging_path = self.layout.require_inside(Path(staging_path), "staging_path")
        staging_path.mkdir(parents=True, exist_ok=True)
        source = self.ensure_release(version)
        for name in (releases.INSTALLER, releases.PAYLOAD, releases.CHECKSUMS):
            shutil.copy2(source / name, staging_path / name)
        self.hand_over(staging_path)
        return staging_path / releases.INSTALLER

    def crm_status(self, install_path: Path) -> tuple[int, dict[str, Any]]:
        """Run the installation's ``bin/crm status`` locally; (exit code, parsed JSON)."""
        result = subprocess.run(
            [str(Path(install_path) / "bin" / "crm"), "status"],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            report = json.loads(result.stdout)
        except json.JSONDecodeError:
            report = {"ok": False, "problems": [result.stderr.strip() or "bin/crm printed no JSON"]}
        return result.returncode, report

    # ------------------------------------------------------------------ fault injection

    def set_fault(self, install_path: Path, step: str | None, slow_seconds: float | None = None) -> Path:
        """Make the next installer run on ``install_path`` fail at ``step`` and/or run slower."""
        install_path = self.layout.require_inside(Path(install_path), "install_path")
        if step is not None and step not in INSTALLER_STEPS:
            raise ValueError(f"step must be one of {', '.join(INSTALLER_STEPS)}, got {step!r}")
        lines = ([step] if step else []) + ([f"slow:{slow_seconds:g}"] if slow_seconds else [])
        if not lines:
            raise ValueError("give a step and/or slow_seconds (use clear_fault to remove faults)")
        fault_file = install_path / FAULT_FILE
        fault_file.write_text("\n".join(lines) + "\n")
        return fault_file

    def clear_fault(self, install_path: Path) -> bool:
        fault_file = self.layout.require_inside(Path(install_path), "install_path") / FAULT_FILE
        existed = fault_file.exists()
        fault_file.unlink(missing_ok=True)
        return existed

    # ------------------------------------------------------------------ health

    def component_status(self) -> list[ComponentStatus]:
        report = []
        for env, host in self.hosts.items():
            pid = sshd.running_pid(self.layout, env)
            try:
                sshd.probe(host.port, self.user, self.client_key_path, self.known_hosts_path, timeout=5)
                report.append(ComponentStatus(f"sshd {env}", True, f"{LOOPBACK}:{host.port} pid {pid}"))
            except Exception as exc:  # any failure means unhealthy; the detail says why
                report.append(ComponentStatus(f"sshd {env}", False, f"{LOOPBACK}:{host.port}: {exc!r}"))
        pg = self.pg
        pg_up = pg.reachable()
        pg_detail = f"{self.state.pg.mode} server {pg.host}:{pg.port} user {pg.user}"
        report.append(ComponentStatus("postgresql", pg_up, pg_detail))
        outdated = self.least_privilege_problems() if pg_up else []
        detail = f"SSH login {self.user}, test role {self.reader_role}"
        if outdated:
            detail = "outdated, run `scripts/estate up`: " + "; ".join(outdated[:3])
        # an estate from before the service user still works: reported, never a reason to restart it
        report.append(ComponentStatus("least privilege", True, detail))
        for version in self._wanted_versions():
            problems = releases.release_problems(self.releases_dir, version)
            report.append(
                ComponentStatus(f"release {version}", not problems, "; ".join(problems) or "SHA256SUMS ok")
            )
        for customer in self._customers_inside_root():
            for env, spec in customer.environments.items():
                name = f"installation {customer.customer_id}/{env}"
                if not (spec.install_path / "VERSION").exists():
                    report.append(ComponentStatus(name, False, f"{spec.install_path} missing"))
                    continue
                if not pg_up or not pg.database_exists(customer.db_name(env)):
                    report.append(ComponentStatus(name, False, f"database {customer.db_name(env)} missing"))
                    continue
                code, crm = self.crm_status(spec.install_path)
                detail = f"version {crm.get('version')}, crm status " + (
                    "ok" if code == 0 else "BROKEN: " + "; ".join(crm.get("problems", []))
                )
                # A broken installation is a state of the simulated world (e.g. a failed demo
                # upgrade), not a failure of the estate: present is healthy.
                report.append(ComponentStatus(name, True, detail))
        files = [self.layout.connections_env, self.layout.connections_json]
        missing = [str(path) for path in files if not path.exists()]
        report.append(ComponentStatus("connections", not missing, ", ".join(missing) or str(files[0])))
        return report

    def least_privilege_problems(self) -> list[str]:
        """What an estate made before the service user and the test role lacks (``up`` adds it).

        Reported, not counted as unhealthy: such an estate still works (its login is root; command
        test cases then drop to ``nobody``), and a test session must not restart a running estate.
        """
        problems = []
        if not self.pg.role_exists(self.reader_role):
            problems.append(f"read-only test role {self.reader_role} missing")
        if os.geteuid() != 0:
            return problems
        if self.user != SERVICE_USER:
            return [*problems, f"SSH login is {self.user}, not the service user {SERVICE_USER}"]
        user = self.service_user
        for env in ENVIRONMENTS:
            for name in INSTALL_ROOTS:
                folder = self.layout.host_dir(env) / name
                info = folder.stat() if folder.exists() else None
                if info is None or info.st_uid != user.uid or not info.st_mode & 0o2000:
                    problems.append(f"{folder} is not {SERVICE_USER}'s set-group-id folder")
        return problems

    def _wanted_versions(self) -> list[str]:
        wanted = set(KNOWN_VERSIONS)
        for customer in self.customers:
            wanted.update({customer.current_version, customer.target_version})
        return sorted(wanted, key=parse_version)

    def _customers_inside_root(self) -> list[EstateCustomer]:
        return [customer for customer in self.customers if _outside_root(self.layout, customer) is None]


def _service_user_named(name: str) -> ServiceUser:
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return current_user()
    return ServiceUser(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def _hand_over_stops(layout: EstateLayout) -> list[Path]:
    """Folders that stay root's: the root, ``hosts``, each host folder and its ``isolated`` folder."""
    stops = [layout.root, layout.root / "hosts"]
    for env in ENVIRONMENTS:
        stops += [layout.host_dir(env), layout.host_dir(env) / "isolated"]
    return stops


def _prepare_install_roots(layout: EstateLayout, user: ServiceUser) -> None:
    """``<host>/crm``, ``staging``, ``backups`` and ``isolated``, owned by the service user."""
    for env in ENVIRONMENTS:
        roots = [layout.host_dir(env) / name for name in INSTALL_ROOTS]
        for folder in roots:
            folder.mkdir(parents=True, exist_ok=True)
        hand_over(user, roots, _hand_over_stops(layout))


def _outside_root(layout: EstateLayout, customer: EstateCustomer) -> str | None:
    """Why a customer's paths cannot be provisioned here, or None."""
    for env, spec in customer.environments.items():
        for field in ("install_path", "staging_path", "backup_path"):
            try:
                layout.require_inside(getattr(spec, field), f"{customer.customer_id} {env} {field}")
            except ValueError as exc:
                return str(exc)
    return None


# ---------------------------------------------------------------------------------- lifecycle


def _resolve_base_port(prior: EstateState | None, base_port: int | None) -> int:
    if base_port is not None:
        return base_port
    if "ESTATE_BASE_PORT" in os.environ or prior is None:
        return base_port_from_env()
    return prior.base_port


def _prepare_keys(layout: EstateLayout, user: str) -> dict[str, str]:
    """Client key, host keys, authorized_keys and known_hosts; returns env -> pinned host key."""
    for directory in (layout.keys_dir, *(layout.host_dir(env) for env in ENVIRONMENTS)):
        directory.mkdir(parents=True, exist_ok=True)
    layout.keys_dir.chmod(0o700)
    client_public = ensure_ed25519_key(layout.client_key, f"{user}@crm-estate-client")
    host_keys = {}
    for env in ENVIRONMENTS:
        host_keys[env] = key_type_and_data(ensure_ed25519_key(layout.host_key(env), f"crm-estate-{env}"))
        layout.authorized_keys(env).write_text(client_public + "\n")
    return host_keys


def _write_known_hosts(layout: EstateLayout, hosts: dict[str, HostState]) -> None:
    lines = [f"[{LOOPBACK}]:{host.port} {host.host_key}\n" for host in hosts.values()]
    layout.known_hosts.write_text("".join(lines))


def _ensure_pg(layout: EstateLayout, prior: EstateState | None, base_port: int) -> PgState:
    if prior is not None and prior.pg.mode == "private":
        return database.start_private_cluster(layout, prior.pg.port, prior.pg.user)
    private_port = int(os.environ.get("ESTATE_PG_PRIVATE_PORT", str(base_port + len(ENVIRONMENTS))))
    return database.resolve_server(layout, private_port)


def _ensure_sshd(layout: EstateLayout, env: str, port: int, user: str, say: Say) -> None:
    wanted_config = sshd.render_config(layout, env, port, user)
    config_file = layout.sshd_config(env)
    current_config = config_file.read_text() if config_file.exists() else None
    if sshd.running_pid(layout, env) is not None:
        if current_config == wanted_config:
            try:
                sshd.probe(port, user, layout.client_key, layout.known_hosts, timeout=5)
                say(f"sshd {env}: already running on {LOOPBACK}:{port}")
                return
            except Exception as exc:  # running but unusable: repair by restarting
                say(f"sshd {env}: running but not answering ({exc!r}); restarting")
        else:
            say(f"sshd {env}: configuration changed; restarting")
        sshd.stop(layout, env)
    sshd.start(layout, env, port, user)
    sshd.wait_until_answering(port, user, layout.client_key, layout.known_hosts)
    say(f"sshd {env}: started on {LOOPBACK}:{port}")


def _installation_present(estate: Estate, customer: EstateCustomer, env: str) -> bool:
    spec = customer.environments[env]
    return (spec.install_path / "VERSION").exists() and estate.pg.database_exists(customer.db_name(env))


def _refresh_installation(estate: Estate, customer: EstateCustomer, env: str) -> None:
    """A kept installation gets what a new one would: the service user's ownership, the reader's grants."""
    spec = customer.environments[env]
    estate.hand_over(spec.install_path, spec.staging_path, spec.backup_path)
    estate.pg.grant_reader(customer.db_name(env), estate.reader_role)


def _provision_customer_env(estate: Estate, customer: EstateCustomer, env: str) -> Installation:
    spec = customer.environments[env]
    return estate.provision_installation(
        env=env,
        install_path=spec.install_path,
        version=customer.current_version,
        db_name=customer.db_name(env),
        customer_id=customer.customer_id,
        staging_path=spec.staging_path,
        backup_path=spec.backup_path,
    )


def up(root: str | os.PathLike[str] | None = None, base_port: int | None = None, say: Say = _quiet) -> Estate:
    """Bring the estate up, or repair whatever part of it is down; idempotent."""
    layout = EstateLayout(root_from_env(root))
    layout.root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(layout.lock_file):
        prior = read_state(layout.state_file)
        service_user = ensure_service_user()
        user = service_user.name
        port = _resolve_base_port(prior, base_port)
        host_keys = _prepare_keys(layout, user)
        _prepare_install_roots(layout, service_user)
        for folder in make_traversable(service_user, layout.root):
            say(f"{folder}: made enterable (o+x) so {user} can reach the estate root")
        if not service_user.is_current_user:
            say(f"service user: {user} (uid {service_user.uid}) owns the install roots; SSH logins as {user}")
        hosts = {env: HostState(env, port + index, host_keys[env]) for index, env in enumerate(ENVIRONMENTS)}
        _write_known_hosts(layout, hosts)
        pg_state = _ensure_pg(layout, prior, port)
        say(f"postgresql: {pg_state.mode} server on {pg_state.host}:{pg_state.port}")
        state = EstateState(root=str(layout.root), user=user, base_port=port, hosts=hosts, pg=pg_state)
        write_state(layout.state_file, state)
        estate = Estate(layout, state)
        customers, errors = load_estate_customers()
        estate.customers = customers  # reuse the list just loaded
        estate.pg.ensure_reader_role(estate.reader_role)
        estate._reader_ready = True
        say(f"read-only test role: {estate.reader_role}")
        for version in estate._wanted_versions():
            built = releases.ensure_release(layout.releases_dir, version)
            say(f"release {version}: {'built' if built else 'present'}")
        for env, host in hosts.items():
            _ensure_sshd(layout, env, host.port, user, say)
        for error in errors:
            say(f"customer config skipped: {error}")
        missing = []
        for customer in customers:
            refusal = _outside_root(layout, customer)
            if refusal:
                say(f"customer {customer.customer_id} skipped: {refusal}")
                continue
            for env in ENVIRONMENTS:
                if _installation_present(estate, customer, env):
                    _refresh_installation(estate, customer, env)
                    say(f"installation {customer.customer_id}/{env}: present (kept; `reset` re-provisions)")
                else:
                    missing.append((customer, env))
        # Provisioning waits on PostgreSQL most of the time: a few at once cut `up` from scratch.
        with ThreadPoolExecutor(max_workers=PROVISIONING_WORKERS) as pool:
            provisioned = pool.map(lambda item: _provision_customer_env(estate, *item), missing)
            for (customer, env), installation in zip(missing, provisioned, strict=True):
                say(
                    f"installation {customer.customer_id}/{env}: provisioned {installation.version} "
                    f"at {installation.install_path}"
                )
        estate.write_connection_files()
        say(f"connections: {layout.connections_env}")
    return estate


def reset(
    root: str | os.PathLike[str] | None = None,
    customer_id: str | None = None,
    env: str | None = None,
    say: Say = _quiet,
) -> list[Installation]:
    """Re-provision customer installations at their config's current version."""
    estate = Estate.load(root)
    customers, _errors = load_estate_customers()
    selected = [c for c in customers if customer_id is None or c.customer_id == customer_id]
    if customer_id is not None and not selected:
        raise EstateError(f"no valid customer config with customer_id {customer_id!r}")
    done = []
    with exclusive_lock(estate.layout.lock_file):
        for customer in selected:
            refusal = _outside_root(estate.layout, customer)
            if refusal:
                raise EstateError(refusal)
            for each_env in ENVIRONMENTS if env is None else (env,):
                installation = _provision_customer_env(estate, customer, each_env)
                say(f"installation {customer.customer_id}/{each_env}: reset to {installation.version}")
                done.append(installation)
    return done


def down(root: str | os.PathLike[str] | None = None, purge: bool = False, say: Say = _quiet) -> None:
    """Stop the servers (files kept); with ``purge`` also drop the estate's databases and its root."""
    layout = EstateLayout(root_from_env(root))
    if not layout.root.exists():
        say(f"nothing at {layout.root}")
        return
    state = read_state(layout.state_file)
    if purge and state is None and not layout.lock_file.exists():
        raise EstateError(f"{layout.root} does not look like an estate root (no state.json); not deleting it")
    with exclusive_lock(layout.lock_file):
        for env in ENVIRONMENTS:
            say(f"sshd {env}: {'stopped' if sshd.stop(layout, env) else 'not running'}")
        if purge:
            server = database.server_from_state(state.pg) if state else database.external_server_from_env()
            if server.reachable():
                for name in server.tagged_databases(database.owner_tag(layout)):
                    server.drop_database(name)
                    say(f"database {name}: dropped")
                role = database.reader_role(layout)
                dropped = server.drop_role(role)
                say(f"role {role}: {'dropped' if dropped else 'kept (still granted on a database)'}")
        if state is not None and state.pg.mode == "private" and database.stop_private_cluster(state.pg):
            say("postgresql: private cluster stopped")
    if purge:
        shutil.rmtree(layout.root)
        say(f"removed {layout.root}")


def is_running(root: str | os.PathLike[str] | None = None) -> bool:
    """True if any sshd of the estate at ``root`` is running (someone started it)."""
    layout = EstateLayout(root_from_env(root))
    return any(sshd.running_pid(layout, env) is not None for env in ENVIRONMENTS)


def status(root: str | os.PathLike[str] | None = None) -> list[ComponentStatus]:
    try:
        estate = Estate.load(root)
    except EstateError as exc:
        return [ComponentStatus("state", False, str(exc))]
    return [ComponentStatus("state", True, str(estate.layout.state_file)), *estate.component_status()]


def print_status(report: list[ComponentStatus], stream: Any = sys.stdout) -> bool:
    width = max(len(item.name) for item in report)
    for item in report:
        print(f"{item.name:<{width}}  {'ok  ' if item.healthy else 'DOWN'}  {item.detail}", file=stream)
    return all(item.healthy for item in report)
