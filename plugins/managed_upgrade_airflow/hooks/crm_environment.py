"""Turns an environment's two Airflow connections (SSH host, config DB) into a RemoteHost and a DbTarget.

The SSH side is the SSH provider's ``SSHHook`` (paramiko), so connection extras mean what the
provider documents: ``key_file`` / ``private_key`` authenticate, ``host_key`` pins the host key
(paramiko's ``RejectPolicy`` refuses any other key; without a pin the system known_hosts must
know the host). A connection that asks to skip host-key checks is refused here. Compression is
turned off: the bulk data we move (release payloads, archives, dumps) is already compressed.
The DB side is read from the postgres connection into a :class:`DbTarget` (psycopg2 and the
``pg_dump``/``pg_restore`` binaries; the connection's ``schema`` names the database).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from managed_upgrade.transport.database import DbTarget
from managed_upgrade.transport.remote import RemoteHost, SshEndpoint

if TYPE_CHECKING:
    from airflow.providers.ssh.hooks.ssh import SSHHook


class HostKeyCheckRequiredError(ValueError):
    """The SSH connection disables host-key verification; the operations refuse to use it."""


class CrmEnvironmentHook(BaseHook):
    """One CRM environment: its host over SSH and its configuration database.

    :param ssh_conn_id: Airflow SSH connection of the environment's host
    :param db_conn_id: Airflow postgres connection of its configuration database (optional for
        operations that only touch the host)
    :param label: how the host is named in logs and error messages (default: the connection id)
    """

    conn_name_attr = "ssh_conn_id"
    hook_name = "CRM environment"

    def __init__(self, ssh_conn_id: str, db_conn_id: str | None = None, label: str | None = None) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.db_conn_id = db_conn_id
        self.label = label or ssh_conn_id
        self._remote: RemoteHost | None = None

    @cached_property
    def ssh_hook(self) -> SSHHook:
        from airflow.providers.ssh.hooks.ssh import SSHHook

        hook = SSHHook(ssh_conn_id=self.ssh_conn_id, cmd_timeout=None, keepalive_interval=30)
        if hook.no_host_key_check:
            raise HostKeyCheckRequiredError(
                f"connection {self.ssh_conn_id} disables host key checking (no_host_key_check); "
                "pin the host's key in its host_key extra or add it to known_hosts"
            )
        hook.compress = False
        return hook

    def endpoint(self) -> SshEndpoint:
        """The connection as plain data (what the OpenSSH transport needs besides the paramiko client)."""
        hook = self.ssh_hook
        extras = self.get_connection(self.ssh_conn_id).extra_dejson
        host_key = extras.get("host_key")
        return SshEndpoint(
            host=hook.remote_host,
            port=int(hook.port or 22),
            username=hook.username or "root",
            key_file=hook.key_file,
            private_key=extras.get("private_key"),
            password=hook.password,
            host_key=host_key.strip() if host_key else None,
        )

    def get_conn(self) -> RemoteHost:
        """The connected host (one connection per hook; closed by :meth:`close`)."""
        if self._remote is None:
            client = self.ssh_hook.get_conn()
            self._remote = RemoteHost(client, self.label, self.endpoint())
        return self._remote

    def db_target(self) -> DbTarget:
        """The configuration database of the environment."""
        if not self.db_conn_id:
            raise ValueError(f"{self.label}: no db_conn_id given; this operation needs the config database")
        connection = self.get_connection(self.db_conn_id)
        extras: dict[str, Any] = connection.extra_dejson
        if not connection.host or not connection.schema:
            raise ValueError(
                f"connection {self.db_conn_id} must give host and schema (the database name), "
                f"got host={connection.host!r} schema={connection.schema!r}"
            )
        return DbTarget(
            host=connection.host,
            port=int(connection.port or 5432),
            user=connection.login or "postgres",
            password=connection.password or None,
            dbname=connection.schema,
            options={"sslmode": str(extras["sslmode"])} if "sslmode" in extras else {},
        )

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()
            self._remote = None

    def __enter__(self) -> CrmEnvironmentHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
