"""Opens the project's ledger from an Airflow connection, so tasks never hold a DSN of their own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from managed_upgrade.ledger import Ledger

LEDGER_CONN_ID = "managed_upgrade_ledger"
"""Airflow connection (postgres) of the ledger database; set it as ``AIRFLOW_CONN_MANAGED_UPGRADE_LEDGER``."""


@contextmanager
def open_ledger(conn_id: str = LEDGER_CONN_ID) -> Iterator[Ledger]:
    """A :class:`Ledger` on a fresh connection, closed afterwards."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    connection = PostgresHook(postgres_conn_id=conn_id).get_conn()
    try:
        yield Ledger(connection)
    finally:
        connection.close()
