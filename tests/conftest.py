"""Fixtures shared by every test layer.

Estate fixtures (integration tests): ``estate`` (the running simulated estate, brought up if
needed), ``airflow_connections`` (its connections as AIRFLOW_CONN_* variables) and
``fresh_installation`` (an isolated installation + config DB, removed after the test),
``isolated_customer`` (a customer config pointed at fresh installations) and ``upgrade_installation``
(the estate's own installer run on one).

Operator tests: ``ledger_dsn`` (a throwaway migrated ledger DB as the ledger connection),
``smtp_sink`` (an SMTP server on 127.0.0.1 as ``smtp_default``) and ``task_context`` (a minimal
task context for ``execute``).

Time: no test reads today's date or the time of day as data. A test whose facts depend on the day
takes ``fixed_today`` and runs once per :data:`FIXED_TODAYS` case (a weekday, a Saturday, a Sunday,
the eve of a public holiday, both DST change days of the customer's zone); polling deadlines use
``time.monotonic``.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from functools import cache
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

if TYPE_CHECKING:  # imported lazily below, so unit tests never load the estate's dependencies
    from crm_estate import Estate, Installation
    from managed_upgrade.sla.calendar import BusinessCalendar

# ---------------------------------------------------------------------------------- estate


@pytest.fixture(scope="session")
def estate() -> Iterator[Estate]:
    """The simulated estate ($ESTATE_ROOT, default /tmp/crm-estate), brought up or repaired if
    needed. Stopped at the end of the session only if no server of it was running before."""
    import crm_estate

    started_here = not crm_estate.is_running()
    healthy = all(component.healthy for component in crm_estate.status())
    running = crm_estate.Estate.load() if healthy else crm_estate.up()
    running.share_with_service_user()  # run as root: what tests write on the hosts stays the login's
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


@pytest.fixture
def isolated_customer(
    fresh_installation: Callable[..., Installation], airflow_connections: AirflowConnections
) -> Callable[..., tuple[Any, dict[str, Installation]]]:
    """Factory ``isolated_customer(config, dev="10.2.0", uat=..., prod=...)``: ``config`` with each
    named environment pointed at a fresh installation of that version (its own connections), and
    the installations by environment. Unnamed environments keep the config's values."""

    def make(config: Any, **versions: str) -> tuple[Any, dict[str, Installation]]:
        installations, environments = {}, {}
        for env, version in versions.items():
            installation = fresh_installation(env, version)
            ssh_conn_id, db_conn_id = airflow_connections.add_installation(installation)
            installations[env] = installation
            test_db = {}  # the read-only test role's connection follows the config DB
            if getattr(config.environment(env), "test_db_conn_id", None):
                test_db["test_db_conn_id"] = airflow_connections.add(
                    f"{installation.db_name}_test_db",
                    airflow_connections.estate.test_db_connection(installation.db_name),
                )
            environments[env] = config.environment(env).model_copy(
                update={
                    **test_db,
                    "ssh_conn_id": ssh_conn_id,
                    "db_conn_id": db_conn_id,
                    "install_path": str(installation.install_path),
                    "staging_path": str(installation.staging_path),
                    "backup_path": str(installation.backup_path),
                    "allowed_roots": (str(airflow_connections.estate.layout.host_dir(env)),),
                }
            )
        isolated = config.model_copy(
            update={"environments": config.environments.model_copy(update=environments)}
        )
        return isolated, installations

    return make


