"""One environment for every Airflow component, so they agree on database, secrets and addresses.

Airflow reads `AIRFLOW__SECTION__KEY` variables before airflow.cfg, so the whole configuration of
the local instance is this mapping, written to `<home>/airflow.env` (`export K='v'` lines) for a
shell to `eval` and passed as-is to each component process. Each setting says why it differs from
Airflow's default.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
from pathlib import Path

from airflow_local.celery_workers import HOSTNAME_CALLABLE, NODE_VARIABLE, broker_url, node_name
from airflow_local.metadata_db import sqlalchemy_url
from airflow_local.private_files import write_private
from airflow_local.settings import DEFAULT_QUEUE, HarnessConfigError, HarnessSettings
from airflow_local.users import users_config_value

SMTP_FROM_ADDRESS = "managed-upgrade@example.com"
# Two cores: a handful of concurrent task processes is what the machine can run without thrashing.
TASK_CONCURRENCY = 8
EXECUTOR_CLASSES = {"local": "LocalExecutor", "celery": "CeleryExecutor"}
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
# FAB's auth manager, answering HITL tasks assigned by user name (see that module).
FAB_AUTH_MANAGER = "managed_upgrade_airflow.fab_auth_manager.FabAuthManager"
# Seconds to hand a task to the broker. Celery's default of 1 s is short for a loaded two-core machine.
CELERY_OPERATION_TIMEOUT = 5


def airflow_settings(settings: HarnessSettings, users: dict[str, str]) -> dict[str, str]:
    """The Airflow configuration of the local instance as environment variables."""
    keys = _instance_secrets(settings.secrets_file)
    api = settings.base_url
    config = {
        "AIRFLOW_HOME": str(settings.home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_url(settings),
        "AIRFLOW__CORE__EXECUTOR": EXECUTOR_CLASSES[settings.executor],
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.plugins_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": str(TASK_CONCURRENCY),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(TASK_CONCURRENCY),
        # Every component must sign and check the same tokens and decrypt the same connections.
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        # Loopback only; task processes reach the execution API at the same address.
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(settings.port),
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        # The scheduler's health server would bind 0.0.0.0:8974; health comes from /monitor/health.
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        # New or edited DAG files show up within seconds instead of minutes.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "2",
        "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "300",
        # Heartbeats every 2 s: health turns green sooner and stale jobs are noticed sooner.
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(settings.logs_dir),
        "PYTHONPATH": _python_path(settings.repo_root),
    }
    config.update(auth_settings(settings, users))
    config["MANAGED_UPGRADE_CUSTOMERS_DIR"] = str(settings.customers_folder)
    config["AIRFLOW_CONN_MANAGED_UPGRADE_LEDGER"] = ledger_connection(settings.ledger_dsn)
    config.update(estate_connections(settings.estate_root / "connections.env"))
    if settings.smtp_port is not None:
        config.update(smtp_settings(settings.smtp_port))
    if settings.celery:
        config.update(celery_settings(settings))
    return config


def auth_settings(settings: HarnessSettings, users: dict[str, str]) -> dict[str, str]:
    """Who may log in: the simple auth manager's users and passwords file, or the FAB auth manager.

    FAB keeps its users and roles in the metadata database (created by `up` before any component
    starts); its users' JWTs come from the same `POST /auth/token` as the simple auth manager's.
    """
    if settings.fab:
        return {
            "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
            # FAB's Flask config file; none is needed (its defaults: database users, no sign-up).
            "AIRFLOW__FAB__CONFIG_FILE": str(settings.home / "webserver_config.py"),
        }
    return {
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": users_config_value(users),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(settings.passwords_file),
    }


def celery_worker_concurrency(settings: HarnessSettings) -> int:
    """Task slots per worker: the machine's TASK_CONCURRENCY shared between the workers (at least 1)."""
    return max(1, TASK_CONCURRENCY // len(settings.celery_workers))


def celery_settings(settings: HarnessSettings) -> dict[str, str]:
    """The CeleryExecutor: the private Redis as broker, task states in the metadata database."""
    if settings.redis_port is None:
        raise HarnessConfigError("the celery executor's Redis port is not chosen yet (`up` chooses it)")
    return {
        "AIRFLOW__CELERY__BROKER_URL": broker_url(settings.redis_port),
        # Celery's database result backend (SQLAlchemy URL behind `db+`) in Airflow's own database.
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + sqlalchemy_url(settings, driver="postgresql"),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(celery_worker_concurrency(settings)),
        "AIRFLOW__CELERY__OPERATION_TIMEOUT": str(CELERY_OPERATION_TIMEOUT),
        # The queue of tasks that name none; a worker of the layout serves it (settings check that).
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": DEFAULT_QUEUE,
    }


def celery_worker_environment(hostname: str) -> dict[str, str]:
    """What one worker adds to the instance's environment: its task instances report its node name."""
    return {NODE_VARIABLE: node_name(hostname), "AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE}


def ledger_connection(dsn: str) -> str:
    """The ledger's libpq DSN as the JSON of the `managed_upgrade_ledger` Airflow connection."""
    from psycopg2.extensions import parse_dsn

    parts = parse_dsn(dsn)
    connection = {
        "conn_type": "postgres",
        "host": parts.get("host", "127.0.0.1"),
        "port": int(parts.get("port", 5432)),
        "login": parts.get("user"),
        "password": parts.get("password"),
        "schema": parts["dbname"],
    }
    return json.dumps({key: value for key, value in connection.items() if value is not None})


def smtp_settings(port: int) -> dict[str, str]:
    """Send all mail (the smtp_default connection and Airflow's own email) to a sink on loopback."""
    connection = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "extra": {
            "disable_ssl": True,
            "disable_tls": True,
            "from_email": SMTP_FROM_ADDRESS,
            "timeout": 10,
            "retry_limit": 1,
        },
    }
    return {
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(connection),
        "AIRFLOW__SMTP__SMTP_HOST": "127.0.0.1",
        "AIRFLOW__SMTP__SMTP_PORT": str(port),
        "AIRFLOW__SMTP__SMTP_STARTTLS": "False",
        "AIRFLOW__SMTP__SMTP_SSL": "False",
        "AIRFLOW__SMTP__SMTP_MAIL_FROM": SMTP_FROM_ADDRESS,
    }


def estate_connections(connections_env: Path) -> dict[str, str]:
    """`export AIRFLOW_CONN_X='...'` lines of the simulated estate; nothing if it is not up."""
    if not connections_env.exists():
        return {}
    found: dict[str, str] = {}
    for number, line in enumerate(connections_env.read_text(encoding="utf-8").splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assignment = words[1] if len(words) == 2 and words[0] == "export" else None
        name, sep, value = (assignment or "").partition("=")
        if not sep or not name.startswith("AIRFLOW_CONN_"):
            raise HarnessConfigError(
                f"{connections_env}:{number}: expected `export AIRFLOW_CONN_<ID>='<json>'`, got {line!r}"
            )
        found[name] = value
    return found


def write_env_file(path: Path, environment: dict[str, str]) -> None:
    """Shell-quoted `export` lines (owner-only: they hold the instance's secrets)."""
    lines = [f"export {name}={shlex.quote(value)}" for name, value in sorted(environment.items())]
    write_private(
        path,
        "# Generated by airflow-local up; eval or source it to use the airflow CLI.\n"
        + "\n".join(lines)
        + "\n",
    )


def component_environment(airflow_env: dict[str, str]) -> dict[str, str]:
    """The caller's environment with ours on top (PYTHONPATH keeps the caller's entries after ours)."""
    environment = dict(os.environ)
    inherited_path = environment.get("PYTHONPATH")
    environment.update(airflow_env)
    if inherited_path:
        environment["PYTHONPATH"] = f"{airflow_env['PYTHONPATH']}{os.pathsep}{inherited_path}"
    return environment


def _python_path(repo_root: Path) -> str:
    return os.pathsep.join(str(repo_root / part) for part in ("include", "plugins", "scripts"))


def _instance_secrets(secrets_file: Path) -> dict[str, str]:
    """Keys generated once per home and kept, so a restart can still read what was encrypted."""
    if secrets_file.exists():
        return json.loads(secrets_file.read_text(encoding="utf-8"))
    from cryptography.fernet import Fernet

    keys = {
        "fernet_key": Fernet.generate_key().decode(),
        "jwt_secret": secrets.token_urlsafe(32),
        "api_secret_key": secrets.token_urlsafe(32),
    }
    write_private(secrets_file, json.dumps(keys, indent=2) + "\n")
    return keys
