"""The docker compose deployment agrees with itself, with the pins and with what the code expects.

No Docker engine runs these tests: they read docker-compose.yaml, the Dockerfile and .env.example as
data, and run the deployment's own helper scripts (deploy/) for real. The integration test at the end
runs the PostgreSQL init script and the ledger migration against the local server.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import psycopg2
import pytest
import yaml
from airflow.models.connection import Connection
from airflow.secrets.local_filesystem import load_connections_dict
from psycopg2 import sql

from managed_upgrade.ledger.__main__ import DSN_VARIABLE
from managed_upgrade_airflow.ledger_access import LEDGER_CONN_ID

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "celery worker --queues default",
    "airflow-worker-prod-zone": "celery worker --queues prod_zone",
    "airflow-triggerer": "triggerer",
    "airflow-init": None,
}
DEMO_SERVICES = {"estate", "smtp-sink"}
INTERPOLATION = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORDS?$|SECRET|FERNET|_KEY$")


def _load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


airflow_init = _load_module(REPO / "deploy" / "airflow_init.py")
publish_connections = _load_module(REPO / "deploy" / "estate" / "publish_connections.py")


# --------------------------------------------------------------------------------------- readers
@pytest.fixture(scope="module")
def compose_text() -> str:
    return (REPO / "docker-compose.yaml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict:
    return yaml.safe_load(compose_text)


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def common_env(compose: dict) -> dict[str, str]:
    return compose["x-airflow-common"]["environment"]


def read_env_example() -> tuple[dict[str, str], set[str]]:
    """(variables set, variables only mentioned in a commented-out `# NAME=` line)."""
    values: dict[str, str] = {}
    mentioned: set[str] = set()
    for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
        commented = re.match(r"^#\s*([A-Z][A-Z0-9_]*)=", line)
        if commented:
            mentioned.add(commented[1])
        elif line.strip() and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not NAME=value"
            values[name] = value
    return values, mentioned


def resolve(text: str, values: dict[str, str]) -> str:
    """Compose-style interpolation: ${X}, ${X:-default}, ${X:?error} (the error must not trigger)."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if values.get(name):
            return values[name]
        if op in (":-", "-"):
            return arg
        raise AssertionError(f"${{{name}}} is required ({arg}) but has no value")

    return INTERPOLATION.sub(substitute, text)


