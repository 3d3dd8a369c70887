"""Opens the project's ledger from an Airflow connection, so tasks never hold a DSN of their own."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # psycopg2 loads when a task opens the ledger, not when a DAG file is parsed
    from managed_upgrade.ledger import Ledger

log = logging.getLogger(__name__)
T = TypeVar("T")

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
    """A :class:`Ledger` on a fresh psycopg2 connection, closed afterwards."""
    from managed_upgrade.ledger import Ledger

    connection = _connect(conn_id)
    try:
        yield Ledger(connection)
    finally:
        connection.close()


LEDGER_OUTAGE_SECONDS = 60.0
"""How long a new connection keeps trying while the ledger server refuses it (a restart, a failover),
before the caller sees the error: a task or a listener hook waits out a restart instead of failing."""


OUTAGE_ATTEMPTS = 3
"""Calls of an idempotent ledger write whose connection broke under it (a restart cuts it mid-call)."""

OUTAGE_PAUSE_SECONDS = 1.0
"""Pause before such a call is made again."""


def again_after_outage(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``, called again if the ledger connection broke under it.

    Only for idempotent work (``ON CONFLICT`` writes, reads): the broken call may have committed. The
    next call opens a new connection, which waits out the restart (:data:`LEDGER_OUTAGE_SECONDS`).
    """
    import psycopg2
    import tenacity

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type((psycopg2.OperationalError, psycopg2.InterfaceError)),
        stop=tenacity.stop_after_attempt(OUTAGE_ATTEMPTS),
        wait=tenacity.wait_fixed(OUTAGE_PAUSE_SECONDS),
        before_sleep=lambda state: log.warning(
            "ledger connection broke during %s (%s); calling it again",
            getattr(function, "__name__", function),
            " ".join(str(state.outcome.exception() if state.outcome else "").split()),
        ),
        reraise=True,
    )
    return retrying(function, *args)


def _connect(conn_id: str) -> Any:
    """A psycopg2 connection to the ledger named by the Airflow connection ``conn_id``."""
    return connect_waiting(_connect_kwargs(conn_id))


def connect_waiting(params: dict[str, Any], outage_seconds: float | None = None) -> Any:
    """``psycopg2.connect(**params)``, tried again with growing pauses for up to ``outage_seconds``
    (default :data:`LEDGER_OUTAGE_SECONDS`, read at call time)."""
    import psycopg2
    import tenacity

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(psycopg2.OperationalError),
        wait=tenacity.wait_exponential(multiplier=0.25, max=5.0),
        stop=tenacity.stop_after_delay(LEDGER_OUTAGE_SECONDS if outage_seconds is None else outage_seconds),
        before_sleep=lambda state: log.warning(
            "ledger at %s:%s refuses connections (%s); trying again",
            params.get("host"),
            params.get("port"),
            " ".join(str(state.outcome.exception() if state.outcome else "").split()),
        ),
        reraise=True,
    )
    return retrying(psycopg2.connect, **params)


def _connect_kwargs(conn_id: str) -> dict[str, Any]:
    """libpq parameters of the Airflow connection ``conn_id``, looked up now (it may have changed).

    Not ``PostgresHook.get_conn()``: with psycopg 3 and SQLAlchemy 2 installed (as Airflow 3.3 has
    them) the hook returns a psycopg 3 connection, and the ledger's store speaks psycopg2.
    """
    from airflow.sdk import BaseHook

    airflow_conn = BaseHook.get_connection(conn_id)
    extras = {key: value for key, value in airflow_conn.extra_dejson.items() if key in _LIBPQ_EXTRAS}
    return {
        "host": airflow_conn.host,
        "port": airflow_conn.port or 5432,
        "user": airflow_conn.login,
        "password": airflow_conn.password,
        "dbname": airflow_conn.schema,
        **{"connect_timeout": 10, **extras},
    }


_SHARED_POOL_SIZE = 4
"""Ledger connections one process keeps for its long-lived readers (the triggerer's SLA watchers): a
triggerer holding hundreds of parked runs must not hold hundreds of PostgreSQL connections."""


class SharedLedgers:
    """At most ``size`` ledger connections for one connection id, lent to one thread at a time.

    ``borrow()`` blocks (in the caller's worker thread, never the event loop) while all are lent.
    A returned connection that broke or was left inside a transaction is closed, not kept, so a
    restarted ledger server costs one failed call per idle connection and nothing else.
    """

    def __init__(self, conn_id: str, size: int = _SHARED_POOL_SIZE) -> None:
        if size < 1:
            raise ValueError(f"ledger pool size must be at least 1, got {size}")
        self.conn_id, self.size = conn_id, size
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[tuple[Any, dict[str, Any]]] = []
        """Idle connections with the parameters each was opened with."""
        self._idle_lock = threading.Lock()
        self.opened = 0
        """Connections opened over this pool's life (a measure of reuse)."""

    @contextmanager
    def borrow(self) -> Iterator[Ledger]:
        """A ledger on an idle connection (or a new one) to where ``conn_id`` points *now*.

        The Airflow connection is looked up at every borrow, so a connection edited by ops takes
        effect at the next poll: idle connections opened with other parameters are closed.
        """
        from managed_upgrade.ledger import Ledger

        with self._slots:
            params = _connect_kwargs(self.conn_id)
            stale: list[Any] = []
            connection = None
            with self._idle_lock:
                while self._idle and connection is None:
                    candidate, opened_with = self._idle.pop()
                    if opened_with == params:
                        connection = candidate
                    else:
                        stale.append(candidate)
            for old in stale:
                _close_quietly(old)
            if connection is None:
                connection = connect_waiting(params)
                self.opened += 1
            try:
                yield Ledger(connection)
            finally:
                self._give_back(connection, params)

    def _give_back(self, connection: Any, params: dict[str, Any]) -> None:
        import psycopg2.extensions

        healthy = (
            not connection.closed
            and connection.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        )
        if healthy:
            with self._idle_lock:
                self._idle.append((connection, params))
        else:
            _close_quietly(connection)

    def close(self) -> None:
        """Close the idle connections (lent ones are closed when they come back broken, or kept)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for connection, _ in idle:
            _close_quietly(connection)


def _close_quietly(connection: Any) -> None:
    try:
        connection.close()
    except Exception as error:  # a broken connection may fail to close; it is gone either way
        log.debug("closing a ledger connection failed: %s", error)


_shared: dict[str, SharedLedgers] = {}
_shared_lock = threading.Lock()


def shared_ledgers(conn_id: str = LEDGER_CONN_ID) -> SharedLedgers:
    """This process's pool for ``conn_id`` (created on first use)."""
    with _shared_lock:
        pool = _shared.get(conn_id)
        if pool is None:
            pool = _shared[conn_id] = SharedLedgers(conn_id)
        return pool
