"""The environment hook reads Airflow connections into plain objects and refuses unchecked host keys."""

from __future__ import annotations

import json

import pytest

from managed_upgrade_airflow.hooks.crm_environment import CrmEnvironmentHook, HostKeyCheckRequiredError

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, connection: dict) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))


def test_endpoint_and_database_come_from_the_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    ssh = {"key_file": "/keys/id_ed25519", "host_key": HOST_KEY}
    set_connection(
        monkeypatch,
        "env_ssh",
        {"conn_type": "ssh", "host": "127.0.0.1", "port": 2221, "login": "crm", "extra": ssh},
    )
    set_connection(
        monkeypatch,
        "env_db",
        {
            "conn_type": "postgres",
            "host": "db.internal",
            "port": 5433,
            "login": "crm_admin",
            "password": "s3cret",  # pragma: allowlist secret
            "schema": "crm_acme_dev",
            "extra": {"sslmode": "require"},
        },
    )
    hook = CrmEnvironmentHook("env_ssh", "env_db", label="dev")
    endpoint = hook.endpoint()
    assert (endpoint.host, endpoint.port, endpoint.username) == ("127.0.0.1", 2221, "crm")
    assert endpoint.key_file == "/keys/id_ed25519"
    assert endpoint.host_key == HOST_KEY
    assert endpoint.known_hosts_line() == f"[127.0.0.1]:2221 {HOST_KEY}\n"
    assert hook.ssh_hook.compress is False
    db = hook.db_target()
    assert (db.host, db.port, db.user, db.dbname) == ("db.internal", 5433, "crm_admin", "crm_acme_dev")
    assert db.tool_env()["PGPASSWORD"] == "s3cret"  # pragma: allowlist secret
    assert db.tool_env()["PGSSLMODE"] == "require"
    assert "s3cret" not in repr(db)


def test_a_connection_that_skips_host_key_checks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(
        monkeypatch,
        "lax_ssh",
        {"conn_type": "ssh", "host": "127.0.0.1", "login": "crm", "extra": {"no_host_key_check": True}},
    )
    with pytest.raises(HostKeyCheckRequiredError, match="lax_ssh disables host key checking"):
        CrmEnvironmentHook("lax_ssh").get_conn()


def test_a_database_connection_without_a_database_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "nodb", {"conn_type": "postgres", "host": "db.internal", "login": "x"})
    with pytest.raises(ValueError, match="must give host and schema"):
        CrmEnvironmentHook("unused", "nodb").db_target()


def test_a_hostile_database_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(
        monkeypatch, "evil_db", {"conn_type": "postgres", "host": "db", "schema": "crm; DROP DATABASE prod"}
    )
    with pytest.raises(ValueError, match=r"database name .* is not allowed"):
        CrmEnvironmentHook("unused", "evil_db").db_target()