def dockerfile_stages() -> list[tuple[str, list[tuple[str, str]]]]:
    """[(FROM argument, [(INSTRUCTION, arguments), ...]), ...] with continuations joined."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append((arguments.strip(), []))
        else:
            assert stages, "an instruction before the first FROM"
            stages[-1][1].append((keyword.upper(), " ".join(arguments.split())))
    return stages


def requirement_pin(name: str, path: Path = REPO / "requirements.txt") -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        found = re.match(rf"^{re.escape(name)}==(\S+)$", line.strip(), flags=re.IGNORECASE)
        if found:
            return found[1]
    raise AssertionError(f"{path.name} pins no {name}")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------- compose file
def test_every_component_of_the_celery_deployment_is_a_service(services: dict) -> None:
    expected = {"postgres", "redis", *AIRFLOW_SERVICES, *DEMO_SERVICES}
    assert expected <= set(services), f"missing services: {sorted(expected - set(services))}"


def test_airflow_services_share_the_common_definition_and_run_celery(compose: dict, services: dict) -> None:
    common = compose["x-airflow-common"]
    assert common["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for name, command in AIRFLOW_SERVICES.items():
        service = services[name]
        assert service["image"] == common["image"], name
        assert service["build"] == common["build"], name
        environment = service["environment"]
        missing = {k: v for k, v in common["environment"].items() if environment.get(k) != v}
        assert not missing, f"{name} lacks or overrides common settings {sorted(missing)}"
        assert service["volumes"] == common["volumes"], name
        if command:
            assert service["command"] == command, name
    assert services["airflow-init"]["command"] == ["bash", "/opt/airflow/deploy/airflow-init.sh"]
    assert (REPO / "deploy" / "airflow-init.sh").is_file()


def test_a_real_compose_implementation_accepts_the_file_with_the_example_env(services: dict) -> None:
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is missing: scripts/install-system-deps installs it"
    result = subprocess.run(
        [compose, "--env-file", ".env.example", "-f", "docker-compose.yaml", "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")},
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert set(resolved) == set(services)
    for worker, queue in (("airflow-worker", "default"), ("airflow-worker-prod-zone", "prod_zone")):
        assert resolved[worker]["command"] == f"celery worker --queues {queue}", worker
        assert resolved[worker]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert resolved[worker]["healthcheck"]["test"][0] == "CMD-SHELL", worker


def test_the_prod_zone_queue_of_the_compose_workers_is_the_one_the_product_documents() -> None:
    from managed_upgrade.config import load_customer_configs

    configs, _ = load_customer_configs(REPO / "include" / "customers")
    queues = {env.worker_queue for config in configs.values() for _, env in config.environments.items()}
    assert queues - {None} <= {"prod_zone"}, "an example config names a queue no compose worker serves"
    assert "worker_queue: prod_zone" in (REPO / "README.md").read_text(encoding="utf-8")


def test_components_point_at_the_right_services(common_env: dict, services: dict) -> None:
    broker = urlsplit(common_env["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname) == ("redis", "redis")
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        url = urlsplit(resolve(common_env[key], {"POSTGRES_PASSWORD": "pw"}))
        assert (url.hostname, url.path) == ("postgres", "/airflow"), key
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "airflow"
    execution = urlsplit(common_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    container_port = services["airflow-apiserver"]["ports"][0].rsplit(":", 1)[1]
    assert (execution.hostname, str(execution.port), execution.path) == (
        "airflow-apiserver",
        container_port,
        "/execution/",
    )
    # the FAB auth manager (per-customer roles), the same class the local harness runs with --auth-manager fab
    from airflow_local.environment import FAB_AUTH_MANAGER

    assert common_env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER
    assert not any(key.startswith("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER") for key in common_env)
    init = (REPO / "deploy" / "airflow-init.sh").read_text(encoding="utf-8")
    assert "python -m managed_upgrade_airflow.access_control sync" in init


def test_published_ports_are_bound_to_loopback_only(services: dict) -> None:
    published = []
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port!r} beyond loopback"
            published.append(name)
    assert published == ["airflow-apiserver"]


def test_long_running_services_have_healthchecks(services: dict) -> None:
    for name, service in services.items():
        if name not in {"airflow-init", "smtp-sink"}:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_demo_services_run_only_in_the_demo_profile(services: dict) -> None:
    for name, service in services.items():
        assert service.get("profiles", []) == (["demo"] if name in DEMO_SERVICES else []), name


def test_images_are_pinned(services: dict) -> None:
    for name, service in services.items():
        image = resolve(service["image"], {})
        repository, sep, tag = image.rpartition(":")
        assert sep and "/" not in tag and tag not in {"", "latest"}, f"{name}: image {image!r} is not pinned"
        assert repository, name
    base = dockerfile_stages()[0][0].split()[0]
    assert not base.endswith(":latest") and ":" in base


def test_no_secret_is_written_in_the_compose_file(compose_text: str, services: dict) -> None:
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), f"{name}.{key} is not from .env"
            for userinfo in re.findall(r"://([^/@]*)@", str(value)):
                _, _, password = userinfo.partition(":")
                assert password == "" or INTERPOLATION.fullmatch(password), f"{name}.{key} holds a password"


def test_every_variable_of_the_compose_file_is_in_env_example(compose_text: str) -> None:
    values, mentioned = read_env_example()
    for match in INTERPOLATION.finditer(compose_text):
        name, op = match["name"], match["op"]
        if op in (":?", "?"):
            assert name in values, f"required ${{{name}}} is not set in .env.example"
        else:
            assert name in values or name in mentioned, f"${{{name}}} is not documented in .env.example"
    # With .env.example's values every required variable resolves.
    resolve(compose_text, values)


def test_env_example_commits_no_secret() -> None:
    values, _ = read_env_example()
    secrets = {
        name: value
        for name, value in values.items()
        if SECRET_NAME.search(name) and name != "AIRFLOW_USER_PASSWORDS"
    }
    assert secrets, "no secret placeholders found; did the names change?"
    for name, value in secrets.items():
        assert value.startswith(airflow_init.PLACEHOLDER_PREFIX), f".env.example: {name} looks like a secret"
    for entry in values["AIRFLOW_USER_PASSWORDS"].split(","):
        assert entry.partition(":")[2].startswith(airflow_init.PLACEHOLDER_PREFIX), entry


def test_ledger_connection_names_the_ledger_database_of_the_postgres_service(
    common_env: dict, services: dict
) -> None:
    variable = f"AIRFLOW_CONN_{LEDGER_CONN_ID.upper()}"
    assert variable in common_env, f"{variable} (read by managed_upgrade_airflow) is not set"
    uri = resolve(common_env[variable], {"LEDGER_DB_PASSWORD": "secret123456"})
    connection = Connection(conn_id=LEDGER_CONN_ID, uri=uri)
    assert connection.conn_type == "postgres"
    assert (connection.host, connection.port) == ("postgres", 5432)
    assert (connection.schema, connection.login, connection.password) == ("ledger", "ledger", "secret123456")
    init_script = (REPO / "deploy" / "postgres" / "initdb" / "10-create-ledger-database.sh").read_text()
    assert 'LEDGER_DB_NAME="${LEDGER_DB_NAME:-ledger}"' in init_script
    assert 'LEDGER_DB_USER="${LEDGER_DB_USER:-ledger}"' in init_script
    assert "./deploy/postgres/initdb:/docker-entrypoint-initdb.d:ro" in services["postgres"]["volumes"]
    # airflow-init migrates the same database with the ledger's own command line.
    assert services["airflow-init"]["environment"][DSN_VARIABLE] == common_env[variable]


def test_every_variable_the_code_reads_is_set_for_the_airflow_containers(
    compose: dict, services: dict
) -> None:
    pattern = re.compile(r"[\"'](MANAGED_UPGRADE_[A-Z0-9_]+|AIRFLOW_CONN_[A-Z0-9_]+)[\"']")
    read = {
        name
        for folder in ("include", "plugins", "dags")
        for path in (REPO / folder).rglob("*.py")
        for name in pattern.findall(path.read_text(encoding="utf-8"))
    }
    assert "MANAGED_UPGRADE_LEDGER_DSN" in read, "the scan found nothing; did the code move?"
    set_somewhere = set(compose["x-airflow-common"]["environment"]) | set(
        services["airflow-init"]["environment"]
    )
    assert not read - set_somewhere, (
        f"read by the code but not set in docker-compose.yaml: {read - set_somewhere}"
    )
    # A cache or data directory the code is pointed at is a volume, not a container's throwaway layer.
    volumes = {entry.split(":")[1] for entry in compose["x-airflow-common"]["volumes"]}
    cache = compose["x-airflow-common"]["environment"]["MANAGED_UPGRADE_RELEASE_CACHE"]
    assert cache in volumes


def test_smtp_default_reaches_the_demo_sink(common_env: dict, services: dict) -> None:
    uri = resolve(common_env["AIRFLOW_CONN_SMTP_DEFAULT"], {})
    connection = Connection(conn_id="smtp_default", uri=uri)
    sink_command = services["smtp-sink"]["command"]
    listen = sink_command[sink_command.index("--listen") + 1]
    assert connection.conn_type == "smtp"
    assert (connection.host, str(connection.port)) == ("smtp-sink", listen.rsplit(":", 1)[1])
    extra = connection.extra_dejson
    assert extra["disable_ssl"] is extra["disable_tls"] is True
    assert extra["from_email"] == "managed-upgrade@example.com"


def test_estate_shares_its_root_with_the_airflow_containers(compose: dict, services: dict) -> None:
    estate = services["estate"]
    root = estate["environment"]["ESTATE_ROOT"]
    assert estate["volumes"] == [f"estate-root:{root}"]
    assert f"estate-root:{root}:ro" in compose["x-airflow-common"]["volumes"]
    assert estate["environment"]["ESTATE_PUBLISHED_HOST"] == "estate"
    assert "network_mode" not in estate
    assert estate["command"] == ["bash", "/opt/airflow/deploy/estate/entrypoint.sh"]
    assert (REPO / "deploy" / "estate" / "entrypoint.sh").stat().st_mode & stat.S_IXUSR
    assert estate["build"]["target"] == services["smtp-sink"]["build"]["target"] == "demo"


# ------------------------------------------------------------------------------------ Dockerfile
def test_base_image_is_the_pinned_airflow_on_the_project_python() -> None:
    base = dockerfile_stages()[0][0].split()[0]
    python = re.search(r">=(\d+\.\d+)", pyproject()["project"]["requires-python"])[1]
    assert base == f"apache/airflow:{requirement_pin('apache-airflow')}-python{python}"


def test_every_pip_install_is_held_to_the_constraints() -> None:
    stages = dockerfile_stages()
    copies = [args for _, instructions in stages for kind, args in instructions if kind == "COPY"]
    deps_copy = next(c for c in copies if "requirements.txt" in c)
    deps_dir = deps_copy.split()[-1].rstrip("/")
    assert "constraints.txt" in deps_copy
    installs = [
        args
        for _, instructions in stages
        for kind, args in instructions
        if kind == "RUN" and "pip install" in args
    ]
    assert installs
    for command in installs:
        assert f"-c {deps_dir}/constraints.txt" in command, f"unconstrained: {command}"
    assert any(f"-r {deps_dir}/requirements.txt" in command for command in installs)
    # A package named without a version gets it from constraints.txt, so it must be pinned there.
    for command in installs:
        for name in re.findall(r"pip install --no-cache-dir ([a-z][a-z0-9_-]*) ", command):
            requirement_pin(name, REPO / "constraints.txt")


def test_system_tools_are_installed_as_root_and_the_images_run_as_airflow() -> None:
    wanted = {"apache/airflow": {"openssh-client", "postgresql-client"}, "app": {"openssh-server", "socat"}}
    user = "airflow"  # the official image's USER; each later stage starts as the one before ended
    for origin, instructions in dockerfile_stages():
        installed: set[str] = set()
        for kind, args in instructions:
            if kind == "USER":
                user = args
            elif kind == "RUN" and "apt-get install" in args:
                assert user == "root", f"apt-get as {user}"
                installed |= set(args.split("apt-get install", 1)[1].split("&&")[0].split())
        assert user == "airflow", f"stage FROM {origin} ends as {user}"
        assert wanted[origin.split(":")[0].split()[0]] <= installed, origin


def test_image_holds_the_project_packages_on_its_python_path() -> None:
    instructions = [item for _, stage in dockerfile_stages() for item in stage]
    copies = {
        args.split()[-2].rstrip("/"): args.split()[-1].rstrip("/")
        for kind, args in instructions
        if kind == "COPY" and len(args.split()) == 3
    }
    for folder in ("dags", "plugins", "include", "scripts", "deploy"):
        assert copies.get(folder) == f"/opt/airflow/{folder}", f"{folder}/ is not copied to /opt/airflow"
    env = next(args for kind, args in instructions if kind == "ENV" and args.startswith("PYTHONPATH="))
    python_path = env.partition("=")[2].split(":")
    assert python_path == [
        f"/opt/airflow/{part}" for part in pyproject()["tool"]["pytest"]["ini_options"]["pythonpath"]
    ]


# ------------------------------------------------------------------------- estate publication
ESTATE_CONNECTIONS = {
    "crm_acme_dev_ssh": {
        "conn_type": "ssh",
        "host": "127.0.0.1",
        "port": 2221,
        "login": "airflow",
        "extra": {"key_file": "/tmp/crm-estate/keys/client_ed25519", "host_key": "ssh-ed25519 AAAAtest"},
    },
    "crm_acme_uat_ssh": {"conn_type": "ssh", "host": "127.0.0.1", "port": 2222, "login": "airflow"},
    "crm_acme_dev_db": {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": 2224,
        "login": "postgres",
        "schema": "crm_acme_dev",
    },
    "crm_acme_uat_db": {"conn_type": "postgres", "host": "localhost", "port": 2224, "schema": "crm_acme_uat"},
    "crm_releases": {"conn_type": "fs", "extra": {"path": "/tmp/crm-estate/releases"}},
}


def test_estate_connections_are_pointed_at_the_service_and_their_ports_listed() -> None:
    original = json.loads(json.dumps(ESTATE_CONNECTIONS))
    published, ports = publish_connections.publish(ESTATE_CONNECTIONS, "estate", "connections.json")
    assert ports == [2221, 2222, 2224]
    assert {c.get("host") for c in published.values()} == {"estate", None}
    assert published["crm_acme_dev_ssh"]["extra"]["host_key"] == "ssh-ed25519 AAAAtest"
    assert published["crm_releases"] == ESTATE_CONNECTIONS["crm_releases"]
    assert original == ESTATE_CONNECTIONS, "the input must not be changed"


def test_published_estate_file_is_an_airflow_connections_file(tmp_path: Path) -> None:
    source = tmp_path / "connections.json"
    source.write_text(json.dumps(ESTATE_CONNECTIONS))
    output = tmp_path / "published.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "deploy" / "estate" / "publish_connections.py"),
            "--connections",
            str(source),
            "--host",
            "estate",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2221", "2222", "2224"]
    loaded = load_connections_dict(str(output))
    ssh = loaded["crm_acme_dev_ssh"]
    assert (ssh.conn_type, ssh.host, ssh.port) == ("ssh", "estate", 2221)
    assert ssh.extra_dejson["key_file"] == "/tmp/crm-estate/keys/client_ed25519"
    assert (loaded["crm_acme_dev_db"].host, loaded["crm_acme_dev_db"].schema) == ("estate", "crm_acme_dev")
    assert loaded["crm_releases"].extra_dejson == {"path": "/tmp/crm-estate/releases"}


@pytest.mark.parametrize(
    ("connections", "host", "message"),
    [
        ({"x_ssh": {"conn_type": "ssh", "host": "127.0.0.1"}}, "estate", "'x_ssh' points at loopback"),
        ({"x_ssh": {"conn_type": "ssh", "host": "127.0.0.1", "port": 0}}, "estate", "without a port"),
        ({"x_ssh": "ssh://127.0.0.1"}, "estate", "'x_ssh' is not a JSON object"),
        ({}, "127.0.0.1", "compose service name"),
        ({}, "estate; rm -rf /", "compose service name"),
    ],
)
def test_unpublishable_estate_connections_are_refused(connections: dict, host: str, message: str) -> None:
    with pytest.raises(publish_connections.PublishError, match=re.escape(message)):
        publish_connections.publish(connections, host, "connections.json")


# ----------------------------------------------------------------------------------- airflow-init
def good_secrets() -> dict[str, str]:
    from cryptography.fernet import Fernet

    return {
        "POSTGRES_PASSWORD": "0123456789abcdef",
        "LEDGER_DB_PASSWORD": "fedcba9876543210",  # pragma: allowlist secret
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": "j" * 32,
        "AIRFLOW__API__SECRET_KEY": "s" * 40,
    }


def test_usable_secrets_pass() -> None:
    airflow_init.check_secrets(good_secrets())


def test_the_placeholders_of_env_example_are_refused(services: dict) -> None:
    values, _ = read_env_example()
    environment = {
        key: resolve(str(value), values) for key, value in services["airflow-init"]["environment"].items()
    }
    with pytest.raises(airflow_init.DeploymentConfigError, match=re.escape("placeholder of .env.example")):
        airflow_init.check_secrets(environment)
    with pytest.raises(airflow_init.DeploymentConfigError, match=re.escape("placeholder of .env.example")):
        airflow_init.parse_passwords(environment["AIRFLOW_USER_PASSWORDS"])


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("POSTGRES_PASSWORD", "", "POSTGRES_PASSWORD is not set"),
        ("LEDGER_DB_PASSWORD", "pass@word/with:url-chars", "LEDGER_DB_PASSWORD is used inside database URLs"),
        ("AIRFLOW__API_AUTH__JWT_SECRET", "short", "at least 32 characters"),
        ("AIRFLOW__CORE__FERNET_KEY", "not-a-fernet-key", "is not a Fernet key"),
        ("AIRFLOW__CORE__FERNET_KEY", "Change-Me-fernet-key", "placeholder"),
    ],
)
def test_unusable_secrets_are_refused_by_name(name: str, value: str, message: str) -> None:
    environment = good_secrets() | {name: value}
    with pytest.raises(airflow_init.DeploymentConfigError, match=re.escape(message)):
        airflow_init.check_secrets(environment)


def test_env_example_users_cover_every_customer_config_user() -> None:
    values, _ = read_env_example()
    users = airflow_init.parse_users(values["AIRFLOW_USERS"])
    assert airflow_init.users_without_gate_login(REPO / "include" / "customers", users) == []


def test_customer_users_who_cannot_answer_gates_are_reported(tmp_path: Path) -> None:
    (tmp_path / "acme.yaml").write_text("users:\n  consultant: [carla, vic]\n  project_manager: [pete]\n")
    (tmp_path / "broken.yaml").write_text("users: [unclosed\n")
    warnings = airflow_init.users_without_gate_login(tmp_path, {"carla": "user", "vic": "viewer"})
    assert len(warnings) == 3
    assert "'vic', whose role 'viewer' cannot answer gates" in warnings[0]
    assert "'pete', who is not in AIRFLOW_USERS" in warnings[1]
    assert warnings[2].startswith("broken.yaml: not readable")


@pytest.mark.parametrize(
    ("users", "passwords", "message"),
    [
        ("admin:admin,carla:user", "admin:0123456789ab", "no password for carla"),
        ("admin:admin", "admin:0123456789ab,eve:0123456789ab", "eve, who are not in AIRFLOW_USERS"),
        ("admin:admin", "admin:short", "at least 12 characters"),
        ("admin:admin", "admin0123456789", "without 'name:'"),
        ("admin:root", "admin:0123456789ab", "entry 'admin:root' must be name:role"),
        ("admin:admin,admin:user", "admin:0123456789ab", "names 'admin' twice"),
        ("", "admin:0123456789ab", "lists no user"),
    ],
)
def test_inconsistent_users_and_passwords_are_refused(users: str, passwords: str, message: str) -> None:
    with pytest.raises(airflow_init.DeploymentConfigError, match=re.escape(message)):
        airflow_init.passwords_for(airflow_init.parse_users(users), airflow_init.parse_passwords(passwords))


def test_write_passwords_gives_the_auth_manager_one_password_per_user(tmp_path: Path, capsys) -> None:
    target = tmp_path / "auth" / "passwords.json"
    environment = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin, carla:user",
        "AIRFLOW_USER_PASSWORDS": "carla:pa:ss-with-colon,admin:admin-password-1",  # pragma: allowlist secret
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(target),
    }
    customers = tmp_path / "customers"
    customers.mkdir()
    (customers / "acme.yaml").write_text("users:\n  consultant: [carla]\n  project_manager: [pete]\n")
    exit_code = airflow_init.main(["write-passwords", "--customers", str(customers)], environment)
    assert exit_code == 0
    assert json.loads(target.read_text()) == {"admin": "admin-password-1", "carla": "pa:ss-with-colon"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "'pete', who is not in AIRFLOW_USERS" in capsys.readouterr().err
    # A bad setting leaves the existing file alone and names the variable.
    environment["AIRFLOW_USER_PASSWORDS"] = "admin:admin-password-2"  # pragma: allowlist secret
    assert airflow_init.main(["write-passwords", "--customers", str(customers)], environment) == 2
    assert "no password for carla" in capsys.readouterr().err
    assert json.loads(target.read_text())["admin"] == "admin-password-1"


def test_fab_users_map_roles_and_leave_consultants_to_their_customer_roles(tmp_path: Path, capsys) -> None:
    from managed_upgrade_airflow.access_control import read_user_specs

    target = tmp_path / "users.json"
    environment = {
        "AIRFLOW_USERS": "admin:admin,ops:op,manager:viewer,carla:user",
        "AIRFLOW_USER_PASSWORDS": ",".join(
            f"{n}:{n}-password-1" for n in ("admin", "ops", "manager", "carla")
        ),
    }
    customers = tmp_path / "customers"
    customers.mkdir()
    (customers / "acme.yaml").write_text("users:\n  consultant: [carla]\n  project_manager: [pete]\n")
    exit_code = airflow_init.main(["fab-users", str(target), "--customers", str(customers)], environment)
    assert exit_code == 0
    specs = read_user_specs(target)  # the file the product's sync reads
    assert {name: spec.roles for name, spec in specs.items()} == {
        "admin": ("Admin",),
        "manager": ("Viewer",),
        "ops": ("Op",),
        "carla": (),
    }
    assert specs["carla"].password == "carla-password-1"  # pragma: allowlist secret
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "'pete', who is not in AIRFLOW_USERS" in capsys.readouterr().err


# ---------------------------------------------------------------------------- with PostgreSQL
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@pytest.mark.integration
def test_postgres_init_script_creates_a_ledger_database_airflow_init_can_migrate() -> None:
    name = f"ledger_deploy_{uuid.uuid4().hex[:10]}"
    password = "it's; DROP ROLE postgres; --"
    environment = os.environ | {
        "PGHOST": "127.0.0.1",
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres",
        "LEDGER_DB_NAME": name,
        "LEDGER_DB_USER": name,
        "LEDGER_DB_PASSWORD": password,
    }
    script = REPO / "deploy" / "postgres" / "initdb" / "10-create-ledger-database.sh"
    try:
        created = subprocess.run([str(script)], env=environment, capture_output=True, text=True, check=False)
        assert created.returncode == 0, created.stderr
        with psycopg2.connect(ADMIN_DSN) as admin, admin.cursor() as cursor:
            cursor.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,))
            assert cursor.fetchone() == (name,)
            cursor.execute("SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = %s", (name,))
            assert cursor.fetchone() == (True, False)
        dsn = {DSN_VARIABLE: f"postgresql://{name}@127.0.0.1:5432/{name}"}
        for command, expected in (("migrate", "applied 0001_initial"), ("status", "up to date")):
            result = subprocess.run(
                [sys.executable, "-m", "managed_upgrade.ledger", command],
                env=os.environ | dsn,
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            assert expected in result.stdout
    finally:
        admin = psycopg2.connect(ADMIN_DSN)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            cursor.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        admin.close()
