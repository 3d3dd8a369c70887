"""The shared ledger pool on a real PostgreSQL: bounded, reused, and it drops what broke or moved.

The pool serves the triggerer's SLA watchers, which poll for weeks: hundreds of them must hold a
handful of server connections, and a restarted or repointed ledger must cost one failed call at most.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import psycopg2
import pytest

from managed_upgrade_airflow.ledger_access import SharedLedgers

pytestmark = pytest.mark.integration

CONN_ID = "managed_upgrade_ledger"


def backends(dsn: str) -> int:
    """Server connections to the ledger database besides the counting one."""
    with psycopg2.connect(dsn) as probe, probe.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        (count,) = cursor.fetchone()
    probe.close()
    return int(count)


@pytest.fixture
def pool(ledger_dsn: str) -> Iterator[SharedLedgers]:
    shared = SharedLedgers(CONN_ID, size=3)
    yield shared
    shared.close()


def current_database(pool: SharedLedgers) -> str:
    with pool.borrow() as ledger, ledger._cursor() as cursor:
        cursor.execute("SELECT current_database() AS name")
        return str(cursor.fetchone()["name"])


def test_many_threads_share_at_most_size_connections(pool: SharedLedgers, ledger_dsn: str) -> None:
    peak, lock, errors = [0], threading.Lock(), []
    inside = [0]

    def borrower() -> None:
        try:
            for _ in range(3):
                with pool.borrow() as ledger, ledger._cursor() as cursor:
                    with lock:
                        inside[0] += 1
                        peak[0] = max(peak[0], inside[0])
                    cursor.execute("SELECT pg_sleep(0.02)")
                    with lock:
                        inside[0] -= 1
        except Exception as error:  # reported below; a thread's exception is otherwise lost
            errors.append(error)

    threads = [threading.Thread(target=borrower) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert peak[0] == 3  # 24 threads, never more than the pool's size at once
    assert pool.opened == 3  # 72 borrows, three connections opened in all
    assert backends(ledger_dsn) == 3  # kept idle for the next poll


def test_a_connection_the_server_dropped_fails_once_and_is_replaced(
    pool: SharedLedgers, ledger_dsn: str
) -> None:
    current_database(pool)
    with psycopg2.connect(ledger_dsn) as admin, admin.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    admin.close()
    time.sleep(0.2)

    with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError)):
        current_database(pool)  # the idle connection was killed under it: this call fails ...
    assert current_database(pool)  # ... and the next one gets a fresh connection
    assert pool.opened == 2


def test_a_repointed_connection_takes_effect_at_the_next_borrow(
    pool: SharedLedgers, ledger_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = current_database(pool)
    monkeypatch.setenv(
        "AIRFLOW_CONN_MANAGED_UPGRADE_LEDGER",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": 5432,
                "login": "postgres",
                "schema": "postgres",
            }
        ),
    )
    assert current_database(pool) == "postgres" != first
    assert backends(ledger_dsn) == 0  # the idle connection to the old database was closed


def test_a_connection_left_inside_a_transaction_is_not_lent_again(pool: SharedLedgers) -> None:
    with pool.borrow() as ledger:
        ledger._connection.cursor().execute("SELECT 1")  # opens a transaction nobody ends
    current_database(pool)
    assert pool.opened == 2


def set_connections_allowed(dsn: str, allowed: bool) -> None:
    """Refuse (or allow again) new connections to the ledger database and cut the open ones: a restart."""
    name = psycopg2.extensions.parse_dsn(dsn)["dbname"]
    admin = psycopg2.connect(dsn.replace(f"dbname={name}", "dbname=postgres"))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
    admin.close()


def test_a_new_connection_waits_out_a_restart(ledger_dsn: str) -> None:
    from managed_upgrade_airflow.ledger_access import connect_waiting

    params = psycopg2.extensions.parse_dsn(ledger_dsn)
    set_connections_allowed(ledger_dsn, False)
    timer = threading.Timer(2.0, set_connections_allowed, (ledger_dsn, True))
    started = time.monotonic()
    timer.start()
    try:
        connection = connect_waiting(params, outage_seconds=30.0)
    finally:
        timer.join()
    assert 2.0 <= time.monotonic() - started < 30.0
    connection.close()


def test_an_outage_longer_than_the_budget_is_reported(ledger_dsn: str) -> None:
    from managed_upgrade_airflow.ledger_access import connect_waiting

    set_connections_allowed(ledger_dsn, False)
    try:
        with pytest.raises(psycopg2.OperationalError, match="not currently accepting connections"):
            connect_waiting(psycopg2.extensions.parse_dsn(ledger_dsn), outage_seconds=1.0)
    finally:
        set_connections_allowed(ledger_dsn, True)


def test_an_idempotent_write_cut_mid_call_is_called_again_and_kept_once(ledger_dsn: str) -> None:
    from datetime import UTC, datetime

    from managed_upgrade_airflow.ledger_access import again_after_outage, open_ledger

    calls = []
    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def record_finished() -> None:
        calls.append(at)
        with open_ledger() as ledger:
            ledger.record_event(
                "managed_upgrade__acme", "run", "initiation.respond_to_request", "finished", at=at
            )
            if len(calls) == 1:  # the server goes away after the write, before the caller hears of it
                with ledger._cursor() as cursor:
                    cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    again_after_outage(record_finished)

    assert len(calls) == 2
    with open_ledger() as ledger:
        events = ledger.events("managed_upgrade__acme", "run")
    assert [(event["event"], event["at"]) for event in events] == [("finished", at)]
