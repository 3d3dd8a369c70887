"""The ledger against a real PostgreSQL: migrations, idempotent events, exactly-once SLA misses."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import psycopg2
import pytest

from managed_upgrade.ledger import Ledger, migrate, pending_migrations
from managed_upgrade.ledger.schema import available_migrations

pytestmark = pytest.mark.integration

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@pytest.fixture
def ledger_dsn():
    name = f"ledger_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_migrate_applies_once_and_reports_up_to_date(ledger_dsn):
    conn = psycopg2.connect(ledger_dsn)
    shipped = available_migrations()
    assert shipped[0].name == "initial"
    assert [m.version for m in pending_migrations(conn)] == [m.version for m in shipped]
    assert [m.name for m in migrate(conn)] == [m.name for m in shipped]
    assert migrate(conn) == []
    assert pending_migrations(conn) == []
    conn.close()


def test_concurrent_migrations_do_not_collide(ledger_dsn):
    errors: list[BaseException] = []

    def run():
        conn = psycopg2.connect(ledger_dsn)
        try:
            migrate(conn)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    conn = psycopg2.connect(ledger_dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM managed_upgrade.schema_migrations")
        assert cur.fetchone()[0] == len(available_migrations())
    conn.close()


def test_events_are_idempotent_and_sla_miss_is_recorded_exactly_once(ledger_dsn):
    conn = psycopg2.connect(ledger_dsn)
    migrate(conn)
    ledger = Ledger(conn)
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert ledger.record_event("d", "r", "initiation.respond_to_request", "ready", at=now)
    assert not ledger.record_event("d", "r", "initiation.respond_to_request", "ready", at=now)
    assert [e["event"] for e in ledger.events("d", "r")] == ["ready"]

    first = ledger.record_sla_miss("d", "r", "respond_to_request", "consultant", 1.0, now, 0.25)
    again = ledger.record_sla_miss("d", "r", "respond_to_request", "consultant", 1.0, now, 0.5)
    assert (first, again) == (True, False)
    misses = ledger.sla_misses("d", "r")
    assert len(misses) == 1
    assert misses[0]["overrun_days"] == 0.25
    conn.close()


def test_reports_fixes_and_backups_round_trip(ledger_dsn):
    conn = psycopg2.connect(ledger_dsn)
    migrate(conn)
    ledger = Ledger(conn)
    ledger.save_test_report("d", "r", "dev", 1, {"passed": 1}, "<testsuite/>", "1 of 2 passed")
    ledger.save_test_report("d", "r", "dev", 1, {"passed": 2}, "<testsuite/>", "2 of 2 passed")
    reports = ledger.test_reports("d", "r", "dev")
    assert [(r["round"], r["report"]) for r in reports] == [(1, {"passed": 2})]

    ledger.record_fix("d", "r", "dev", 1, "carla", "patched a setting", {"files": [], "sql": ["SELECT 1"]})
    assert ledger.fixes("d", "r")[0]["bundle"]["sql"] == ["SELECT 1"]

    ledger.record_backup("b1", "d", "r", "acme", "dev", "/backups/b1", "10.2.0", {"files": []})
    ledger.record_backup("b2", "d", "r", "acme", "dev", "/backups/b2", "10.2.0", {"files": []})
    ledger.mark_backups_pruned(["b1"])
    rows = {b["backup_id"]: b for b in ledger.backups("acme", "dev")}
    assert rows["b1"]["pruned_at"] is not None
    assert rows["b2"]["pruned_at"] is None

    answered = datetime(2027, 2, 3, 16, 45, 12, 250000, tzinfo=UTC)
    ledger.record_gate_answer("d", "r", "dev.customer_sign_off", 1, "carla", answered, ["Sign off"], {})
    (answer,) = ledger.gate_answers("d", "r")
    assert (answer["responded_by"], answer["responded_at"]) == ("carla", answered)
    conn.close()


def test_migrate_command_creates_the_database_when_asked():
    import subprocess
    import sys

    name = f"ledger_cli_{uuid.uuid4().hex[:10]}"
    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    try:
        without = subprocess.run(
            [sys.executable, "-m", "managed_upgrade.ledger", "migrate", "--dsn", dsn],
            check=False,
            capture_output=True,
            text=True,
        )
        assert without.returncode != 0
        assert name in without.stderr
        created = subprocess.run(
            [sys.executable, "-m", "managed_upgrade.ledger", "migrate", "--create-database", "--dsn", dsn],
            capture_output=True,
            text=True,
            check=True,
        )
        assert f"ledger database created: {name}" in created.stdout
        assert "applied 0001_initial" in created.stdout
        again = subprocess.run(
            [sys.executable, "-m", "managed_upgrade.ledger", "migrate", "--create-database", "--dsn", dsn],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "created" not in again.stdout
        assert "nothing to do" in again.stdout
    finally:
        admin = psycopg2.connect(ADMIN_DSN)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_a_scheduled_wait_for_the_upgrade_window_is_a_known_event(ledger_dsn):
    conn = psycopg2.connect(ledger_dsn)
    migrate(conn)
    ledger = Ledger(conn)
    at = datetime(2027, 1, 6, 11, 0, tzinfo=UTC)
    detail = {"until": "2027-01-08T21:00:00+00:00", "reason": "outside the upgrade windows"}
    key = "prod.upgrade_environment"
    assert ledger.record_event("d", "r", key, "waiting_for_window", at=at, try_number=1, detail=detail)
    assert not ledger.record_event("d", "r", key, "waiting_for_window", at=at, try_number=1, detail=detail)
    assert ledger.record_event("d", "r", key, "waiting_for_window", at=at, try_number=2, detail=detail)
    assert [(e["event"], e["try_number"], e["detail"]) for e in ledger.events("d", "r")] == [
        ("waiting_for_window", 1, detail),
        ("waiting_for_window", 2, detail),
    ]
    with pytest.raises(psycopg2.errors.CheckViolation):
        ledger.record_event("d", "r", key, "napping", at=at)
    conn.close()
