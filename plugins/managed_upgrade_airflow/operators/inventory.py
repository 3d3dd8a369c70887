"""The "Inventory the Development Environment" task: read-only facts for the consultant's analysis.

It reads the installation over SSH (files through SFTP; ``du``, ``df`` and ``bin/crm status`` as argv
lists, never shell strings) and the config database in a READ ONLY transaction, so analysing a
customer's system can never change it. Both come from the environment's connections through
:class:`CrmEnvironmentHook` (pinned host keys enforced). Parsing and rendering live in
:mod:`managed_upgrade.operations.inventory`.
"""

from __future__ import annotations

import posixpath
import stat
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from managed_upgrade.config import CustomerConfig
from managed_upgrade.operations.inventory import DatabaseFacts, HostFacts, build_inventory, render_markdown
from managed_upgrade.transport.remote import RemoteHost
from managed_upgrade_airflow.hooks.crm_environment import CrmEnvironmentHook

if TYPE_CHECKING:
    from airflow.sdk import Context

CRM_STATUS_TIMEOUT = 120.0
"""Seconds ``bin/crm status`` may stay silent before the inventory gives up on it."""
STATEMENT_TIMEOUT_MS = 60_000
"""Per query in the config DB; exact row counts of a huge table must not hang the task."""


def _read_optional(host: RemoteHost, path: str) -> str | None:
    attrs = host.stat(path)
    if attrs is None or not stat.S_ISREG(attrs.st_mode or 0):
        return None
    return host.read_text(path)


def _files_in(host: RemoteHost, directory: str) -> list[str]:
    return host.listdir(directory) if host.is_dir(directory) else []


def collect_host_facts(host: RemoteHost, install_path: str) -> HostFacts:
    """Everything the inventory needs from the host; nothing is written there."""
    modules_dir = posixpath.join(install_path, "modules")
    modules = {}
    for name in _files_in(host, modules_dir):
        text = _read_optional(host, posixpath.join(modules_dir, name, "module.yaml"))
        if text is not None:
            modules[name] = text
    settings_dir = posixpath.join(install_path, "settings")
    settings = {
        name: host.read_text(posixpath.join(settings_dir, name))
        for name in _files_in(host, settings_dir)
        if name.endswith(".properties")
    }
    status = host.run(
        [posixpath.join(install_path, "bin", "crm"), "status"], check=False, timeout=CRM_STATUS_TIMEOUT
    )
    return HostFacts(
        version_file=_read_optional(host, posixpath.join(install_path, "VERSION")),
        module_descriptors=modules,
        settings_files=settings,
        du_output=host.run(["du", "-sk", "--", install_path]).text,
        df_output=host.run(["df", "-Pk", "--", install_path]).text,
        crm_status_exit_code=status.exit_code,
        crm_status_output=status.text,
    )


# Exact row counts in one round trip; format('%I') quotes the identifiers inside the server.
_TABLE_ROWS_SQL = """
SELECT table_schema || '.' || table_name,
       (xpath('/row/c/text()', query_to_xml(
           format('SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, ''))
       )[1]::text::bigint
FROM information_schema.tables
WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')
ORDER BY table_schema, table_name
"""


def collect_database_facts(connection: Any) -> DatabaseFacts:
    """Schema version, size and exact row counts, in a READ ONLY transaction that is rolled back.

    Plain SQL without client-side composition, so it runs on a psycopg2 or a psycopg 3 connection.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
            cursor.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS:d}")
            cursor.execute("SELECT current_setting('server_version'), pg_database_size(current_database())")
            server_version, size_bytes = cursor.fetchone()
            cursor.execute("SELECT to_regclass('crm_schema_version') IS NOT NULL")
            versions: tuple[str, ...] = ()
            if cursor.fetchone()[0]:
                cursor.execute("SELECT version FROM crm_schema_version ORDER BY 1")
                versions = tuple(str(row[0]) for row in cursor.fetchall())
            cursor.execute(_TABLE_ROWS_SQL)
            rows = {str(name): int(count) for name, count in cursor.fetchall()}
    finally:
        connection.rollback()
    return DatabaseFacts(
        schema_versions=versions,
        table_rows=rows,
        server_version=str(server_version),
        size_bytes=int(size_bytes),
    )


class InventoryDevSystemOperator(BaseOperator):
    """Collect the inventory of one environment (the Dev system by default).

    XCom: ``{"inventory": <dict of managed_upgrade.operations.inventory.build_inventory>, "markdown": str}``.
    """

    ui_color = "#e6f4ea"

    def __init__(self, *, config: CustomerConfig, environment: str = "dev", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        config.environment(environment)  # unknown names fail at parse time, not weeks later
        self.config = config
        self.environment = environment

    def execute(self, context: Context) -> dict[str, Any]:
        env = self.config.environment(self.environment)
        label = f"{self.config.customer_id}/{self.environment} ({env.ssh_conn_id})"
        with CrmEnvironmentHook(env.ssh_conn_id, env.db_conn_id, label) as hook:
            host_facts = collect_host_facts(hook.get_conn(), env.install_path)
            connection = hook.db_target().connect()
        try:
            database_facts = collect_database_facts(connection)
        finally:
            connection.close()
        inventory = build_inventory(
            host_facts,
            database_facts,
            environment=self.environment,
            install_path=env.install_path,
            expected_version=self.config.versions.current,
            collected_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        for finding in inventory["findings"]:
            self.log.warning("Inventory finding on %s: %s", label, finding)
        return {"inventory": inventory, "markdown": render_markdown(inventory)}
