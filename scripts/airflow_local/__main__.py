"""Command line of the local Airflow harness (`scripts/airflow-local`)."""

from __future__ import annotations

import argparse
import sys

from airflow_local import harness
from airflow_local.celery_workers import node_name
from airflow_local.client import AirflowApiError, AirflowClient, UnknownUserError
from airflow_local.processes import listening_sockets, non_loopback
from airflow_local.settings import (
    AUTH_MANAGERS,
    EXECUTORS,
    HarnessConfigError,
    HarnessOverrides,
    HarnessSettings,
)
from airflow_local.users import read_passwords

EXPECTED_ERRORS = (
    harness.HarnessError,
    HarnessConfigError,
    AirflowApiError,
    FileNotFoundError,
    UnknownUserError,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="airflow-local",
        description="Run a local Airflow (api-server, scheduler, dag-processor, triggerer) on 127.0.0.1. "
        "Settings: AIRFLOW_LOCAL_HOME, AIRFLOW_LOCAL_DAGS, AIRFLOW_LOCAL_PORT, AIRFLOW_LOCAL_SMTP_PORT, "
        "AIRFLOW_LOCAL_EXTRA_USERS (name:role,...), AIRFLOW_LOCAL_STARTUP_TIMEOUT, AIRFLOW_LOCAL_LEDGER_DSN, "
        "AIRFLOW_LOCAL_METADATA_DSN (a PostgreSQL DSN for Airflow's metadata database; default: SQLite in "
        "the home), AIRFLOW_LOCAL_EXECUTOR (local or celery), AIRFLOW_LOCAL_PROD_ZONE_QUEUE (the second "
        "Celery worker's queue; default prod_zone), AIRFLOW_LOCAL_AUTH_MANAGER (simple or fab), ESTATE_ROOT.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start every component and wait until healthy; print the logins")
    up.add_argument(
        "--executor",
        choices=EXECUTORS,
        help="local: LocalExecutor (default, or AIRFLOW_LOCAL_EXECUTOR); celery: CeleryExecutor with a "
        "private Redis on a free loopback port and two Celery workers (default and prod-zone queue); "
        "needs AIRFLOW_LOCAL_METADATA_DSN",
    )
    up.add_argument(
        "--auth-manager",
        choices=AUTH_MANAGERS,
        help="simple: Airflow's simple auth manager (default, or AIRFLOW_LOCAL_AUTH_MANAGER; every user "
        "sees every DAG); fab: the FAB auth manager of a deployment, a role customer_<id> per customer "
        "config given to its consultants and project managers (they see only their customers' DAGs), "
        "manager Viewer, ops Op, admin Admin",
    )
    commands.add_parser("down", help="stop every component this home started (idempotent)")
    commands.add_parser("status", help="components, health and listening sockets; exit 1 unless all healthy")
    token = commands.add_parser("token", help="print an API access token for USER")
    token.add_argument("user")
    commands.add_parser("env", help="print the environment (eval it to use the airflow CLI on this instance)")
    arguments = parser.parse_args(argv)

    try:
        overrides = HarnessOverrides(
            executor=getattr(arguments, "executor", None),
            auth_manager=getattr(arguments, "auth_manager", None),
        )
        settings = HarnessSettings.from_environment(overrides)
        return COMMANDS[arguments.command](settings, arguments)
    except EXPECTED_ERRORS as error:
        print(f"airflow-local {arguments.command}: {error}", file=sys.stderr)
        return 1


def _up(settings: HarnessSettings, _: argparse.Namespace) -> int:
    airflow = harness.up(settings)
    print(f"UI and API: {airflow.base_url}   (passwords file: {settings.passwords_file})")
    if airflow.settings.celery:
        workers = ", ".join(
            f"{node_name(hostname)} ({','.join(queues)})"
            for hostname, queues in airflow.settings.celery_workers
        )
        print(f"CeleryExecutor: broker redis://127.0.0.1:{airflow.settings.redis_port}/0; workers {workers}")
    for user, password in sorted(airflow.passwords.items()):
        print(f"  {user:<24} {password}")
    print('Use the airflow CLI on it:  eval "$(scripts/airflow-local env)"')
    return 0


def _down(settings: HarnessSettings, _: argparse.Namespace) -> int:
    stopped = harness.down(settings)
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _status(settings: HarnessSettings, _: argparse.Namespace) -> int:
    statuses = harness.status(settings)
    for entry in statuses:
        state = "running" if entry.running else "stopped"
        print(f"{entry.name:<18} pid={entry.pid or '-':<8} {state:<8} health={entry.health or '-'}")
    sockets = listening_sockets(harness.running_components(settings))
    for name, pid, address, port in sockets:
        print(f"listening: {name} pid={pid} {address}:{port}")
    exposed = non_loopback(sockets)
    if exposed:
        print(f"NOT LOOPBACK: {exposed}", file=sys.stderr)
    healthy = all(entry.running and entry.health == "healthy" for entry in statuses)
    return 0 if healthy and not exposed else 1


def _token(settings: HarnessSettings, arguments: argparse.Namespace) -> int:
    with AirflowClient(settings.base_url, read_passwords(settings.passwords_file)) as client:
        print(client.token(arguments.user))
    return 0


def _env(settings: HarnessSettings, _: argparse.Namespace) -> int:
    if not settings.env_file.exists():
        raise FileNotFoundError(f"{settings.env_file} does not exist; run `airflow-local up` first")
    sys.stdout.write(settings.env_file.read_text(encoding="utf-8"))
    return 0


COMMANDS = {"up": _up, "down": _down, "status": _status, "token": _token, "env": _env}

if __name__ == "__main__":
    sys.exit(main())
