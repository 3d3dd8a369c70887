"""An environment's configuration database: dump, verify and restore it with PostgreSQL's own tools.

``pg_dump``/``pg_restore`` run on the worker against the Airflow connection's database (the worker is
where that connection is defined to be reachable); connection values reach them only through
``PG*`` environment variables, never a command line or a conninfo string, and SQL names go through
:mod:`psycopg2.sql`. A restore is built in a sibling database and swapped in by two renames, so a
failing restore never leaves the live database half restored, and objects created after the
backup (e.g. tables an upgrade added) do not survive next to the restored ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from managed_upgrade.errors import BackupError, RestoreError
from managed_upgrade.transport.manifest import file_sha256

log = logging.getLogger(__name__)

DB_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$"
"""Database names we accept from connections: plain identifiers (they also name files and siblings)."""

_DB_NAME = re.compile(DB_NAME_PATTERN)
_ACL_ITEM = re.compile(r"^(?P<grantee>[^=]*)=(?P<privileges>[A-Za-z*]*)/(?P<grantor>.+)$")
_DATABASE_PRIVILEGES = {"C": "CREATE", "T": "TEMPORARY", "c": "CONNECT"}


def require_db_name(name: str) -> str:
    """Return ``name`` if it is an acceptable database name, else raise ``ValueError`` naming it."""
    if not isinstance(name, str) or not _DB_NAME.fullmatch(name):
        raise ValueError(f"database name {name!r} is not allowed (must match {DB_NAME_PATTERN})")
    return name


@dataclass(frozen=True)
class DbTarget:
    """Where a configuration database lives and how to log in (from an Airflow postgres connection)."""

    host: str
    port: int
    user: str
    dbname: str
    password: str | None = field(default=None, repr=False)
    options: dict[str, str] = field(default_factory=dict)  # e.g. sslmode

    def __post_init__(self) -> None:
        require_db_name(self.dbname)

    def tool_env(self, dbname: str | None = None) -> dict[str, str]:
        """Environment for ``pg_dump``/``pg_restore``/``psql``: every value as a plain ``PG*`` variable."""
        env = dict(os.environ)
        for variable in ("PGSERVICE", "PGSERVICEFILE", "PGOPTIONS"):
            env.pop(variable, None)
        env.update(
            PGHOST=self.host,
            PGPORT=str(self.port),
            PGUSER=self.user,
            PGDATABASE=dbname or self.dbname,
            PGCONNECT_TIMEOUT="15",
        )
        if self.password:
            env["PGPASSWORD"] = self.password
        if "sslmode" in self.options:
            env["PGSSLMODE"] = self.options["sslmode"]
        return env

    def connect(self, dbname: str | None = None) -> Any:
        """A psycopg2 connection (keyword arguments: values are quoted by libpq, never parsed as DSN)."""
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname or self.dbname,
            connect_timeout=15,
            **{key: value for key, value in self.options.items() if key == "sslmode"},
        )

    @contextmanager
    def admin(self) -> Iterator[Any]:
        """Autocommit connection to the maintenance DB (CREATE/ALTER/DROP DATABASE need one)."""
        connection = self.connect("postgres")
        connection.autocommit = True
        try:
            yield connection
        finally:
            connection.close()


@dataclass(frozen=True)
class DumpInfo:
    """A verified ``pg_dump -Fc`` file."""

    path: Path
    size: int
    sha256: str
    toc_entries: int


def _run_tool(argv: list[str], env: dict[str, str], what: str, error: type[Exception]) -> str:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise error(f"{what} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


def list_dump(path: Path) -> list[str]:
    """The table of contents of a custom-format dump (``pg_restore --list``); raises if unreadable."""
    output = _run_tool(
        ["pg_restore", "--list", str(path)], dict(os.environ), f"pg_restore --list {path}", BackupError
    )
    return [line for line in output.splitlines() if line and not line.startswith(";")]


def dump_database(target: DbTarget, destination: Path) -> DumpInfo:
    """``pg_dump -Fc`` of the target database into ``destination``, verified by ``pg_restore --list``."""
    _run_tool(
        ["pg_dump", "--format=custom", "--no-password", f"--file={destination}"],
        target.tool_env(),
        f"pg_dump of database {target.dbname} on {target.host}:{target.port}",
        BackupError,
    )
    entries = list_dump(destination)
    if not entries:
        raise BackupError(f"dump of {target.dbname} at {destination} has an empty table of contents")
    return DumpInfo(destination, destination.stat().st_size, file_sha256(destination), len(entries))


def _sibling(name: str, suffix: str) -> str:
    """``name`` + ``suffix`` within PostgreSQL's 63-byte limit (shortened with a hash if needed)."""
    candidate = name + suffix
    if len(candidate) <= 63:
        return candidate
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: 63 - len(suffix) - 9]}_{digest}{suffix}"


@dataclass(frozen=True)
class _DatabaseProperties:
    owner: str
    encoding: str
    collate: str
    ctype: str
    comment: str | None
    acl: list[str] | None
    settings: list[str]