@pytest.fixture
def upgrade_installation(estate: Estate) -> Callable[[Installation, str], None]:
    """``upgrade_installation(installation, version)``: stage the estate's release of ``version`` and
    run its vendor installer on the installation, as an upgrade does (raises if it fails)."""
    import subprocess

    def upgrade(installation: Installation, version: str) -> None:
        installer = estate.stage_release_locally(installation.staging_path / version, version)
        result = subprocess.run(
            ["python3", str(installer), "--install-path", str(installation.install_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"installer failed: {result.stdout}{result.stderr}"

    return upgrade


# ------------------------------------------------------ environment operations (remote hosts, DBs)


@pytest.fixture
def remote_host(estate: Estate) -> Iterator[Callable[..., Any]]:
    """Factory ``remote_host(env="dev")``: a connected
    :class:`managed_upgrade.transport.remote.RemoteHost` to an estate host, its host key pinned
    (RejectPolicy); closed after the test."""
    from managed_upgrade.transport.remote import RemoteHost, SshEndpoint, connect

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
    """Factory ``db_target(dbname)``: a :class:`managed_upgrade.transport.database.DbTarget` on the
    estate's server."""
    from managed_upgrade.transport.database import DbTarget

    def make(dbname: str) -> Any:
        connection = estate.db_connection(dbname)
        return DbTarget(connection["host"], int(connection["port"]), connection["login"], dbname)

    return make


# ------------------------------- operator tests: throwaway ledger, SMTP sink, minimal task context
# Operators are called the way the task runner calls them (``execute`` with a context) against a
# real ledger database and a real SMTP server on 127.0.0.1; the context holds only what our
# operators read: the task instance's ids and XCom pulls, the run's conf and start.

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
SMTP_SENDER = "platinum-services@vendor.example"
"""``from_email`` of the ``smtp_default`` connection that ``smtp_sink`` sets."""
TEST_DAG_ID = "managed_upgrade__acme"


@pytest.fixture
def ledger_dsn(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, migrated ledger database, reachable as the ledger connection; dropped afterwards."""
    import psycopg2
    from psycopg2 import sql

    from managed_upgrade.ledger import migrate

    name = f"mu_ledger_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    connection = psycopg2.connect(dsn)
    migrate(connection)
    connection.close()
    monkeypatch.setenv(
        "AIRFLOW_CONN_MANAGED_UPGRADE_LEDGER",
        json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": name}
        ),
    )
    try:
        yield dsn
    finally:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


class SmtpSink:
    """What the SMTP server received: parsed messages and each message's envelope recipients."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.recipients.append(list(envelope.rcpt_tos))
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def smtp_sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpSink]:
    """An SMTP server on 127.0.0.1 behind the connection ``smtp_default`` (sender ``SMTP_SENDER``)."""
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    connection = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "extra": {
            "disable_tls": True,
            "disable_ssl": True,
            "from_email": SMTP_SENDER,
            "timeout": 5,
            "retry_limit": 0,
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(connection))
    try:
        yield sink
    finally:
        controller.stop()


@dataclass
class FakeTaskInstance:
    """The task instance attributes and XCom pulls our operators use."""

    task_id: str
    run_id: str = field(default_factory=lambda: f"manual__{uuid.uuid4().hex[:8]}")
    dag_id: str = TEST_DAG_ID
    try_number: int = 1
    xcoms: dict[str, Any] = field(default_factory=dict)

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        assert key == "return_value"
        return self.xcoms.get(task_ids)


def make_task_context(
    task_id: str,
    conf: dict[str, Any] | None = None,
    *,
    run_id: str | None = None,
    run_started_at: datetime | None = None,
    **xcoms: Any,
) -> dict[str, Any]:
    """A context for ``execute``: ``xcoms`` maps upstream task ids to their XCom; same ``run_id``
    for tasks of one run (a new one when omitted)."""
    ti = FakeTaskInstance(task_id=task_id, xcoms=dict(xcoms))
    if run_id is not None:
        ti.run_id = run_id
    dag_run = SimpleNamespace(conf=conf or {}, start_date=run_started_at)
    return {"ti": ti, "task_instance": ti, "dag_run": dag_run, "params": {}}


@pytest.fixture
def task_context() -> Callable[..., dict[str, Any]]:
    """Factory ``task_context(task_id, conf=None, *, run_id=None, run_started_at=None, **xcoms)``."""
    return make_task_context


# ------------------------------------------------------------ fixed "today"s instead of the wall clock
# A test whose facts depend on the day (a run that starts, waits or completes "today") takes
# ``fixed_today`` and runs once per case below, so it holds on any weekday, weekend, holiday eve or
# clock change -- and a failure names the case instead of showing up one day a week.

FIXED_TODAY_CALENDAR: dict[str, Any] = {
    "timezone": "Europe/Berlin",
    "weekend": ["sat", "sun"],
    "holiday_country": "DE",
    "holiday_subdivision": "BY",
}
"""The customer calendar the cases are picked in (globex's, without its extra closed days): a zone that
changes clocks, Saturday/Sunday weekends, Bavaria's public holidays. Tests give it to their customer."""


@cache
def _fixed_today_calendar() -> BusinessCalendar:
    from managed_upgrade.sla.calendar import BusinessCalendar

    return BusinessCalendar.from_settings(FIXED_TODAY_CALENDAR)


@dataclass(frozen=True)
class FixedToday:
    """A day a time-sensitive test takes as "today": a local date in :data:`FIXED_TODAY_CALENDAR`."""

    id: str
    date: date
    why: str
    one_business_day_later_local: datetime
    """Local wall-clock time one business day after :attr:`now`, worked out by hand (naive)."""

    @property
    def calendar_settings(self) -> dict[str, Any]:
        """The customer config's ``calendar`` section the case is about (a fresh copy)."""
        return json.loads(json.dumps(FIXED_TODAY_CALENDAR))

    @property
    def calendar(self) -> BusinessCalendar:
        return _fixed_today_calendar()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(FIXED_TODAY_CALENDAR["timezone"])

    def at(self, hour: int, minute: int = 0) -> datetime:
        """Local wall-clock time ``hour:minute`` of this day, as a UTC instant."""
        return datetime.combine(self.date, time(hour, minute), tzinfo=self.zone).astimezone(UTC)

    @property
    def now(self) -> datetime:
        """The test's "now": 10:00 local on this day (in UTC)."""
        return self.at(10)

    def clock(self) -> datetime:
        """A clock stuck at :attr:`now`, for code that takes ``clock``/``now`` callables."""
        return self.now

    @property
    def one_business_day_later(self) -> datetime:
        """:attr:`one_business_day_later_local` as a UTC instant."""
        return self.one_business_day_later_local.replace(tzinfo=self.zone).astimezone(UTC)


FIXED_TODAYS: tuple[FixedToday, ...] = (
    FixedToday("weekday", date(2026, 3, 4), "an ordinary Wednesday", datetime(2026, 3, 5, 10)),
    FixedToday(
        "saturday",
        date(2026, 3, 7),
        "no business time until Monday; one business day is Monday's, due by its end",
        datetime(2026, 3, 10, 0),
    ),
    FixedToday("sunday", date(2026, 3, 8), "the day before business resumes", datetime(2026, 3, 10, 0)),
    FixedToday(
        "eve-of-holiday",
        date(2026, 4, 2),
        "Maundy Thursday: Good Friday, the weekend and Easter Monday follow; next business day Tuesday",
        datetime(2026, 4, 7, 10),
    ),
    FixedToday(
        "dst-spring-forward",
        date(2026, 3, 29),
        "Europe/Berlin skips 02:00-03:00: a 23 h Sunday",
        datetime(2026, 3, 31, 0),
    ),
    FixedToday(
        "dst-fall-back",
        date(2026, 10, 25),
        "Europe/Berlin repeats 02:00-03:00: a 25 h Sunday",
        datetime(2026, 10, 27, 0),
    ),
)


@pytest.fixture(params=FIXED_TODAYS, ids=lambda today: today.id)
def fixed_today(request: pytest.FixtureRequest) -> FixedToday:
    """One of :data:`FIXED_TODAYS` per test run (ids name the case: ``[saturday]``, ...)."""
    return request.param
