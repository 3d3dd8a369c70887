"""The CeleryExecutor deployment, locally: one rehearsal upgrade run end to end by Celery workers.

The harness runs Airflow with the CeleryExecutor (``HarnessOverrides(executor="celery")``): a private
Redis on a free loopback port as the broker, and two Celery workers, each a process of its own with
its own Celery hostname: ``default@<machine>`` on the default queue and ``prod-zone@<machine>`` on the
production zone's queue. A scenario customer whose Prod environment sits in a network zone of its
own (``worker_queue: prod_zone``) then has its rehearsal upgrade run through every gate, each
answered by its assigned user through the REST API (the happy story of the upgrade scenarios,
imported from there), and every task instance names in its ``hostname`` the Celery worker that ran
it (the harness's workers report their node name, where Airflow's default is the machine's name).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from scenario_customers import (
    CURRENT_VERSION,
    TARGET_VERSION,
    ScenarioCustomer,
    provision_customer,
    remove_customer,
    remove_folder,
    task_log,
)
from test_upgrade_scenarios import (
    GATES_ANSWERED_BY,
    INSTALLER_SECONDS,
    cooperative,
    installed,
    play,
)

from airflow_local import harness
from airflow_local.celery_workers import node_name, worker_component
from airflow_local.processes import listening_sockets, non_loopback
from airflow_local.settings import DEFAULT_PROD_ZONE_QUEUE, DEFAULT_QUEUE, HarnessOverrides
from crm_estate import Estate
from managed_upgrade.config import ENVIRONMENT_NAMES
from managed_upgrade.review.review_runs import REVIEW_DAG_ID

TOKEN = uuid.uuid4().hex[:8]
CUSTOMERS_DIR = Path(tempfile.gettempdir()) / f"managed-upgrade-e2e-celery-{TOKEN}"
"""Known when the module is collected: the harness parameter names it before the fixtures run."""
CUSTOMER_ID, CASE_ID = "e2e_celery", "E2E-CELERY"
SHARED_REDIS_PORT = 6379
"""The machine's own Redis, if it has one: the harness must never use it."""

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize(
        "airflow",
        [HarnessOverrides(executor="celery", customers_folder=CUSTOMERS_DIR)],
        indirect=True,
        ids=["celery"],
    ),
]


@pytest.fixture(scope="session")
def celery_customer(estate: Estate) -> Iterator[ScenarioCustomer]:
    """A scenario customer on installations of its own (installers as slow as in the scenarios)."""
    CUSTOMERS_DIR.mkdir(parents=True)
    customer = None
    try:
        customer = provision_customer(
            estate,
            CUSTOMERS_DIR,
            CUSTOMER_ID,
            CASE_ID,
            TOKEN,
            worker_queues={"prod": DEFAULT_PROD_ZONE_QUEUE},
        )
        for env in ENVIRONMENT_NAMES:
            estate.set_fault(customer.install_path(env), None, slow_seconds=INSTALLER_SECONDS)
        yield customer
    finally:
        if customer is not None:
            remove_customer(estate, customer, CUSTOMERS_DIR)
        remove_folder(CUSTOMERS_DIR)


@pytest.fixture(scope="session")
def harness_connections(celery_customer: ScenarioCustomer) -> dict[str, dict[str, Any]]:
    """The customer's config databases, for the Airflow of this module."""
    return dict(celery_customer.connections)