def _read_properties(cursor: Any, dbname: str) -> _DatabaseProperties:
    cursor.execute(
        "SELECT pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,"
        " shobj_description(d.oid, 'pg_database'), d.datacl::text[],"
        " (SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0)"
        " FROM pg_database d WHERE d.datname = %s",
        (dbname,),
    )
    row = cursor.fetchone()
    if row is None:
        raise RestoreError(f"database {dbname} does not exist")
    owner, encoding, collate, ctype, comment, acl, settings = row
    return _DatabaseProperties(owner, encoding, collate, ctype, comment, acl, list(settings or []))


def _apply_properties(cursor: Any, dbname: str, properties: _DatabaseProperties) -> None:
    """Give a freshly created database the comment, grants and settings of the one it replaces."""
    name = sql.Identifier(dbname)
    if properties.comment is not None:
        cursor.execute(sql.SQL("COMMENT ON DATABASE {} IS %s").format(name), (properties.comment,))
    if properties.acl is not None:
        cursor.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(name))
        for item in properties.acl:
            match = _ACL_ITEM.match(item)
            if match is None:
                continue
            privileges = [_DATABASE_PRIVILEGES[p] for p in match["privileges"] if p in _DATABASE_PRIVILEGES]
            if not privileges:
                continue
            grantee = match["grantee"].strip('"')
            grantee_sql = sql.SQL("PUBLIC") if not grantee else sql.Identifier(grantee)
            cursor.execute(
                sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
                    sql.SQL(", ").join(sql.SQL(p) for p in privileges), name, grantee_sql
                )
            )
    for setting in properties.settings:
        key, _, value = setting.partition("=")
        cursor.execute(sql.SQL("ALTER DATABASE {} SET {} = %s").format(name, sql.Identifier(key)), (value,))


def restore_database(target: DbTarget, dump: Path, restore_tag: str) -> None:
    """Replace the target database by the dump's content: restore into a sibling, then swap names.

    Until the swap the live database is untouched; a failure before it drops the sibling again.
    Needs the CREATEDB privilege (or superuser) and no other session on the target (they are ended).
    """
    live = target.dbname
    fresh = _sibling(live, f"__restore_{restore_tag}")
    retired = _sibling(live, f"__retired_{restore_tag}")
    with target.admin() as connection, connection.cursor() as cursor:
        properties = _read_properties(cursor, live)
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(fresh)))
        try:
            cursor.execute(
                sql.SQL(
                    "CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING %s LC_COLLATE %s LC_CTYPE %s"
                ).format(sql.Identifier(fresh), sql.Identifier(properties.owner)),
                (properties.encoding, properties.collate, properties.ctype),
            )
        except psycopg2.Error as exc:
            raise RestoreError(
                f"cannot create the restore database {fresh} next to {live} (the connection's user needs "
                f"CREATEDB): {str(exc).strip()}; nothing was changed"
            ) from exc
    try:
        _run_tool(
            [
                "pg_restore",
                "--exit-on-error",
                "--single-transaction",
                "--no-password",
                f"--dbname={fresh}",
                str(dump),
            ],
            target.tool_env(fresh),
            f"pg_restore of {dump} into {fresh}",
            RestoreError,
        )
    except RestoreError as exc:
        with target.admin() as connection, connection.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(fresh)))
        raise RestoreError(f"{exc}; the live database {live} was not changed") from exc
    with target.admin() as connection, connection.cursor() as cursor:
        _apply_properties(cursor, fresh, properties)
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (live,),
        )
        try:
            cursor.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(live), sql.Identifier(retired)
                )
            )
        except psycopg2.Error as exc:
            raise RestoreError(
                f"cannot swap in the restored database: renaming {live} failed ({str(exc).strip()}); "
                f"{live} is unchanged, the restored copy is database {fresh}"
            ) from exc
        try:
            cursor.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(fresh), sql.Identifier(live))
            )
        except psycopg2.Error as exc:
            cursor.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(retired), sql.Identifier(live)
                )
            )
            raise RestoreError(
                f"cannot swap in the restored database {fresh} ({str(exc).strip()}); {live} was renamed back "
                "and is unchanged"
            ) from exc
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(retired)))
    log.info("database %s restored from %s", live, dump)


def database_size(target: DbTarget) -> int:
    """Bytes the database takes on its server (``pg_database_size``): an upper bound of its dump."""
    connection = target.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_database_size(current_database())")
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


def table_contents(target: DbTarget, schema: str = "public") -> dict[str, list[tuple[Any, ...]]]:
    """Every table of ``schema`` with its rows sorted: how tests compare two databases."""
    connection = target.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = %s AND table_type = 'BASE TABLE'"
                " ORDER BY table_name",
                (schema,),
            )
            tables = [row[0] for row in cursor.fetchall()]
            contents = {}
            for table in tables:
                cursor.execute(
                    sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
                )
                contents[table] = sorted(cursor.fetchall(), key=repr)
            return contents
    finally:
        connection.close()
