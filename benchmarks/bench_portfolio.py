"""Portfolio cost per customer at 10 vs 200 customers: the views must not slow down faster than linearly.

    .venv/bin/python benchmarks/bench_portfolio.py [--small 10] [--large 200] [--rounds 3]

Builds a fresh PostgreSQL ledger (created, migrated, dropped at the end) holding, per customer, one
finished upgrade a year ago and one running upgrade 30 days in that slipped by half (SLA misses, a
forecast past the plan): what the activity listener, the first task and the closure write (``runs``,
``run_configs``, ``planned_activities``, ``activity_events``). Each customer has its own config
snapshot (its own id), so none is validated on another's behalf.

Measured, as the portfolio page does it: the ledger reads (``run_reads.read_runs``, a fixed number of
batched queries) and the page's data (``managed_upgrade.views.portfolio.portfolio``), with the
snapshot cache cleared before each round (a cold api-server worker). Prints the medians, the cost per
customer and the ratio large/small per customer (goal <= 1.2x: linear or better).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for sub in ("include", "plugins", "scripts"):
    sys.path.insert(0, str(ROOT / sub))

import psycopg2  # noqa: E402
from psycopg2 import sql  # noqa: E402

from managed_upgrade.config import dag_id_for, load_customer_config  # noqa: E402
from managed_upgrade.config.snapshot import ConfigSnapshot  # noqa: E402
from managed_upgrade.ledger import Ledger, migrate  # noqa: E402
from managed_upgrade.sla.plan import make_customer_plan  # noqa: E402
from managed_upgrade.views.portfolio import portfolio  # noqa: E402
from managed_upgrade.views.run_facts import clear_config_cache  # noqa: E402
from managed_upgrade_airflow.views.run_reads import customers, read_runs  # noqa: E402

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
NOW = datetime(2027, 2, 10, 9, tzinfo=UTC)
RATIO_GOAL = 1.2


def _write_run(ledger: Ledger, config, run_id: str, start: datetime, until: datetime, *, slip: float) -> None:
    dag_id = dag_id_for(config.customer_id)
    plan = make_customer_plan(config, start)
    ledger.record_run(dag_id, run_id, config.customer_id, {})
    ledger.keep_run_config(dag_id, run_id, ConfigSnapshot.of(config).as_row(), taken_by="benchmark")
    ledger.save_plan(dag_id, run_id, plan.to_rows(dag_id, run_id))
    for activity in plan.activities:
        begun = plan.start + (activity.planned_start - plan.start) * slip
        done = plan.start + (activity.planned_finish - plan.start) * slip
        if begun <= until:
            ledger.record_event(dag_id, run_id, activity.key, "started", at=begun)
        if done <= until:
            ledger.record_event(dag_id, run_id, activity.key, "finished", at=done)


def populate(dsn: str, count: int) -> list[str]:
    """``count`` customers, each with a finished and a running upgrade; returns their DAG ids."""
    template = load_customer_config(ROOT / "include" / "customers" / "acme.yaml")
    connection = psycopg2.connect(dsn)
    ledger = Ledger(connection)
    dag_ids = []
    for index in range(count):
        customer_id = f"bench{index:04d}"
        config = template.model_copy(update={"customer_id": customer_id, "name": f"Bench {index:04d}"})
        last_year = NOW - timedelta(days=400)
        _write_run(ledger, config, "manual__last_year", last_year, NOW, slip=1.0)
        dag_id = dag_id_for(customer_id)
        ledger.finish_run(dag_id, "manual__last_year", {"completed": True})
        _write_run(ledger, config, "manual__current", NOW - timedelta(days=30), NOW, slip=1.5)
        dag_ids.append(dag_id)
    connection.close()
    return dag_ids


def measure(dsn: str, dag_ids: list[str], rounds: int) -> float:
    """Median seconds to build the portfolio of ``dag_ids`` from the ledger, cold snapshot cache."""
    times = []
    connection = psycopg2.connect(dsn)
    ledger = Ledger(connection)
    for _ in range(rounds):
        clear_config_cache()
        began = time.perf_counter()
        rows = portfolio(customers(dag_ids, read_runs(ledger, dag_ids)), NOW)
        times.append(time.perf_counter() - began)
        assert len(rows) == len(dag_ids) and all(row.status == "running" for row in rows)
    connection.close()
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--large", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    name = f"mu_bench_portfolio_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    try:
        connection = psycopg2.connect(dsn)
        migrate(connection)
        connection.close()
        began = time.perf_counter()
        dag_ids = populate(dsn, args.large)
        print(f"ledger: {args.large} customers x 2 runs written in {time.perf_counter() - began:.1f} s")
        measure(dsn, dag_ids[: args.small], 1)  # warm the imports and the process model's cache
        small = measure(dsn, dag_ids[: args.small], args.rounds)
        large = measure(dsn, dag_ids, args.rounds)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()

    per_small, per_large = small / args.small, large / args.large
    ratio = per_large / per_small
    print(f"\nportfolio from the ledger (median of {args.rounds}, cold snapshot cache):")
    print(f"  {args.small:4d} customers: {small * 1000:8.1f} ms  = {per_small * 1000:6.2f} ms per customer")
    print(f"  {args.large:4d} customers: {large * 1000:8.1f} ms  = {per_large * 1000:6.2f} ms per customer")
    verdict = "ok" if ratio <= RATIO_GOAL else "MISSED"
    print(
        f"  ratio per customer {args.large}/{args.small}: {ratio:.2f}x"
        f" (goal <= {RATIO_GOAL}x: linear) {verdict}"
    )
    return 0 if ratio <= RATIO_GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