def test_two_celery_workers_serve_their_queues_under_their_own_hostnames(
    airflow: harness.LocalAirflow,
) -> None:
    settings = airflow.settings
    expected = {node_name("default"): [DEFAULT_QUEUE], node_name("prod-zone"): [DEFAULT_PROD_ZONE_QUEUE]}

    # `celery inspect active_queues` through the instance's own broker: both nodes, each on its queue.
    assert harness.celery_workers_online(settings) == expected
    statuses = {entry.name: entry for entry in harness.status(settings)}
    assert {name: (entry.running, entry.health) for name, entry in statuses.items()} == {
        name: (True, "healthy") for name in harness.component_names(settings)
    }
    workers = {hostname: statuses[worker_component(hostname)].pid for hostname, _ in settings.celery_workers}
    assert len(set(workers.values())) == len(workers) == 2  # a process of its own each
    for hostname, pid in workers.items():
        command = psutil.Process(pid).cmdline()
        assert command[command.index("--celery-hostname") + 1] == f"{hostname}@%h", command
    with airflow.client() as api:
        health = api.request("GET", "/api/v2/monitor/health")
    assert health["scheduler"]["status"] == "healthy", health

    # The broker is the instance's own Redis, on loopback, not the machine's shared one.
    sockets = listening_sockets(harness.running_components(settings))
    assert ("redis", "127.0.0.1", settings.redis_port) in {(name, ip, port) for name, _, ip, port in sockets}
    assert settings.redis_port != SHARED_REDIS_PORT
    assert not non_loopback(sockets), sockets
    # No log or health servers (Airflow's defaults would bind every interface on these).
    assert not {port for *_, port in sockets} & {8793, 8794, 8974}, sockets


def test_a_rehearsal_upgrade_runs_end_to_end_on_the_celery_workers(
    airflow: harness.LocalAirflow, celery_customer: ScenarioCustomer, estate: Estate
) -> None:
    started = time.monotonic()
    story = play(airflow, celery_customer, cooperative).ended()
    story_seconds = time.monotonic() - started

    assert story.run["state"] == "success", story.diagnostics
    assert story.answered_by() == {task: {user} for task, user in GATES_ANSWERED_BY.items()}, (
        story.diagnostics
    )
    for env in ENVIRONMENT_NAMES:
        version, code, status = installed(estate, celery_customer, env)
        assert (version, code, status["version"], status["ok"]) == (
            TARGET_VERSION,
            0,
            TARGET_VERSION,
            True,
        ), env

    # Every task instance that ran, of the customer run and of its sign-off questions (runs of the
    # review DAG), ran on a Celery worker consuming its queue; the hostname names that worker.
    queues_of = {node_name(hostname): set(queues) for hostname, queues in airflow.settings.celery_workers}
    with airflow.client() as api:
        instances = api.task_instances(story.dag_id, story.run_id)
        for env in ENVIRONMENT_NAMES:
            for question in story.questions[f"{env}.customer_sign_off"]:
                instances += api.task_instances(REVIEW_DAG_ID, question["task_instance"]["dag_run_id"])
        # A Celery-run task's log, read through the REST API (from the log folder the workers share).
        upgrade_log = task_log(api, story.dag_id, story.run_id, "dev.upgrade_environment")
    assert {instance["state"] for instance in instances} <= {"success", "skipped"}, story.diagnostics
    ran = [instance for instance in instances if instance["state"] == "success"]
    misplaced = [
        (instance["dag_id"], instance["task_id"], instance["hostname"], instance["queue"])
        for instance in ran
        if instance["queue"] not in queues_of.get(instance["hostname"], set())
    ]
    assert not misplaced, misplaced
    hostnames = {instance["hostname"] for instance in ran}
    assert node_name("default") in hostnames, hostnames
    # Prod sits in a network zone of its own: everything that touches it ran on the prod-zone
    # worker (each prod task; the zone's instance of every task that touches several environments),
    # and nothing else did.
    on_prod_worker = {(i["task_id"], i["map_index"]) for i in ran if i["hostname"] == node_name("prod-zone")}
    prod_tasks = {(i["task_id"], i["map_index"]) for i in ran if i["task_id"].startswith("prod.")}
    zone_instances = {
        ("preparation.stage_upgrade_files", 1),
        ("preparation.backup_configuration_files", 2),
        ("closure.verify_target_versions", 1),
    }
    assert prod_tasks and on_prod_worker == prod_tasks | zone_instances, sorted(on_prod_worker)
    # Written after the installer's deferral resumed (on a worker again): the whole try is readable.
    assert f"dev upgraded {CURRENT_VERSION} -> {TARGET_VERSION}" in upgrade_log, upgrade_log[-3000:]

    print(
        f"\ncelery deployment: up {airflow.startup_seconds:.1f} s, rehearsal upgrade {story_seconds:.1f} s, "
        f"{len(ran)} task instances on {sorted(hostnames)}"
    )
