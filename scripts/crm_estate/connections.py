"""Airflow connections for the estate, in the two forms Airflow reads: ``AIRFLOW_CONN_*``
environment variables (``connections.env``) and an ``airflow connections import`` file
(``connections.json``).

SSH connections pin the host key (``host_key`` extra) and name the client key file; they never
disable host key checking.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from crm_estate.layout import LOOPBACK
from crm_estate.state import HostState, PgState

RELEASES_CONN_ID = "crm_releases"


def env_var_name(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def ssh_connection(host: HostState, user: str, client_key: Path) -> dict[str, Any]:
    return {
        "conn_type": "ssh",
        "description": f"simulated CRM host {host.env}",
        "host": LOOPBACK,
        "port": host.port,
        "login": user,
        "extra": {"key_file": str(client_key), "host_key": host.host_key, "look_for_keys": False},
    }


def postgres_connection(pg: PgState, dbname: str, login: str | None = None) -> dict[str, Any]:
    """The config DB ``dbname`` as the estate's admin user, or as ``login`` (the read-only test role)."""
    return {
        "conn_type": "postgres",
        "description": f"config DB {dbname}" + (f", read-only test role {login}" if login else ""),
        "host": pg.host,
        "port": pg.port,
        "login": login or pg.user,
        "schema": dbname,
    }


def fs_connection(releases_dir: Path) -> dict[str, Any]:
    return {
        "conn_type": "fs",
        "description": "release repository of the simulated estate",
        "extra": {"path": str(releases_dir)},
    }


def as_env_vars(connections: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``{AIRFLOW_CONN_<ID>: '<json>'}`` (Airflow's env-var secrets backend reads the JSON form)."""
    return {env_var_name(conn_id): json.dumps(conn, sort_keys=True) for conn_id, conn in connections.items()}


def render_env_file(connections: dict[str, dict[str, Any]]) -> str:
    lines = ["# Airflow connections of the simulated CRM estate; source it: . connections.env"]
    lines += [
        f"export {name}={shlex.quote(value)}" for name, value in sorted(as_env_vars(connections).items())
    ]
    return "\n".join(lines) + "\n"


def write_connection_files(connections: dict[str, dict[str, Any]], env_file: Path, json_file: Path) -> None:
    for path, text in (
        (env_file, render_env_file(connections)),
        (json_file, json.dumps(connections, indent=2, sort_keys=True) + "\n"),
    ):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
