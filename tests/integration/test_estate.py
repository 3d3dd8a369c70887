"""The simulated estate against the real things: sshd handshakes and key checks, the fake vendor
installer upgrading (and failing to upgrade) over SSH, Airflow resolving the estate's connections,
release checksums, and the lifecycle of ``scripts/estate`` itself."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import paramiko
import psycopg2
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crm_estate
from crm_estate import Estate, Installation, host_conn_id, sshd
from crm_estate.catalogue import release_content
from crm_estate.database import external_server_from_env
from crm_estate.installation import customer_db_settings, customer_file_settings
from crm_estate.releases import PayloadSize, build_release, ensure_release, release_problems, verify_release

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ESTATE_CLI = REPO / "scripts" / "estate"
STEPS = ("preflight", "unpack", "migrate_db", "reset_settings", "write_version")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \[(?P<step>\w+)\] ")


# ---------------------------------------------------------------------------------- helpers


def run_remote(client: paramiko.SSHClient, argv: list[str], timeout: float = 120) -> tuple[int, str, str]:
    _stdin, stdout, stderr = client.exec_command(shlex.join(argv), timeout=timeout)
    code = stdout.channel.recv_exit_status()
    return code, stdout.read().decode(), stderr.read().decode()


def stage_release(estate: Estate, installation: Installation, version: str) -> Path:
    """Copy the release into the installation's staging dir over SFTP (as the DAG does)."""
    client = estate.ssh_connect(installation.env)
    try:
        sftp = client.open_sftp()
        for name in ("installer.py", "payload.tar.gz", "SHA256SUMS"):
            sftp.put(str(estate.release_dir(version) / name), str(installation.staging_path / name))
        sftp.close()
    finally:
        client.close()
    return installation.staging_path / "installer.py"


def run_installer(estate: Estate, installation: Installation, *extra: str) -> tuple[int, str]:
    client = estate.ssh_connect(installation.env)
    try:
        installer = str(installation.staging_path / "installer.py")
        code, out, err = run_remote(
            client, ["python3", installer, "--install-path", str(installation.install_path), *extra]
        )
    finally:
        client.close()
    return code, out + err


def remote_crm_status(estate: Estate, installation: Installation) -> tuple[int, dict]:
    client = estate.ssh_connect(installation.env)
    try:
        code, out, _err = run_remote(client, [str(installation.crm), "status"])
    finally:
        client.close()
    return code, json.loads(out)


