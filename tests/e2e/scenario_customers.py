"""Customers of the end-to-end upgrade scenarios, each on installations of its own, for one session.

Every scenario upgrades its own customer (so its own DAG) on its own Dev, UAT and Prod
installations and config databases, so the scenarios can run at the same time in one Airflow
without touching the estate's demo customers or each other. A customer's config is the demo
customer's (``include/customers/acme.yaml``) with its own id, case id, contact, environments and
any extra test cases of the scenario.

The module also reads what a run left behind: the ledger's rows and, when something went wrong,
the states and log tails that say where.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2
import yaml
from psycopg2.extras import RealDictCursor

from airflow_local.client import AirflowApiError, AirflowClient
from airflow_local.settings import REPO_ROOT
from crm_estate import Estate, Installation, host_conn_id
from managed_upgrade.config import ENVIRONMENT_NAMES, CustomerConfig, load_customer_config
from managed_upgrade.ledger import DEFAULT_SCHEMA, Ledger

BASE_CONFIG = REPO_ROOT / "include" / "customers" / "acme.yaml"
CURRENT_VERSION = "10.2.0"
TARGET_VERSION = "11.0.0"
LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class ScenarioCustomer:
    """A customer config written for one scenario and the installations it points at."""

    config: CustomerConfig
    installations: Mapping[str, Installation]
    connections: Mapping[str, dict[str, Any]]
    """Airflow connections of its config databases (its hosts are the estate's own)."""

    @property
    def customer_id(self) -> str:
        return self.config.customer_id

    @property
    def dag_id(self) -> str:
        return self.config.dag_id

    @property
    def case_id(self) -> str:
        return self.config.request_case.case_id

    @property
    def contact_emails(self) -> tuple[str, ...]:
        return self.config.contact_emails("customer")

    def install_path(self, env: str) -> Path:
        return self.installations[env].install_path


def provision_customer(
    estate: Estate,
    folder: Path,
    customer_id: str,
    case_id: str,
    token: str,
    extra_test_cases: Sequence[dict[str, Any]] = (),
    worker_queues: Mapping[str, str] | None = None,
) -> ScenarioCustomer:
    """Installations at the current version on the three hosts, and ``<folder>/<customer_id>.yaml``.

    ``token`` makes paths and database names unique to the session, so reruns never collide;
    ``worker_queues`` (environment -> Celery queue) puts environments in network zones of their own.
    """
    installations: dict[str, Installation] = {}
    try:
        for env in ENVIRONMENT_NAMES:
            base = estate.layout.host_dir(env) / "isolated" / f"{customer_id}-{token}"
            installations[env] = estate.provision_installation(
                env=env,
                install_path=base / "crm",
                version=CURRENT_VERSION,
                db_name=f"crm_{customer_id}_{token}_{env}",
                customer_id=customer_id,
                staging_path=base / "staging",
                backup_path=base / "backups",
            )
    except BaseException:
        for installation in installations.values():
            estate.remove_installation(installation)
        raise
    connections = {
        db_conn_id(customer_id, env): estate.db_connection(installation.db_name)
        for env, installation in installations.items()
    }
    connections.update(
        (test_db_conn_id(customer_id, env), estate.test_db_connection(installation.db_name))
        for env, installation in installations.items()
    )
    document = customer_document(customer_id, case_id, installations, extra_test_cases)
    for env, queue in (worker_queues or {}).items():
        document["environments"][env]["worker_queue"] = queue
    path = folder / f"{customer_id}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return ScenarioCustomer(load_customer_config(path), installations, connections)


def remove_customer(estate: Estate, customer: ScenarioCustomer, folder: Path) -> None:
    for installation in customer.installations.values():
        estate.remove_installation(installation)
    (folder / f"{customer.customer_id}.yaml").unlink(missing_ok=True)


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def db_conn_id(customer_id: str, env: str) -> str:
    return f"crm_{customer_id}_{env}_db"


def test_db_conn_id(customer_id: str, env: str) -> str:
    """The read-only role's connection to the same config DB (sql test cases run as it)."""
    return f"crm_{customer_id}_{env}_test_db"


def customer_document(
    customer_id: str,
    case_id: str,
    installations: Mapping[str, Installation],
    extra_test_cases: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """The demo customer's config, made this scenario's customer."""
    document = yaml.safe_load(BASE_CONFIG.read_text(encoding="utf-8"))
    domain = customer_id.replace("_", "-") + ".example"
    document["customer_id"] = customer_id
    document["name"] = f"Scenario {customer_id} Ltd"
    document["contacts"]["customer"] = [{"name": "Quinn Tester", "email": f"quinn.tester@{domain}"}]
    document["request_case"]["case_id"] = case_id
    document["versions"] = {"current": CURRENT_VERSION, "target": TARGET_VERSION}
    document["environments"] = {
        env: {
            "ssh_conn_id": host_conn_id(env),
            "db_conn_id": db_conn_id(customer_id, env),
            "test_db_conn_id": test_db_conn_id(customer_id, env),
            "install_path": str(installation.install_path),
            "staging_path": str(installation.staging_path),
            "backup_path": str(installation.backup_path),
            # the folder holding this scenario's crm/, staging/ and backups/ (under $ESTATE_ROOT)
            "allowed_roots": [str(installation.install_path.parent)],
        }
        for env, installation in installations.items()
    }
    document["test_cases"] = [*document["test_cases"], *extra_test_cases]
    return document


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


def xcom(api: AirflowClient, dag_id: str, run_id: str, task_id: str) -> Any:
    """A task's return value as the REST API stores it."""
    where = _path(dag_id, "dagRuns", run_id, "taskInstances", task_id)
    return api.request("GET", f"/api/v2/dags/{where}/xcomEntries/return_value")["value"]


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
