"""Fixtures shared by every test layer.

Estate fixtures (integration tests): ``estate`` (the running simulated estate, brought up if
needed), ``airflow_connections`` (its connections as AIRFLOW_CONN_* variables) and
``fresh_installation`` (an isolated installation + config DB, removed after the test).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported lazily below, so unit tests never load the estate's dependencies
    from crm_estate import Estate, Installation

# ---------------------------------------------------------------------------------- estate


@pytest.fixture(scope="session")
def estate() -> Iterator[Estate]:
    """The simulated estate ($ESTATE_ROOT, default /tmp/crm-estate), brought up or repaired if
    needed. Stopped at the end of the session only if no server of it was running before."""
    import crm_estate

    started_here = not crm_estate.is_running()
    healthy = all(component.healthy for component in crm_estate.status())
    running = crm_estate.Estate.load() if healthy else crm_estate.up()
    yield running
    if started_here:
        crm_estate.down()


@dataclass
class AirflowConnections:
    """The estate's connections, set as AIRFLOW_CONN_* for one test (Airflow's env-var backend
    resolves them outside a task too). ``add`` registers one more, e.g. for an isolated DB."""

    estate: Estate
    monkeypatch: pytest.MonkeyPatch

    def add(self, conn_id: str, connection: dict[str, Any]) -> str:
        self.monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        return conn_id

    def add_installation(self, installation: Installation) -> tuple[str, str]:
        """(ssh_conn_id, db_conn_id) that reach ``installation``'s host and config DB."""
        from crm_estate import host_conn_id

        db_conn_id = self.add(f"{installation.db_name}_db", self.estate.db_connection(installation.db_name))
        return host_conn_id(installation.env), db_conn_id


@pytest.fixture
def airflow_connections(estate: Estate, monkeypatch: pytest.MonkeyPatch) -> AirflowConnections:
    for name, value in estate.connections_env().items():
        monkeypatch.setenv(name, value)
    return AirflowConnections(estate, monkeypatch)


@pytest.fixture
def fresh_installation(estate: Estate) -> Iterator[Callable[..., Installation]]:
    """Factory ``fresh_installation(env="dev", version="10.2.0")``: a new installation with its own
    path under the estate root and its own config DB; everything made is removed afterwards."""
    made: list[Installation] = []

    def make(env: str = "dev", version: str = "10.2.0") -> Installation:
        installation = estate.create_isolated_installation(env, version)
        made.append(installation)
        return installation

    yield make
    for installation in made:
        estate.remove_installation(installation)


# ------------------------------------------------------ environment operations (remote hosts, DBs)


@pytest.fixture
def remote_host(estate: Estate) -> Iterator[Callable[..., Any]]:
    """Factory ``remote_host(env="dev")``: a connected :class:`managed_upgrade.remote.RemoteHost` to an
    estate host, its host key pinned (RejectPolicy); closed after the test."""
    from managed_upgrade.remote import RemoteHost, SshEndpoint, connect

    opened: list[Any] = []

    def make(env: str = "dev") -> Any:
        endpoint = SshEndpoint(
            host="127.0.0.1",
            port=estate.hosts[env].port,
            username=estate.user,
            key_file=str(estate.client_key_path),
            host_key=estate.hosts[env].host_key,
        )
        host = RemoteHost(connect(endpoint), env, endpoint)
        opened.append(host)
        return host

    yield make
    for host in opened:
        host.close()


@pytest.fixture
def db_target(estate: Estate) -> Callable[[str], Any]:
    """Factory ``db_target(dbname)``: a :class:`managed_upgrade.database.DbTarget` on the estate's server."""
    from managed_upgrade.database import DbTarget

    def make(dbname: str) -> Any:
        connection = estate.db_connection(dbname)
        return DbTarget(connection["host"], int(connection["port"]), connection["login"], dbname)

    return make
