"""Customers of the end-to-end upgrade scenarios, each on installations of its own, for one session.

Every scenario upgrades its own customer (so its own DAG) on its own Dev, UAT and Prod
installations and config databases, so the scenarios can run at the same time in one Airflow
without touching the estate's demo customers or each other. A customer's config is the demo
customer's (``include/customers/acme.yaml``) with its own id, case id, contact, environments and
any extra test cases of the scenario; ``crm_estate.scenario_customers`` provisions them (the
benchmarks use it too) and is re-exported here.

The module also reads what a run left behind: the ledger's rows and, when something went wrong,
the states and log tails that say where.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import psycopg2
from psycopg2.extras import RealDictCursor

from airflow_local.client import AirflowApiError, AirflowClient
from crm_estate.scenario_customers import (
    BASE_CONFIG,
    CURRENT_VERSION,
    TARGET_VERSION,
    ScenarioCustomer,
    customer_document,
    db_conn_id,
    provision_customer,
    remove_customer,
    remove_folder,
    request_case_dates,
    test_db_conn_id,
)
from managed_upgrade.ledger import DEFAULT_SCHEMA, Ledger

__all__ = [
    "BASE_CONFIG",
    "CURRENT_VERSION",
    "LOG_TAIL_LINES",
    "TARGET_VERSION",
    "ScenarioCustomer",
    "customer_document",
    "db_conn_id",
    "diagnostics",
    "open_ledger",
    "provision_customer",
    "remove_customer",
    "remove_folder",
    "request_case_dates",
    "run_row",
    "task_log",
    "test_db_conn_id",
    "xcom",
]

LOG_TAIL_LINES = 30


# --- what a run left behind ---------------------------------------------------------------------


@contextmanager
def open_ledger(dsn: str) -> Iterator[Ledger]:
    connection = psycopg2.connect(dsn)
    try:
        yield Ledger(connection)
    finally:
        connection.close()


def run_row(dsn: str, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The ledger's ``runs`` row of a run (its store has no reader for it)."""
    connection = psycopg2.connect(dsn)
    try:
        with connection, connection.cursor(cursor_factory=RealDictCursor) as cursor:
            cursor.execute(
                f"SELECT customer_id, conf, summary, finished_at FROM {DEFAULT_SCHEMA}.runs"
                " WHERE dag_id = %s AND run_id = %s",
                (dag_id, run_id),
            )
            row = cursor.fetchone()
    finally:
        connection.close()
    return dict(row) if row else None


def _path(*segments: str) -> str:
    return "/".join(quote(segment, safe="") for segment in segments)


def xcom(api: AirflowClient, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
    """A task's return value as the REST API stores it (of one instance of a mapped task)."""
    where = _path(dag_id, "dagRuns", run_id, "taskInstances", task_id)
    params = {"map_index": map_index} if map_index >= 0 else None
    return api.request("GET", f"/api/v2/dags/{where}/xcomEntries/return_value", params=params)["value"]


def task_log(
    api: AirflowClient, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1
) -> str:
    """A task's log as text, one event per line, with the type and message of any exception it raised."""
    where = _path(dag_id, "dagRuns", run_id, "taskInstances", task_id, "logs", str(try_number))
    body = api.request(
        "GET", f"/api/v2/dags/{where}", params={"full_content": "true", "map_index": map_index}
    )
    lines = []
    for entry in body["content"]:
        if isinstance(entry, str):
            lines.append(entry)
            continue
        lines.append(
            f"{entry.get('timestamp', '')} {entry.get('level', '')} {entry.get('event', '')}".strip()
        )
        for error in entry.get("error_detail") or []:
            lines.append(f"  {error.get('exc_type')}: {error.get('exc_value')}")
    return "\n".join(lines)


def diagnostics(api: AirflowClient, dag_id: str, run_id: str) -> str:
    """Where a run stands: every task's state, and the log tail of each task that did not succeed."""
    try:
        instances = api.task_instances(dag_id, run_id)
    except AirflowApiError as error:
        return f"(task states of {dag_id}/{run_id} unavailable: {error})"
    lines = [f"task states of {dag_id}/{run_id}:"]
    for instance in instances:
        mapped = f"[{instance['map_index']}]" if instance["map_index"] >= 0 else ""
        lines.append(f"  {instance['task_id']}{mapped}: {instance['state']} (try {instance['try_number']})")
    for instance in instances:
        if instance["state"] not in {"failed", "up_for_retry"}:
            continue
        try:
            log = task_log(
                api,
                dag_id,
                run_id,
                instance["task_id"],
                max(instance["try_number"], 1),
                map_index=instance["map_index"],
            )
        except AirflowApiError as error:
            log = f"(log unavailable: {error})"
        tail = "\n".join(log.splitlines()[-LOG_TAIL_LINES:])
        lines.append(f"--- last lines of the log of {instance['task_id']} ---\n{tail}")
    return "\n".join(lines)