def query(estate: Estate, dbname: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(estate.pg_dsn(dbname))
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def properties(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")
    )


def new_client_key(path: Path) -> Path:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    return path


def free_port_block(count: int) -> int:
    """First of ``count`` consecutive free loopback ports."""
    for _ in range(200):
        base = random.randint(30000, 60000 - count)  # port choice, not security
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free block of loopback ports")


# ------------------------------------------------------------------------------- ssh hosts


@pytest.mark.parametrize("env", ["dev", "uat", "prod"])
def test_host_accepts_the_client_key_and_offers_nothing_but_publickey(estate, env):
    client = estate.ssh_connect(env)
    try:
        code, out, _ = run_remote(client, ["whoami"])
        assert (code, out.strip()) == (0, estate.user)
        sftp = client.open_sftp()  # the Subsystem line works: staging uses SFTP
        assert "crm" in sftp.listdir(str(estate.layout.host_dir(env)))
        sftp.close()
    finally:
        client.close()

    transport = paramiko.Transport(("127.0.0.1", estate.hosts[env].port))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_none(estate.user)
        assert refused.value.allowed_types == ["publickey"]
    finally:
        transport.close()


@pytest.mark.parametrize("env", ["dev", "uat", "prod"])
def test_host_rejects_an_unknown_client_key(estate, env, tmp_path):
    stranger = new_client_key(tmp_path / "stranger_ed25519")
    with pytest.raises(paramiko.AuthenticationException):
        sshd.connect(estate.hosts[env].port, estate.user, stranger, estate.known_hosts_path, timeout=10)


@pytest.mark.parametrize("env", ["dev", "uat", "prod"])
def test_client_rejects_a_host_whose_key_does_not_match_known_hosts(estate, env, tmp_path):
    port = estate.hosts[env].port
    other_env = next(other for other in estate.hosts if other != env)
    assert estate.hosts[other_env].host_key != estate.hosts[env].host_key  # each host has its own key
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text(f"[127.0.0.1]:{port} {estate.hosts[other_env].host_key}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        sshd.connect(port, estate.user, estate.client_key_path, wrong, timeout=10)
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        sshd.connect(port, estate.user, estate.client_key_path, empty, timeout=10)


def test_sshd_listens_on_loopback_only(estate):
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                address, port = local.rsplit(":", 1)
                listening.add((address, int(port, 16)))
    for host in estate.hosts.values():
        addresses = {address for address, port in listening if port == host.port}
        assert addresses == {"0100007F"}, f"port {host.port} listens on {addresses}"


def test_known_hosts_pins_each_host(estate):
    lines = estate.known_hosts_path.read_text().splitlines()
    assert sorted(lines) == sorted(f"[127.0.0.1]:{h.port} {h.host_key}" for h in estate.hosts.values())
    assert all(host.host_key.startswith("ssh-ed25519 AAAA") for host in estate.hosts.values())


# ------------------------------------------------------------------------------- installer


def test_installer_upgrades_10_2_to_11_0_and_resets_settings(estate, fresh_installation):
    installation = fresh_installation("dev", "10.2.0")
    db_properties_before = (installation.install_path / "settings" / "database.properties").read_text()
    assert (
        properties(installation.install_path / "settings" / "system.properties")["session.timeout.minutes"]
        == (customer_file_settings(installation.customer_id)["system.properties"]["session.timeout.minutes"])
    )
    stage_release(estate, installation, "11.0.0")

    code, output = run_installer(estate, installation)

    assert code == 0, output
    assert (installation.install_path / "VERSION").read_text() == "11.0.0\n"
    assert query(estate, installation.db_name, "SELECT version FROM crm_schema_version") == [("11.0.0",)]
    assert [
        row[0] for row in query(estate, installation.db_name, "SELECT version FROM crm_migration_history")
    ] == [
        "10.2.0",
        "11.0.0",
    ]
    # the vendor installer resets customer settings to the release defaults (files and DB)
    defaults = release_content("11.0.0")
    for name, values in defaults.settings_files.items():
        assert properties(installation.install_path / "settings" / name) == values
    settings = dict(query(estate, installation.db_name, "SELECT key, value FROM crm_settings"))
    assert settings == defaults.db_settings
    assert set(customer_db_settings()) <= set(settings)
    assert all(settings[key] != value for key, value in customer_db_settings().items())
    # but keeps what is not a setting: database.properties and the business data
    assert (
        installation.install_path / "settings" / "database.properties"
    ).read_text() == db_properties_before
    assert query(estate, installation.db_name, "SELECT count(*), min(segment) FROM crm_accounts") == [
        (20, "standard")
    ]
    code, status = remote_crm_status(estate, installation)
    assert code == 0, status
    assert status == {
        "version": "11.0.0",
        "schema_version": "11.0.0",
        "modules": sorted(defaults.modules),
        "ok": True,
        "problems": [],
    }
    logs = list((installation.install_path / "logs").glob("upgrade-11.0.0-*.log"))
    assert len(logs) == 1
    log_steps = {
        match["step"] for line in logs[0].read_text().splitlines() if (match := LOG_LINE.match(line))
    }
    assert set(STEPS) <= log_steps
    assert "upgrade to 11.0.0 complete" in output


def test_installer_upgrades_10_2_to_11_1_in_one_go_with_an_explicit_log(estate, fresh_installation):
    installation = fresh_installation("uat", "10.2.0")
    stage_release(estate, installation, "11.1.0")
    log_file = installation.staging_path / "upgrade.log"

    code, output = run_installer(estate, installation, "--log", str(log_file))

    assert code == 0, output
    history = query(estate, installation.db_name, "SELECT version FROM crm_migration_history ORDER BY id")
    assert [row[0] for row in history] == ["10.2.0", "11.0.0", "11.1.0"]
    assert query(estate, installation.db_name, "SELECT count(*) FROM crm_portal_users") == [(0,)]
    assert remote_crm_status(estate, installation)[0] == 0
    assert "migrated to schema 11.1.0" in log_file.read_text()


# What each injected fault leaves behind: (crm status still ok?, a problem crm status must name)
FAULT_OUTCOMES = {
    "preflight": (True, None),  # preflight only checks: nothing was changed yet
    "unpack": (False, "missing"),  # old lib removed, half of the new one extracted
    "migrate_db": (False, "lib is from release 11.0.0 but VERSION says 10.2.0"),
    "reset_settings": (False, "config DB schema is 11.0.0 but VERSION says 10.2.0"),
    "write_version": (False, "VERSION file holds ''"),
}


@pytest.mark.parametrize("step", STEPS)
def test_fault_fails_the_installer_at_that_step_with_realistic_damage(estate, fresh_installation, step):
    installation = fresh_installation("dev", "10.2.0")
    stage_release(estate, installation, "11.0.0")
    estate.set_fault(installation.install_path, step)

    code, output = run_installer(estate, installation)

    assert code == 3, output
    assert f"[{step}] FAILED (exit 3): injected fault at step {step}" in output
    later_steps = STEPS[STEPS.index(step) + 1 :]
    assert not any(f"[{later}] start" in output for later in later_steps)
    healthy, problem = FAULT_OUTCOMES[step]
    status_code, status = remote_crm_status(estate, installation)
    assert (status_code == 0) == healthy, status
    assert status["ok"] is healthy
    if problem is not None:
        assert any(problem in item for item in status["problems"]), status["problems"]
    schema = query(estate, installation.db_name, "SELECT version FROM crm_schema_version")[0][0]
    assert schema == ("11.0.0" if step in ("reset_settings", "write_version") else "10.2.0")


def test_rerun_on_a_broken_installation_is_refused_until_restored(estate, fresh_installation):
    installation = fresh_installation("dev", "10.2.0")
    estate.stage_release_locally(installation.staging_path, "11.0.0")
    estate.set_fault(installation.install_path, "migrate_db")
    assert run_installer(estate, installation)[0] == 3
    assert estate.clear_fault(installation.install_path) is True

    code, output = run_installer(estate, installation)

    assert code == 2, output
    assert "installation is not healthy, refusing to upgrade" in output


@pytest.mark.parametrize(("installed", "release"), [("11.0.0", "11.0.0"), ("11.0.0", "10.2.0")])
def test_unsupported_upgrade_path_is_refused_without_changes(estate, fresh_installation, installed, release):
    installation = fresh_installation("prod", installed)
    stage_release(estate, installation, release)
    lib_before = sorted(path.name for path in (installation.install_path / "lib").iterdir())

    code, output = run_installer(estate, installation)

    assert code == 2, output
    assert f"unsupported upgrade path {installed} -> {release}" in output
    assert sorted(path.name for path in (installation.install_path / "lib").iterdir()) == lib_before
    assert remote_crm_status(estate, installation)[0] == 0


def test_corrupt_staged_payload_is_refused(estate, fresh_installation):
    installation = fresh_installation("dev", "10.2.0")
    stage_release(estate, installation, "11.0.0")
    payload = installation.staging_path / "payload.tar.gz"
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF
    payload.write_bytes(bytes(data))

    code, output = run_installer(estate, installation)

    assert code == 2, output
    assert "does not match SHA256SUMS" in output
    assert (installation.install_path / "VERSION").read_text() == "10.2.0\n"


def test_slow_fault_makes_the_run_longer_and_keeps_logging(estate, fresh_installation):
    installation = fresh_installation("dev", "10.2.0")
    stage_release(estate, installation, "11.0.0")
    estate.set_fault(installation.install_path, None, slow_seconds=2)

    started = time.monotonic()
    code, output = run_installer(estate, installation)

    assert code == 0, output
    assert time.monotonic() - started >= 2
    assert "still working" in output


def test_crm_status_detects_a_corrupt_lib_file(estate, fresh_installation):
    installation = fresh_installation("dev", "10.2.0")
    jar = installation.install_path / "lib" / "crm-core-10.2.0.jar"
    jar.write_bytes(b"\0" + jar.read_bytes()[1:])

    code, status = remote_crm_status(estate, installation)

    assert code == 1
    assert status["problems"] == ["lib/crm-core-10.2.0.jar corrupt (sha256 mismatch)"]


def test_isolated_installation_is_removed_with_its_database(estate):
    installation = estate.create_isolated_installation("uat", "11.0.0")
    assert estate.pg.database_exists(installation.db_name)
    estate.remove_installation(installation)
    assert not estate.pg.database_exists(installation.db_name)
    assert not installation.install_path.exists()


def test_installations_are_only_provisioned_under_the_estate_root(estate, tmp_path):
    with pytest.raises(ValueError, match="outside the estate root"):
        estate.provision_installation("dev", tmp_path / "crm", "10.2.0", "crm_never_made", "nobody")
    with pytest.raises(ValueError, match="outside the estate root"):
        estate.set_fault(estate.root / ".." / "elsewhere", "unpack")
    assert not estate.pg.database_exists("crm_never_made")


# ------------------------------------------------------------------------------ connections


def test_connection_files_cover_every_customer_connection(estate):
    connections = json.loads(estate.layout.connections_json.read_text())
    assert connections["crm_releases"] == {
        "conn_type": "fs",
        "description": "release repository of the simulated estate",
        "extra": {"path": str(estate.releases_dir)},
    }
    assert estate.customers, "no customer configs were found"
    for customer in estate.customers:
        for env, spec in customer.environments.items():
            ssh = connections[spec.ssh_conn_id]
            assert (ssh["conn_type"], ssh["port"], ssh["login"]) == (
                "ssh",
                estate.hosts[env].port,
                estate.user,
            )
            assert ssh["extra"]["host_key"] == estate.hosts[env].host_key
            assert "no_host_key_check" not in ssh["extra"]
            db = connections[spec.db_conn_id]
            assert (db["conn_type"], db["schema"]) == ("postgres", f"crm_{customer.customer_id}_{env}")
    env_file = estate.layout.connections_env.read_text()
    assert env_file.count("export AIRFLOW_CONN_") == len(connections)


def test_ssh_connections_resolve_through_sshhook(estate, airflow_connections):
    from airflow.providers.ssh.hooks.ssh import SSHHook

    for customer in estate.customers:
        for spec in customer.environments.values():
            hook = SSHHook(ssh_conn_id=spec.ssh_conn_id, conn_retry_attempts=1)
            with hook.get_conn() as client:
                code, out, _ = run_remote(client, ["cat", str(spec.install_path / "VERSION")])
            assert code == 0
            assert re.fullmatch(r"\d+\.\d+\.\d+\n", out)
    for env in estate.hosts:
        with SSHHook(ssh_conn_id=host_conn_id(env), conn_retry_attempts=1).get_conn() as client:
            assert run_remote(client, ["true"])[0] == 0


def test_sshhook_refuses_a_connection_whose_pinned_key_is_wrong(estate, airflow_connections):
    from airflow.providers.ssh.hooks.ssh import SSHHook

    wrong = estate.ssh_connection("dev")
    wrong["extra"]["host_key"] = estate.hosts["uat"].host_key
    airflow_connections.add("estate_wrong_host_key", wrong)
    with pytest.raises(paramiko.BadHostKeyException):
        SSHHook(ssh_conn_id="estate_wrong_host_key", conn_retry_attempts=1).get_conn()


def test_db_and_fs_connections_resolve(estate, airflow_connections, fresh_installation):
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from airflow.sdk import BaseHook

    installation = fresh_installation("dev", "11.1.0")
    _ssh_conn_id, db_conn_id = airflow_connections.add_installation(installation)
    hook = PostgresHook(postgres_conn_id=db_conn_id)
    assert hook.get_first("SELECT version FROM crm_schema_version") == ("11.1.0",)
    releases = BaseHook.get_connection("crm_releases")
    assert Path(releases.extra_dejson["path"]) / "aurea-crm" / "11.1.0" == estate.release_dir("11.1.0")


def test_connections_json_is_importable_by_airflow(estate):
    from airflow.secrets.local_filesystem import load_connections_dict

    loaded = load_connections_dict(str(estate.layout.connections_json))
    assert loaded["crm_releases"].conn_type == "fs"
    ssh = loaded[host_conn_id("prod")]
    assert (ssh.conn_type, ssh.host, ssh.port) == ("ssh", "127.0.0.1", estate.hosts["prod"].port)
    assert ssh.extra_dejson["key_file"] == str(estate.client_key_path)


def test_env_command_output_can_be_evaluated_by_a_shell(estate):
    script = 'eval "$(scripts/estate env)"; printf %s "$AIRFLOW_CONN_CRM_RELEASES"'
    env = {**os.environ, "ESTATE_ROOT": str(estate.root)}
    result = subprocess.run(
        ["bash", "-c", script], check=False, cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["extra"] == {"path": str(estate.releases_dir)}


# --------------------------------------------------------------------------------- releases


@pytest.mark.parametrize("version", ["10.2.0", "11.0.0", "11.1.0"])
def test_release_manifest_verifies(estate, version):
    release_dir = estate.release_dir(version)
    assert verify_release(release_dir) == []
    assert sorted(path.name for path in release_dir.iterdir()) == [
        "SHA256SUMS",
        "installer.py",
        "payload.tar.gz",
    ]
    # the manifest is in sha256sum's own format
    result = subprocess.run(
        ["sha256sum", "--check", "SHA256SUMS"], check=False, cwd=release_dir, capture_output=True
    )
    assert result.returncode == 0, result.stdout


def test_release_build_is_reproducible_and_tampering_is_detected(tmp_path):
    first = build_release(tmp_path / "a", "11.0.0")
    second = build_release(tmp_path / "b", "11.0.0")
    assert (first / "SHA256SUMS").read_text() == (second / "SHA256SUMS").read_text()
    payload = second / "payload.tar.gz"
    payload.write_bytes(payload.read_bytes() + b"x")
    assert verify_release(second) == [f"{payload} does not match its SHA256SUMS entry"]


def test_release_from_older_estate_code_is_rebuilt(tmp_path):
    build_release(tmp_path, "10.2.0")
    assert release_problems(tmp_path, "10.2.0") == []
    build_info = tmp_path / "aurea-crm" / ".10.2.0.build.json"
    build_info.write_text(build_info.read_text().replace('"sources": "', '"sources": "0'))
    assert release_problems(tmp_path, "10.2.0") == [
        "built by an older version of the estate code; `scripts/estate up` rebuilds it"
    ]
    assert ensure_release(tmp_path, "10.2.0") is True
    assert release_problems(tmp_path, "10.2.0") == []
    assert ensure_release(tmp_path, "10.2.0") is False


def test_release_command_builds_a_sized_payload(tmp_path):
    env = {**os.environ, "ESTATE_ROOT": str(tmp_path)}
    result = subprocess.run(
        [str(ESTATE_CLI), "release", "--version", "12.0.0", "--size-mib", "2", "--files", "3"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    release_dir = tmp_path / "releases" / "aurea-crm" / "12.0.0"
    assert verify_release(release_dir) == []
    import tarfile

    with tarfile.open(release_dir / "payload.tar.gz") as archive:
        blobs = [m for m in archive.getmembers() if m.name.startswith("lib/blobs/") and m.isfile()]
        manifest = archive.extractfile("lib/MANIFEST.sha256").read().decode()
    assert len(blobs) == 3
    assert sum(blob.size for blob in blobs) == 2 * 1024 * 1024
    assert all(blob.name.removeprefix("lib/") in manifest for blob in blobs)
    assert (release_dir / "payload.tar.gz").stat().st_size > 2 * 1024 * 1024  # incompressible


def test_payload_size_rejects_nonsense():
    with pytest.raises(ValueError, match="--files"):
        PayloadSize.mib(1, 0)


# -------------------------------------------------------------------------------- lifecycle


def _estate_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ESTATE_CLI), *args], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def _private_customer(directory: Path, root: Path, customer_id: str) -> None:
    """A valid customer config (the acme example) whose paths live under ``root``."""
    text = (REPO / "include" / "customers" / "acme.yaml").read_text()
    config = yaml.safe_load(text)
    config["customer_id"] = customer_id
    for env, spec in config["environments"].items():
        spec["ssh_conn_id"] = f"crm_{customer_id}_{env}_ssh"
        spec["db_conn_id"] = f"crm_{customer_id}_{env}_db"
        for field in ("install_path", "staging_path", "backup_path"):
            spec[field] = (
                spec[field].replace("/tmp/crm-estate", str(root)).replace("/acme", f"/{customer_id}")
            )
        spec["allowed_roots"] = [path.replace("/tmp/crm-estate", str(root)) for path in spec["allowed_roots"]]
        spec["test_db_conn_id"] = f"crm_{customer_id}_{env}_test_db"
    directory.mkdir()
    (directory / f"{customer_id}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_estate_lifecycle_up_idempotent_repair_reset_fault_down_purge(tmp_path_factory):
    root = tmp_path_factory.mktemp("estate") / "root"
    customer_id = f"lc{os.getpid()}x{random.randint(0, 9999)}"  # unique, not secret
    customers = tmp_path_factory.mktemp("customers") / "customers"
    _private_customer(customers, root, customer_id)
    env = {
        **os.environ,
        "ESTATE_ROOT": str(root),
        "ESTATE_BASE_PORT": str(free_port_block(4)),
        "ESTATE_CUSTOMERS_DIR": str(customers),
    }
    install_dev = root / "hosts" / "dev" / "crm" / customer_id
    try:
        started = time.monotonic()
        first = _estate_cli(env, "up")
        elapsed = time.monotonic() - started
        assert first.returncode == 0, first.stdout + first.stderr
        print(f"estate up from scratch: {elapsed:.1f}s")
        assert _estate_cli(env, "status").returncode == 0
        running = Estate.load(root)
        assert (install_dev / "VERSION").read_text() == "10.2.0\n"
        assert running.pg.database_exists(f"crm_{customer_id}_prod")
        assert f"AIRFLOW_CONN_CRM_{customer_id.upper()}_UAT_SSH" in running.layout.connections_env.read_text()
        pids = {name: sshd.running_pid(running.layout, name) for name in running.hosts}
        assert all(pids.values())

        again = _estate_cli(env, "up")
        assert again.returncode == 0
        assert "already up and healthy" in again.stdout
        assert {name: sshd.running_pid(running.layout, name) for name in running.hosts} == pids

        # half up: one sshd gone, an installation changed by hand; up repairs without clobbering
        marker = install_dev / "settings" / "hand-made.properties"
        marker.write_text("kept=yes\n")
        sshd.stop(running.layout, "uat")
        assert _estate_cli(env, "status").returncode == 1
        repaired = _estate_cli(env, "up")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert "sshd uat: started" in repaired.stdout
        assert sshd.running_pid(running.layout, "uat") not in (None, pids["uat"])
        assert sshd.running_pid(running.layout, "dev") == pids["dev"]
        assert marker.exists()

        reset = _estate_cli(env, "reset", "--customer", customer_id, "--env", "dev")
        assert reset.returncode == 0, reset.stderr
        assert not marker.exists()

        fault = _estate_cli(env, "fault", "--customer", customer_id, "--env", "dev", "--step", "migrate_db")
        assert fault.returncode == 0, fault.stderr
        assert (install_dev / ".installer-fault").read_text() == "migrate_db\n"
        assert _estate_cli(env, "fault", "--clear").returncode == 0
        assert not (install_dev / ".installer-fault").exists()
        assert _estate_cli(env, "fault", "--customer", customer_id).returncode == 2

        down = _estate_cli(env, "down")
        assert down.returncode == 0
        assert not any(sshd.running_pid(running.layout, name) for name in running.hosts)
        assert (install_dev / "VERSION").exists()  # files are kept
        assert _estate_cli(env, "status").returncode == 1
    finally:
        purge = _estate_cli(env, "down", "--purge")
    assert purge.returncode == 0, purge.stderr
    assert not root.exists()
    assert not external_server_from_env().database_exists(f"crm_{customer_id}_dev")


def test_private_cluster_is_used_when_no_server_answers(tmp_path, monkeypatch):
    # As root the cluster runs as 'postgres', which cannot enter pytest's private tmp dirs.
    parent = Path(tempfile.mkdtemp(prefix="crm-estate-private-", dir="/tmp"))
    parent.chmod(0o755)
    root = parent / "root"
    monkeypatch.setenv("ESTATE_PG_PORT", str(free_port_block(1)))  # nothing listens there
    monkeypatch.setenv("ESTATE_PG_PRIVATE_PORT", str(free_port_block(1)))
    monkeypatch.setenv("ESTATE_CUSTOMERS_DIR", str(tmp_path / "no-customers"))
    try:
        private = crm_estate.up(root, base_port=free_port_block(3))
        assert private.state.pg.mode == "private"
        assert private.state.pg.port == int(os.environ["ESTATE_PG_PRIVATE_PORT"])
        installation = private.create_isolated_installation("dev", "11.0.0")
        code, report = private.crm_status(installation.install_path)
        assert code == 0, report
        assert postgres_processes_using(root)
    finally:
        crm_estate.down(root, purge=True)
    assert not root.exists()
    assert not postgres_processes_using(root)
    parent.rmdir()


def postgres_processes_using(root: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"postgres" in cmdline and str(root).encode() in cmdline:
            found.append(int(proc.name))
    return found
