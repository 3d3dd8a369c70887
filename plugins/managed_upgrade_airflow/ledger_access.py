"""Opens the project's ledger from an Airflow connection, so tasks never hold a DSN of their own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # psycopg2 loads when a task opens the ledger, not when a DAG file is parsed
    from managed_upgrade.ledger import Ledger

LEDGER_CONN_ID = "managed_upgrade_ledger"
"""Airflow connection (postgres) of the ledger database; set it as ``AIRFLOW_CONN_MANAGED_UPGRADE_LEDGER``."""

_LIBPQ_EXTRAS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "options",
    "application_name",
)


@contextmanager
def open_ledger(conn_id: str = LEDGER_CONN_ID) -> Iterator[Ledger]:
    """A :class:`Ledger` on a fresh psycopg2 connection, closed afterwards.

    Not ``PostgresHook.get_conn()``: with psycopg 3 and SQLAlchemy 2 installed (as Airflow 3.3 has
    them) the hook returns a psycopg 3 connection, and the ledger's store speaks psycopg2.
    """
    import psycopg2
    from airflow.sdk import BaseHook

    from managed_upgrade.ledger import Ledger

    airflow_conn = BaseHook.get_connection(conn_id)
    extras = {key: value for key, value in airflow_conn.extra_dejson.items() if key in _LIBPQ_EXTRAS}
    connection = psycopg2.connect(
        host=airflow_conn.host,
        port=airflow_conn.port or 5432,
        user=airflow_conn.login,
        password=airflow_conn.password,
        dbname=airflow_conn.schema,
        **{"connect_timeout": 10, **extras},
    )
    try:
        yield Ledger(connection)
    finally:
        connection.close()
