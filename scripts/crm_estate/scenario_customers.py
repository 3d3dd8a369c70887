"""Generated customers, each on Dev, UAT and Prod installations and config databases of its own.

The end-to-end scenarios and the benchmarks upgrade customers that are not the estate's demo
customers: each gets its own installations on the three hosts (under ``hosts/<env>/isolated/``) and
its own config databases, so several can be upgraded at the same time in one Airflow without
touching the demo customers or each other. A customer's config is the demo customer's
(``include/customers/acme.yaml``) with its own id, case id, contact, environments and any extra test
cases, written as ``<folder>/<customer_id>.yaml`` for an Airflow whose customers folder is ``folder``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from crm_estate.estate import Estate, host_conn_id
from crm_estate.installation import Installation
from managed_upgrade.config import ENVIRONMENT_NAMES, CustomerConfig, load_customer_config

BASE_CONFIG = Path(__file__).resolve().parents[2] / "include" / "customers" / "acme.yaml"
CURRENT_VERSION = "10.2.0"
TARGET_VERSION = "11.0.0"


@dataclass(frozen=True)
class ScenarioCustomer:
    """A generated customer config and the installations it points at."""

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
    link_ports: Mapping[str, int] | None = None,
    allowed_programs: Mapping[str, Sequence[str]] | None = None,
) -> ScenarioCustomer:
    """Installations at the current version on the three hosts, and ``<folder>/<customer_id>.yaml``.

    ``token`` makes paths and database names unique to the session, so reruns never collide;
    ``worker_queues`` (environment -> Celery queue) puts environments in network zones of their own;
    ``link_ports`` (environment -> port of a :class:`~crm_estate.network_link.NetworkLink` in front of
    its host) gives those environments an SSH connection of their own that goes through the link;
    ``allowed_programs`` (environment -> programs) lets their command test cases run those programs.
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
    for env, programs in (allowed_programs or {}).items():
        document["environments"][env]["allowed_programs"] = list(programs)
    for env, port in (link_ports or {}).items():
        conn_id = linked_ssh_conn_id(customer_id, env)
        connections[conn_id] = {**estate.ssh_connection(env), "port": port}
        document["environments"][env]["ssh_conn_id"] = conn_id
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


def linked_ssh_conn_id(customer_id: str, env: str) -> str:
    """The customer's own SSH connection to a host reached through a network link."""
    return f"crm_{customer_id}_{env}_ssh"


def test_db_conn_id(customer_id: str, env: str) -> str:
    """The read-only role's connection to the same config DB (sql test cases run as it)."""
    return f"crm_{customer_id}_{env}_test_db"


def customer_document(
    customer_id: str,
    case_id: str,
    installations: Mapping[str, Installation],
    extra_test_cases: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """The demo customer's config, made this customer's."""
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
            # the folder holding this customer's crm/, staging/ and backups/ (under $ESTATE_ROOT)
            "allowed_roots": [str(installation.install_path.parent)],
        }
        for env, installation in installations.items()
    }
    document["test_cases"] = [*document["test_cases"], *extra_test_cases]
    return document


def request_case_dates(customer: ScenarioCustomer) -> dict[str, str]:
    """Trigger parameters: start today in the customer's zone, deadline a year later.

    ~250 business days, well over an hour at a rehearsal's speed, so no run-level deadline alert falls
    due during a rehearsal, whatever the date; the config's fixed dates would one day pass.
    """
    today = datetime.now(ZoneInfo(customer.config.calendar.timezone)).date()
    return {
        "earliest_start": today.isoformat(),
        "ideal_start": today.isoformat(),
        "deadline": (today + timedelta(days=365)).isoformat(),
    }
