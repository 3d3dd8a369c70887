"""Airflow's metadata database of a local instance: a SQLite file, or a PostgreSQL database.

SQLite needs nothing and suits the demo: one run, one person. Several upgrades at once (the
end-to-end scenarios) make the scheduler, the api-server and a dozen task processes write
together; SQLite then locks for longer than Airflow waits, and an unguarded write in the
scheduler loop ends the scheduler. PostgreSQL, which every deployment uses, does not lock that
way. Either is migrated once per Airflow version and copied for each fresh instance (a
migration takes 9-12 s, a copy well under one).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any

from airflow_local.settings import HarnessSettings

# Prefix of the PostgreSQL databases migrated once per Airflow version and copied for new instances.
TEMPLATE_PREFIX = "airflow_local_template_"


class MetadataDatabaseError(RuntimeError):
    """The metadata database could not be created or migrated."""


def sqlalchemy_url(settings: HarnessSettings, driver: str = "postgresql+psycopg2") -> str:
    """`[database] sql_alchemy_conn` of the instance (`driver`: the URL's scheme for PostgreSQL)."""
    if settings.metadata_dsn is None:
        return f"sqlite:///{settings.database_file}"
    from psycopg2.extensions import parse_dsn
    from sqlalchemy.engine import URL

    parts = parse_dsn(settings.metadata_dsn)
    return URL.create(
        driver,
        username=parts.get("user"),
        password=parts.get("password"),
        host=parts.get("host", "127.0.0.1"),
        port=int(parts.get("port", 5432)),
        database=parts["dbname"],
    ).render_as_string(hide_password=False)


def prepare(
    settings: HarnessSettings, migrate: Callable[[], None], template_prefix: str = TEMPLATE_PREFIX
) -> None:
    """Give the instance a migrated metadata database; `migrate` runs `airflow db migrate` on it.

    Done once per home and Airflow version: the stamp file in the home says it was. PostgreSQL
    templates are the databases named `template_prefix` + the Airflow version.
    """
    stamp = settings.home / ".migrated"
    # FAB keeps its own tables (users, roles) in the metadata database: a template of its own.
    airflow_version = version("apache-airflow") + ("-fab" if settings.fab else "")
    if stamp.exists() and stamp.read_text().strip() == airflow_version and _exists(settings):
        return
    if settings.metadata_dsn is None:
        _prepare_sqlite(settings, airflow_version, migrate)
    else:
        template = template_prefix + "".join(c if c.isalnum() else "_" for c in airflow_version)
        _prepare_postgres(settings.metadata_dsn, template, migrate)
    stamp.write_text(airflow_version + "\n")


def drop_database(dsn: str) -> None:
    """Remove the PostgreSQL database `dsn` names (a throwaway instance's), connections and all."""
    from psycopg2 import sql

    name = _database_name(dsn)
    with _admin(dsn) as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _exists(settings: HarnessSettings) -> bool:
    if settings.metadata_dsn is None:
        return settings.database_file.exists()
    name = _database_name(settings.metadata_dsn)
    with _admin(settings.metadata_dsn) as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cursor.fetchone() is not None


def _prepare_sqlite(settings: HarnessSettings, airflow_version: str, migrate: Callable[[], None]) -> None:
    """Copy the kept migrated file if there is one, else migrate and keep the result for the next home."""
    template = None
    if settings.database_template_dir is not None:
        template = settings.database_template_dir / f"airflow-{airflow_version}-migrated.db"
    if template is not None and template.exists() and not settings.database_file.exists():
        shutil.copyfile(template, settings.database_file)
        return
    migrate()
    complete = not settings.database_file.with_name(settings.database_file.name + "-wal").exists()
    if template is not None and not template.exists() and complete:
        template.parent.mkdir(parents=True, exist_ok=True)
        partial = template.with_name(f"{template.name}.{os.getpid()}.partial")
        shutil.copyfile(settings.database_file, partial)
        partial.replace(template)  # atomic: concurrent sessions never see half a file


def _prepare_postgres(dsn: str, template: str, migrate: Callable[[], None]) -> None:
    """Create the database from the version's template (migrating one first if there is none).

    A database that already exists (one the user provides) is migrated in place.
    """
    from psycopg2 import errors

    name = _database_name(dsn)
    with _admin(dsn) as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname IN (%s, %s)", (name, template))
        present = {row[0] for row in cursor.fetchall()}
    if name in present:
        migrate()
    elif template not in present:
        _migrate_into_template(dsn, template, migrate)
    else:
        with _admin(dsn) as cursor:
            try:
                _create_database(cursor, name, template)
            except errors.DuplicateDatabase:
                migrate()  # created by a concurrent caller in between: make sure it is migrated


def _migrate_into_template(dsn: str, template: str, migrate: Callable[[], None]) -> None:
    """Migrate the instance's new database, then keep a copy of it as the version's template."""
    from psycopg2 import errors, sql

    name = _database_name(dsn)
    with _admin(dsn) as cursor:
        _create_database(cursor, name)
    migrate()
    partial = f"{template}_{os.getpid()}"
    with _admin(dsn) as cursor:
        _create_database(cursor, partial, name)
        try:
            # A rename is atomic: a concurrent session sees a whole template or none.
            cursor.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(*map(sql.Identifier, (partial, template)))
            )
        except errors.DuplicateDatabase:
            cursor.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(partial)))


def _create_database(cursor: Any, name: str, template: str | None = None) -> None:
    from psycopg2 import sql

    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    cursor.execute(statement)


def _database_name(dsn: str) -> str:
    from psycopg2.extensions import parse_dsn

    name = parse_dsn(dsn).get("dbname")
    if not name:
        raise MetadataDatabaseError(f"the metadata database DSN names no database (dbname=...): {dsn!r}")
    return name


@contextmanager
def _admin(dsn: str) -> Iterator[Any]:
    """An autocommit cursor on the server's maintenance database (CREATE/DROP DATABASE need one)."""
    import psycopg2
    from psycopg2.extensions import make_dsn

    try:
        connection = psycopg2.connect(make_dsn(dsn, dbname="postgres"))
    except psycopg2.Error as error:
        raise MetadataDatabaseError(f"PostgreSQL of the metadata database {dsn!r}: {error}") from error
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()
