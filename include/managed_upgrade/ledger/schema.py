"""Creates and migrates the ledger schema, safely from several processes at once."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol, Self, TypeAlias, TypeVar

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

DEFAULT_SCHEMA = "managed_upgrade"
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same for every migrating process.
_ADVISORY_LOCK_KEY = 0x4D555047  # "MUPG"

Row_co = TypeVar("Row_co", covariant=True)
Query: TypeAlias = "str | sql.Composable"
"""SQL text, or SQL composed with :mod:`psycopg2.sql` (identifiers quoted by the driver)."""
Params: TypeAlias = Sequence[Any] | Mapping[str, Any]
"""Query parameters: positional for ``%s``, by name for ``%(name)s``; any value the driver adapts."""


class DbCursor(Protocol[Row_co]):
    """The part of a psycopg2 cursor the ledger uses; ``Row_co`` is what a fetch returns (a tuple of
    the plain cursor, a dict of ``RealDictCursor``)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, query: Query, vars: Params | None = None, /) -> object: ...

    def fetchone(self) -> Row_co | None: ...

    def fetchall(self) -> Sequence[Row_co]: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> object: ...


class DbConnection(Protocol):
    """The part of a psycopg2 connection the ledger uses; as a context manager, one transaction
    (committed on success, rolled back on an error)."""

    def cursor(self, *, cursor_factory: type[Any] | None = None) -> DbCursor[Any]: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> object: ...


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file of ``migrations/``."""

    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("managed_upgrade.ledger").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"ledger migrations must be numbered 0001.. without gaps, found {versions}")
    return found


def _applied_versions(cursor: DbCursor[tuple[Any, ...]], schema: str) -> set[int]:
    cursor.execute(
        "SELECT 1 FROM information_schema.tables"
        " WHERE table_schema = %s AND table_name = 'schema_migrations'",
        (schema,),
    )
    if cursor.fetchone() is None:
        return set()
    cursor.execute(sql.SQL("SELECT version FROM {}.schema_migrations").format(sql.Identifier(schema)))
    return {row[0] for row in cursor.fetchall()}


def pending_migrations(connection: DbConnection, schema: str = DEFAULT_SCHEMA) -> list[Migration]:
    """Migrations not yet applied to ``schema``."""
    with connection.cursor() as cursor:
        applied = _applied_versions(cursor, schema)
    return [m for m in available_migrations() if m.version not in applied]


def migrate(connection: DbConnection, schema: str = DEFAULT_SCHEMA) -> list[Migration]:
    """Apply pending migrations in one transaction each; returns what was applied.

    An advisory lock serialises concurrent callers (several workers starting at once), and each
    migration runs with ``search_path`` set to the ledger schema so the SQL files stay schema-free.
    """
    applied_now: list[Migration] = []
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
        cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        cursor.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(sql.Identifier(schema))
        )
        applied = _applied_versions(cursor, schema)
        cursor.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        for migration in available_migrations():
            if migration.version in applied:
                continue
            cursor.execute(migration.sql)
            cursor.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied_now.append(migration)
    return applied_now


def ensure_database(dsn: str, maintenance_db: str = "postgres") -> bool:
    """Create the database ``dsn`` names unless it exists; True if it was created.

    Connects to ``maintenance_db`` on the same server with the same credentials, because a database
    cannot be created from a connection to itself.
    """
    name = parse_dsn(dsn).get("dbname")
    if not name:
        raise ValueError(f"the ledger DSN names no database (dbname=...): {dsn!r}")
    admin = psycopg2.connect(make_dsn(dsn, dbname=maintenance_db))
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone():
                return False
            try:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg2.errors.DuplicateDatabase:
                return False  # created by a concurrent caller in between
            return True
    finally:
        admin.close()
