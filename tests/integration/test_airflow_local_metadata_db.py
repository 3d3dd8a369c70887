"""The local Airflow's metadata database on the real PostgreSQL: migrated once, copied after.

`airflow db migrate` is played by a stand-in that leaves a marker table, so a copy made from the
template is recognisable and the number of migrations can be counted.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from airflow_local import metadata_db
from airflow_local.environment import airflow_settings
from airflow_local.settings import HarnessOverrides, HarnessSettings

SERVER = "host=127.0.0.1 port=5432 user=postgres"


@pytest.fixture
def names() -> Iterator[dict[str, str]]:
    """Unique database names for two instances and the template prefix; every one dropped after."""
    token = uuid.uuid4().hex[:8]
    found = {"first": f"af_meta_a_{token}", "second": f"af_meta_b_{token}", "prefix": f"af_tpl_{token}_"}
    yield found
    leftovers = _admin("SELECT datname FROM pg_database WHERE position(%s in datname) > 0", token)
    for (name,) in leftovers:
        metadata_db.drop_database(f"{SERVER} dbname={name}")


def _admin(statement: str, *arguments: object) -> list[tuple]:
    admin = psycopg2.connect(f"{SERVER} dbname=postgres")
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(statement, arguments)
            return cursor.fetchall() if cursor.description else []
    finally:
        admin.close()


def _settings(tmp_path: Path, database: str | None) -> HarnessSettings:
    dags = tmp_path / "dags"
    dags.mkdir(exist_ok=True)
    home = tmp_path / (database or "sqlite")
    home.mkdir()
    environ = {"AIRFLOW_LOCAL_HOME": str(home), "AIRFLOW_LOCAL_DAGS": str(dags)}
    if database is not None:
        environ["AIRFLOW_LOCAL_METADATA_DSN"] = f"{SERVER} dbname={database}"
    return HarnessSettings.from_environment(HarnessOverrides(), environ)


class StandInMigration:
    """Counts migrations and leaves a marker table in the database it migrates."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.runs = 0

    def __call__(self) -> None:
        self.runs += 1
        with psycopg2.connect(self.dsn) as connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE IF NOT EXISTS migrated_marker (n int)")
            cursor.execute("INSERT INTO migrated_marker VALUES (%s)", (self.runs,))
        connection.close()


def _markers(dsn: str) -> list[int]:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT n FROM migrated_marker ORDER BY n")
        rows = [row[0] for row in cursor.fetchall()]
    connection.close()
    return rows


def test_components_are_pointed_at_the_postgresql_database_or_the_sqlite_file(tmp_path):
    postgres = _settings(tmp_path, "af_meta_url_check")
    url = airflow_settings(postgres, {"ops": "admin"})["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert url == "postgresql+psycopg2://postgres@127.0.0.1:5432/af_meta_url_check"
    sqlite = _settings(tmp_path, None)
    assert metadata_db.sqlalchemy_url(sqlite) == f"sqlite:///{sqlite.home / 'airflow.db'}"


def test_the_first_instance_migrates_and_later_ones_are_copies_of_its_template(tmp_path, names):
    first = _settings(tmp_path, names["first"])
    migrate_first = StandInMigration(first.metadata_dsn)
    metadata_db.prepare(first, migrate_first, template_prefix=names["prefix"])
    assert migrate_first.runs == 1

    second = _settings(tmp_path, names["second"])
    migrate_second = StandInMigration(second.metadata_dsn)
    metadata_db.prepare(second, migrate_second, template_prefix=names["prefix"])
    assert migrate_second.runs == 0, "a database copied from the template needs no migration"
    assert _markers(second.metadata_dsn) == [1]

    # A restart of the same home finds its database migrated and does nothing.
    metadata_db.prepare(second, migrate_second, template_prefix=names["prefix"])
    assert migrate_second.runs == 0


def test_a_database_that_already_exists_is_migrated_in_place(tmp_path, names):
    _admin(f'CREATE DATABASE "{names["first"]}"')
    settings = _settings(tmp_path, names["first"])
    migrate = StandInMigration(settings.metadata_dsn)
    metadata_db.prepare(settings, migrate, template_prefix=names["prefix"])
    assert migrate.runs == 1
    assert _markers(settings.metadata_dsn) == [1]


def test_a_database_dropped_behind_the_homes_back_is_made_again(tmp_path, names):
    settings = _settings(tmp_path, names["first"])
    metadata_db.prepare(settings, StandInMigration(settings.metadata_dsn), template_prefix=names["prefix"])
    metadata_db.drop_database(settings.metadata_dsn)
    again = StandInMigration(settings.metadata_dsn)
    metadata_db.prepare(settings, again, template_prefix=names["prefix"])
    assert again.runs == 0
    assert _markers(settings.metadata_dsn) == [1]


def test_an_unreachable_server_is_named_in_the_error(tmp_path):
    settings = dataclasses.replace(
        _settings(tmp_path, "x"), metadata_dsn="host=127.0.0.1 port=1 user=postgres dbname=af_nowhere"
    )
    with pytest.raises(metadata_db.MetadataDatabaseError, match="port=1"):
        metadata_db.prepare(settings, lambda: None)
