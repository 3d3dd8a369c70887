"""The PostgreSQL server that holds the estate's config databases (one per customer environment).

Uses the machine's server on 127.0.0.1:5432 when it answers (``ESTATE_PG_HOST``/``PORT``/``USER``
override), otherwise starts a private trust-auth cluster under ``<root>/pg`` on a loopback port.
Every database the estate creates carries a comment naming the estate root, so ``down --purge``
drops exactly the estate's databases and nothing else.

Customer test queries run as a read-only role of the estate's own (:func:`reader_role`, one per estate
root, since roles are server-wide): a login with SELECT on the config databases' tables and nothing
else, ``default_transaction_read_only``, a statement timeout and no file, network (dblink) or admin
functions (:meth:`PgServer.ensure_reader_role`, :meth:`PgServer.grant_reader`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from crm_estate.layout import LOOPBACK, EstateLayout
from crm_estate.state import PgState

DB_NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
CLUSTER_OWNER = "postgres"  # initdb refuses to run as root; the cluster then belongs to this user


class DatabaseError(RuntimeError):
    """The config database server could not be reached, started or used."""


def check_db_name(name: str) -> str:
    if not DB_NAME_PATTERN.match(name):
        raise ValueError(f"database name {name!r} must match {DB_NAME_PATTERN.pattern}")
    return name


@dataclass(frozen=True)
class PgServer:
    """How to reach the config-DB server, plus the operations the estate needs on it."""

    host: str
    port: int
    user: str

    def dsn(self, dbname: str) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={check_db_name(dbname)}"

    def connect(self, dbname: str = "postgres", timeout: int = 5) -> PgConnection:
        return psycopg2.connect(self.dsn(dbname), connect_timeout=timeout)

    def reachable(self) -> bool:
        try:
            self.connect(timeout=3).close()
        except psycopg2.OperationalError:
            return False
        return True

    def _admin(self) -> PgConnection:
        conn = self.connect()
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
        return conn

    def create_database(self, name: str, owner_tag: str) -> None:
        """(Re)create ``name`` empty and tag it as belonging to this estate."""
        check_db_name(name)
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                cur.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS %s").format(sql.Identifier(name)), (owner_tag,)
                )
        finally:
            conn.close()

    def drop_database(self, name: str) -> None:
        check_db_name(name)
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        finally:
            conn.close()

    def database_exists(self, name: str) -> bool:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                return cur.fetchone() is not None
        finally:
            conn.close()

    def ensure_reader_role(self, role: str) -> None:
        """Create ``role`` if missing and (re)apply its attributes and settings (:data:`READER_SETTINGS`)."""
        check_db_name(role)
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                if cur.fetchone() is None:
                    # another estate process may create it at the same moment
                    with contextlib.suppress(psycopg2.errors.DuplicateObject):
                        cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
                for statement in _reader_role_sql(role):
                    cur.execute(statement)
        finally:
            conn.close()

    def role_exists(self, role: str) -> bool:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                return cur.fetchone() is not None
        finally:
            conn.close()

    def grant_reader(self, db_name: str, role: str) -> None:
        """Let ``role`` read ``db_name``'s tables and nothing more (CONNECT, USAGE on public, SELECT).

        PUBLIC loses its default CONNECT and TEMP on the database and EXECUTE on the functions of
        schema ``public`` (where extensions such as dblink land), now and for objects the estate's
        user creates later; tables the installer adds later are readable through default privileges.
        """
        check_db_name(db_name)
        check_db_name(role)
        database, reader, owner = sql.Identifier(db_name), sql.Identifier(role), sql.Identifier(self.user)
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
                cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, reader))
        finally:
            conn.close()
        conn = self.connect(db_name)
        try:
            with conn, conn.cursor() as cur:
                for statement in (
                    "REVOKE ALL ON SCHEMA public FROM PUBLIC",
                    "GRANT USAGE ON SCHEMA public TO {reader}",
                    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}",
                    "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC",
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
                    " GRANT SELECT ON TABLES TO {reader}",
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
                ):
                    cur.execute(sql.SQL(statement).format(reader=reader, owner=owner))
        finally:
            conn.close()

    def drop_role(self, role: str) -> bool:
        """Drop ``role`` if it exists and nothing depends on it any more; False if it is still in use."""
        check_db_name(role)
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        except psycopg2.errors.DependentObjectsStillReferenced:
            return False
        finally:
            conn.close()
        return True

    def tagged_databases(self, owner_tag: str) -> list[str]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT datname FROM pg_database "
                    "WHERE shobj_description(oid, 'pg_database') = %s ORDER BY datname",
                    (owner_tag,),
                )
                return [row[0] for row in cur.fetchall()]
        finally:
            conn.close()


READER_SETTINGS: dict[str, str] = {
    "default_transaction_read_only": "on",
    "statement_timeout": "30s",
    "lock_timeout": "2s",
    "idle_in_transaction_session_timeout": "60s",
    "temp_file_limit": "64MB",
    "work_mem": "16MB",
    "search_path": "pg_catalog, public",
}
"""Session defaults of the read-only role (the test-case executor sets tighter ones per query)."""

READER_CONNECTION_LIMIT = 20

PREDEFINED_POWER_ROLES = (
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_signal_backend",
    "pg_read_all_data",
    "pg_write_all_data",
    "pg_monitor",
    "pg_read_all_settings",
)
"""Built-in roles that would let the reader read files, run programs, signal sessions or read other
databases; it must be a member of none (revoked explicitly, in case someone granted one)."""


def reader_role(layout: EstateLayout) -> str:
    """The read-only role of the estate at ``layout`` (roles are per server: one name per estate root)."""
    digest = hashlib.sha256(str(layout.root).encode()).hexdigest()[:10]
    return f"crm_tc_reader_{digest}"


def _reader_role_sql(role: str) -> list[sql.Composable]:
    """Statements that make ``role`` exactly the read-only test login (idempotent after CREATE)."""
    name = sql.Identifier(role)
    statements: list[sql.Composable] = [
        sql.SQL(
            "ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS "
            "CONNECTION LIMIT {}"
        ).format(name, sql.Literal(READER_CONNECTION_LIMIT)),
    ]
    statements += [
        sql.SQL("ALTER ROLE {} SET {} = {}").format(name, sql.Identifier(key), sql.Literal(value))
        for key, value in READER_SETTINGS.items()
        if key != "search_path"
    ]
    statements.append(sql.SQL("ALTER ROLE {} SET search_path = pg_catalog, public").format(name))
    statements += [
        sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(power), name) for power in PREDEFINED_POWER_ROLES
    ]
    return statements


def owner_tag(layout: EstateLayout) -> str:
    return f"crm-estate config DB (root {layout.root})"


def server_from_state(state: PgState) -> PgServer:
    return PgServer(state.host, state.port, state.user)


def external_server_from_env() -> PgServer:
    host = os.environ.get("ESTATE_PG_HOST", LOOPBACK)
    if host not in LOOPBACK_NAMES:
        raise DatabaseError(f"ESTATE_PG_HOST={host!r}: the estate only uses loopback addresses")
    raw_port = os.environ.get("ESTATE_PG_PORT", "5432")
    if not raw_port.isdigit():
        raise DatabaseError(f"ESTATE_PG_PORT must be a port number, got {raw_port!r}")
    return PgServer(host, int(raw_port), os.environ.get("ESTATE_PG_USER", "postgres"))


# ------------------------------------------------------------------------------ private cluster


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted((str(p) for p in Path("/usr/lib/postgresql").glob(f"*/bin/{name}")), reverse=True)
    if candidates:
        return candidates[0]
    raise DatabaseError(
        f"no PostgreSQL server reachable and {name} not found (PATH, /usr/lib/postgresql/*/bin); "
        f"install postgresql or point ESTATE_PG_HOST/ESTATE_PG_PORT at a running server"
    )


def _cluster_owner() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(CLUSTER_OWNER)
    except KeyError:
        raise DatabaseError(
            f"running as root needs a '{CLUSTER_OWNER}' user to own the private cluster"
        ) from None


def _as_cluster_owner(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    _cluster_owner()
    return ["runuser", "-u", CLUSTER_OWNER, "--", *argv]


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DatabaseError(
            f"{what} failed (exit {result.returncode}): {result.stderr.strip() or result.stdout}"
        )


def private_data_dir(layout: EstateLayout) -> Path:
    return layout.pg_dir / "data"


def start_private_cluster(layout: EstateLayout, port: int, user: str = "postgres") -> PgState:
    """initdb (once) and start a loopback-only, trust-auth cluster under ``<root>/pg``."""
    data_dir = private_data_dir(layout)
    socket_dir = layout.pg_dir / "run"
    layout.pg_dir.mkdir(parents=True, exist_ok=True)
    socket_dir.mkdir(exist_ok=True)
    layout.log_dir.mkdir(parents=True, exist_ok=True)
    pg_log = layout.log_dir / "postgres.log"
    pg_log.touch()
    if os.geteuid() == 0:
        owner = _cluster_owner()
        for path in (layout.pg_dir, socket_dir, pg_log):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    if not (data_dir / "PG_VERSION").exists():
        initdb = [_pg_tool("initdb"), "-D", str(data_dir), "-U", user, "--auth=trust", "-E", "UTF8"]
        _run(
            _as_cluster_owner([*initdb, "--no-instructions"]),
            f"initdb of the private cluster (as root it runs as '{CLUSTER_OWNER}', which must be able to "
            f"enter {layout.pg_dir})",
        )
        with (data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\n# crm-estate private cluster\nlisten_addresses = '{LOOPBACK}'\nport = {port}\n"
                f"unix_socket_directories = '{socket_dir}'\nmax_connections = 200\nfsync = off\n"
            )
    server = PgServer(LOOPBACK, port, user)
    if not server.reachable():
        _run(
            _as_cluster_owner(
                [_pg_tool("pg_ctl"), "-D", str(data_dir), "-l", str(pg_log), "-w", "-t", "60", "start"]
            ),
            f"starting the private cluster on port {port}",
        )
    if not server.reachable():
        raise DatabaseError(f"private cluster started but {LOOPBACK}:{port} does not answer; see {pg_log}")
    return PgState(mode="private", host=LOOPBACK, port=port, user=user, data_dir=str(data_dir))


def stop_private_cluster(state: PgState) -> bool:
    if state.mode != "private" or not state.data_dir:
        return False
    data_dir = Path(state.data_dir)
    if not (data_dir / "postmaster.pid").exists():
        return False
    _run(
        _as_cluster_owner([_pg_tool("pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"]),
        "stopping the private cluster",
    )
    return True


def resolve_server(layout: EstateLayout, private_port: int) -> PgState:
    """The external server when it answers, else a private cluster (started if needed)."""
    external = external_server_from_env()
    if external.reachable():
        return PgState(mode="external", host=external.host, port=external.port, user=external.user)
    return start_private_cluster(layout, private_port)
