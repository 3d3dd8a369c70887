"""The CeleryExecutor deployment, locally: one rehearsal upgrade run end to end by Celery workers.

The harness runs Airflow with the CeleryExecutor (``HarnessOverrides(executor="celery")``): a private
Redis on a free loopback port as the broker, and two Celery workers, each a process of its own with
its own Celery hostname: ``default@<machine>`` on the default queue and ``prod-zone@<machine>`` on the
production zone's queue. A scenario customer whose Prod environment sits in a network zone of its
own (``worker_queue: prod_zone``) then has its rehearsal upgrade run through every gate, each
answered by its assigned user through the REST API (the happy story of the upgrade scenarios,
imported from there), and every task instance names in its ``hostname`` the Celery worker that ran
it (the harness's workers report their node name, where Airflow's default is the machine's name).

A second customer's rehearsal upgrade then survives crashes: while it runs, components are killed
with SIGKILL (no graceful shutdown) and restarted -- the scheduler while a gate waits for its answer
and again during staging, the api-server while a gate waits (answered once it is back), the default
Celery worker while it waits for the Dev installer it just started on the host, the triggerer right
after the Dev sign-off was answered and again while UAT's installer deferral waits (both times with
the run's SLA watch in it), the default worker again while UAT's sanity test runs its cases, the
dag-processor while Prod upgrades -- the network line to UAT's host goes down in the middle of
staging (a :class:`~crm_estate.network_link.NetworkLink` slows it down so there is a middle, and
cuts it), and the ledger database goes away while UAT's backup runs (every connection cut, new ones
refused for LEDGER_OUTAGE_SECONDS, as in a restart): nothing is lost or done twice. The run
succeeds, each host ran its installer once, the release on UAT was resumed where the line dropped
and verified, UAT's sanity test ran again and left one report, each gate was answered once by its
user, each backup task made one backup, the customer got each e-mail once, and the ledger holds
every activity's events, none twice.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql
from scenario_customers import (
    CURRENT_VERSION,
    TARGET_VERSION,
    ScenarioCustomer,
    diagnostics,
    open_ledger,
    provision_customer,
    remove_customer,
    remove_folder,
    run_row,
    task_log,
    xcom,
)
from test_upgrade_scenarios import (
    DAG_PARSE_TIMEOUT,
    ENV_TITLES,
    GATES_ANSWERED_BY,
    INSTALLER_SECONDS,
    SECONDS_PER_BUSINESS_DAY,
    STORY_TIMEOUT,
    Story,
    cooperative,
    installed,
    mails_of,
    play,
    request_case_dates,
)

from airflow_local import harness
from airflow_local.celery_workers import node_name, worker_component
from airflow_local.processes import listening_sockets, non_loopback
from airflow_local.settings import DEFAULT_PROD_ZONE_QUEUE, DEFAULT_QUEUE, HarnessOverrides
from crm_estate import Estate
from crm_estate.network_link import NetworkLink
from managed_upgrade.config import ENVIRONMENT_NAMES
from managed_upgrade.dag_ids import review_dag_id_of
from managed_upgrade.operations.backup import BACKUP_ID_PATTERN, PARTIAL_SUFFIX
from managed_upgrade.operations.upgrade import UpgradePlan
from managed_upgrade.process.model import load_process_model
from managed_upgrade_airflow.operators.upgrade_environment import QUICK_FINISH_SECONDS
from upgrade_demo.autopilot import GatePolicy, drive_run

TOKEN = uuid.uuid4().hex[:8]
CUSTOMERS_DIR = Path(tempfile.gettempdir()) / f"managed-upgrade-e2e-celery-{TOKEN}"
"""Known when the module is collected: the harness parameter names it before the fixtures run."""
CUSTOMER_ID, CASE_ID = "e2e_celery", "E2E-CELERY"
SHARED_REDIS_PORT = 6379
"""The machine's own Redis, if it has one: the harness must never use it."""
CRASH_CUSTOMER_ID, CRASH_CASE_ID = "e2e_crash", "E2E-CRASH"
CRASH_INSTALLER_SECONDS = {"dev": 90, "uat": 50, "prod": INSTALLER_SECONDS}
"""Dev's installer outlasts the retry of the task whose worker was killed (so the retry finds it still
running), UAT's the killed triggerer's successor taking its trigger over (a dead triggerer's triggers
move once its heartbeat is 30 s old); Prod's is as in the scenarios."""
TASK_HEARTBEAT_TIMEOUT = 45
"""``[scheduler] task_instance_heartbeat_timeout`` of the scheduler restarted by the crash rehearsal:
Airflow's 300 s would leave a killed worker's task looking alive for five minutes before its retry.
Task processes heartbeat every 5 s; only the restarted scheduler reads it."""
CRASH_STORY_TIMEOUT = STORY_TIMEOUT + 570.0
"""The crashes add minutes (a killed worker's task is noticed after TASK_HEARTBEAT_TIMEOUT and retried
30 s later; a dead triggerer's triggers move after 30 s; restarts take tens of seconds on a loaded
machine)."""
LEDGER_OUTAGE_SECONDS = 10.0
"""How long the ledger database refuses connections in the crash rehearsal (a restart, a failover)."""
LEDGER_OUTAGE_SIGNS = ("refuses connections", "ledger unreachable")
"""What the components log when the ledger refused them (the pool's reconnect, the SLA watch)."""
PAYLOAD = "payload.tar.gz"
"""The release's big file."""
STAGING_TASK = "preparation.stage_upgrade_files"
STAGING_DEFAULT_ZONE = f"{STAGING_TASK}[0]"
"""The staging instance for the default zone's hosts (Dev and UAT; Prod's zone stages in ``[1]``)."""
UAT_LINE_BYTES_PER_SECOND = 24 * 1024
"""The slow line to UAT's host during staging: the payload (~260 KiB) takes ~11 s, a command ~1 s."""
UAT_CUT_AFTER_BYTES = 64 * 1024
"""The line drops once UAT's host holds this much of the payload."""
SCHEDULER_ENVIRON = {"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT)}
"""What a restarted scheduler runs with: a killed worker's task is noticed in seconds, not minutes."""
UAT_SLOW_CASE_SECONDS = 15
UAT_SLOW_CASE = {
    "id": "uat_batch_window",
    "title": "UAT batch window holds",
    "kind": "command",
    "argv": ["sleep", str(UAT_SLOW_CASE_SECONDS)],
    "environments": ["uat"],
    "expect": {"exit_code": 0},
}
"""A slow case of UAT's sanity test: the worker running that test is killed while it runs."""
UPSTREAM_RACE = "not in a state where it could be marked as running"
"""What Airflow 3.3.2 says when it fails a resumed deferred task (apache/airflow#71580, #72716)."""

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
def uat_link(estate: Estate) -> Iterator[NetworkLink]:
    """The network line between the workers and UAT's host in the crash rehearsal (full speed for now)."""
    with NetworkLink(estate.hosts["uat"].port) as link:
        yield link


@pytest.fixture(scope="session")
def crash_customer(
    estate: Estate, celery_customer: ScenarioCustomer, uat_link: NetworkLink
) -> Iterator[ScenarioCustomer]:
    """The crash rehearsal's customer, provisioned like the first (its config in the same folder),
    with installers slow enough to crash components while they run, and UAT reached through a line
    the rehearsal can slow down and cut."""
    customer = None
    try:
        customer = provision_customer(
            estate,
            CUSTOMERS_DIR,
            CRASH_CUSTOMER_ID,
            CRASH_CASE_ID,
            TOKEN,
            worker_queues={"prod": DEFAULT_PROD_ZONE_QUEUE},
            link_ports={"uat": uat_link.port},
            extra_test_cases=[UAT_SLOW_CASE],
            allowed_programs={"uat": ["sleep"]},
        )
        for env in ENVIRONMENT_NAMES:
            estate.set_fault(customer.install_path(env), None, slow_seconds=CRASH_INSTALLER_SECONDS[env])
        yield customer
    finally:
        if customer is not None:
            remove_customer(estate, customer, CUSTOMERS_DIR)


@pytest.fixture(scope="session")
def harness_connections(
    celery_customer: ScenarioCustomer, crash_customer: ScenarioCustomer
) -> dict[str, dict[str, Any]]:
    """Both customers' config databases, for the Airflow of this module."""
    return {**celery_customer.connections, **crash_customer.connections}


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
    # customer's review DAG), ran on a Celery worker consuming its queue; the hostname names that worker.
    queues_of = {node_name(hostname): set(queues) for hostname, queues in airflow.settings.celery_workers}
    with airflow.client() as api:
        instances = api.task_instances(story.dag_id, story.run_id)
        for env in ENVIRONMENT_NAMES:
            for question in story.questions[f"{env}.customer_sign_off"]:
                review_dag = review_dag_id_of(story.dag_id) or ""
                instances += api.task_instances(review_dag, question["task_instance"]["dag_run_id"])
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


# --- crashes: components killed (SIGKILL) and restarted while a rehearsal upgrade runs --------------


@dataclass
class Fault:
    """One component killed and restarted, and the task whose outcome shows it was survived."""

    component: str
    moment: str
    """What the run was doing when the component died."""
    task_id: str
    """The task whose outcome shows the crash was survived (``task_id[i]`` for a mapped instance)."""
    killed: bool = False
    """It was running when killed (the harness found its processes)."""
    killed_at: datetime | None = None
    down_seconds: float = 0.0
    """From the kill until it was healthy again."""
    task_done_after: float | None = None
    """From the kill until `task_id` ended (filled in after the run)."""


@dataclass
class CrashRehearsal:
    """Kills components at chosen moments of one customer's run; each comes back at once."""

    airflow: harness.LocalAirflow
    customer: ScenarioCustomer
    connections: dict[str, dict[str, Any]]
    story: Story
    uat_link: NetworkLink
    faults: list[Fault] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    """The moments (keys) whose fault was injected, each once."""
    outage: threading.Timer | None = None

    def crash(
        self, key: str, component: str, moment: str, task_id: str, environ: dict[str, str] | None = None
    ) -> None:
        """SIGKILL `component` (its process group and descendants), then start it and wait until healthy."""
        fault = Fault(component, moment, task_id)
        self.faults.append(fault)
        self.done.add(key)
        started = time.monotonic()
        fault.killed_at = datetime.now(UTC)
        fault.killed = harness.kill_component(self.airflow.settings, component)
        with pytest.MonkeyPatch.context() as patch:  # the environment the airflow fixture started it with
            for conn_id, connection in self.connections.items():
                patch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
            for name, value in (environ or {}).items():
                patch.setenv(name, value)
            harness.restart_component(self.airflow.settings, component, die_with_caller=True)
        fault.down_seconds = time.monotonic() - started

    def ledger_outage(self, moment: str, task_id: str) -> None:
        """Cut every connection to the ledger database and refuse new ones for a while, in the background."""
        fault = Fault("ledger", moment, task_id, killed=True, killed_at=datetime.now(UTC))
        self.faults.append(fault)
        self.done.add("ledger")
        dsn = self.airflow.settings.ledger_dsn
        set_ledger_connections(dsn, allowed=False)

        def back() -> None:
            set_ledger_connections(dsn, allowed=True)
            fault.down_seconds = LEDGER_OUTAGE_SECONDS

        self.outage = threading.Timer(LEDGER_OUTAGE_SECONDS, back)
        self.outage.start()

    def crashed(self, key: str) -> bool:
        return key in self.done

    def at_gate(self, component: str, environ: dict[str, str] | None = None) -> Callable[..., None]:
        """A gate decider: crash `component` while the gate waits, then give the default answer."""

        def decide(detail: dict[str, Any], round_number: int) -> None:
            task_id = detail["gate"]["task_id"]
            if round_number == 0 and not self.crashed(task_id):
                self.crash(task_id, component, f"{task_id} waits for its answer", task_id, environ)

        return decide

    def after_answer(self, gate_task_id: str, component: str) -> Callable[[Any], None]:
        """`drive_run`'s on_answer: crash `component` the moment `gate_task_id` was answered."""

        def answered(gate: Any) -> None:
            key = f"{gate_task_id} answered"
            if gate.task_id == gate_task_id and not self.crashed(key):
                self.crash(
                    key,
                    component,
                    f"right after {gate_task_id} was answered by {gate.user} (the run's SLA watch in it)",
                    gate_task_id,
                )

        return answered

    def during_staging(self, states: dict[str, str | None]) -> None:
        """The line to UAT drops mid-payload (the link cuts it itself); the scheduler dies in the retry."""
        link = self.uat_link
        if link.stats.cuts and not self.crashed("line cut"):
            self.faults.append(
                Fault(
                    "network line to UAT",
                    f"{STAGING_DEFAULT_ZONE} sending the payload to UAT, dropped with "
                    f"{UAT_CUT_AFTER_BYTES // 1024} KiB of it on the host",
                    STAGING_DEFAULT_ZONE,
                    killed=True,
                    killed_at=datetime.fromtimestamp(link.stats.last_cut_at or time.time(), UTC),
                )
            )
            self.done.add("line cut")
        if (
            self.crashed("line cut")
            and not self.crashed("staging retry")
            and states.get(STAGING_DEFAULT_ZONE) == "running"
            and link.stats.connections_since_cut  # the retry reached UAT again
        ):
            self.crash(
                "staging retry",
                "scheduler",
                f"{STAGING_DEFAULT_ZONE} retried, resuming the payload on UAT after the line dropped",
                STAGING_DEFAULT_ZONE,
                SCHEDULER_ENVIRON,
            )
        if states.get(STAGING_DEFAULT_ZONE) == "success" and link.bytes_per_second:
            link.set_rate(None)  # the line is fast again for the rest of the run

    def between_gates(self, api: Any) -> None:
        """`drive_run`'s check, once a second: crash what runs staging and the installers at their moments."""
        states = api.task_states(self.story.dag_id, self.story.run_id)
        self.during_staging(states)
        dev_jobs = installer_job_dirs(self.customer, "dev")
        worker = worker_component("default")
        dev_state = states.get("dev.upgrade_environment")
        if not self.crashed(worker) and dev_state in ("running", "deferred") and dev_jobs:
            pid_file = dev_jobs[0] / "pid"  # the job wrapper's first write
            age = time.time() - (pid_file if pid_file.exists() else dev_jobs[0]).stat().st_mtime
            window = "deferred"
            if dev_state == "running":
                window = (
                    f"in the worker's {QUICK_FINISH_SECONDS:.0f} s wait before deferring"
                    if age < QUICK_FINISH_SECONDS
                    else "still in the worker"
                )
            self.crash(
                worker,
                worker,
                f"dev.upgrade_environment {dev_state} ({window}), its installer started on the host "
                f"{age:.1f} s earlier",
                "dev.upgrade_environment",
            )
        if not self.crashed("ledger") and states.get("uat.backup_environment") == "running":
            self.ledger_outage("uat.backup_environment running", "uat.backup_environment")
        uat_state = states.get("uat.upgrade_environment")
        if (
            not self.crashed("triggerer")
            and uat_state == "deferred"
            and trigger_started(self.airflow.settings.logs_dir, self.story, "uat.upgrade_environment")
        ):
            self.crash(
                "triggerer",
                "triggerer",
                "uat.upgrade_environment deferred, the triggerer watching its installer and the SLA",
                "uat.upgrade_environment",
            )
        if not self.crashed("uat sanity test") and states.get("uat.sanity_test") == "running":
            self.crash(
                "uat sanity test",
                worker,
                f"uat.sanity_test running its cases (one takes {UAT_SLOW_CASE_SECONDS} s on the host)",
                "uat.sanity_test",
            )
        if not self.crashed("dag-processor") and states.get("prod.upgrade_environment") in (
            "running",
            "deferred",
        ):
            self.crash(
                "dag-processor",
                "dag-processor",
                f"prod.upgrade_environment {states['prod.upgrade_environment']}",
                "prod.upgrade_environment",
            )
        self.airflow.require_running()


def set_ledger_connections(dsn: str, *, allowed: bool) -> None:
    """Refuse new connections to the ledger database and cut the open ones, or allow them again."""
    name = psycopg2.extensions.parse_dsn(dsn)["dbname"]
    admin = psycopg2.connect(dsn.replace(f"dbname={name}", "dbname=postgres"))
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                    sql.Identifier(name), sql.SQL("true" if allowed else "false")
                )
            )
            if not allowed:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                )
    finally:
        admin.close()


def log_lines_with(logs_dir: Path, signs: tuple[str, ...]) -> list[str]:
    """Lines of the component and task logs containing any of ``signs``."""
    found = []
    for path in sorted(logs_dir.rglob("*.log*")):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            found += [
                f"{path.name}: {line.strip()}" for line in text.splitlines() if any(s in line for s in signs)
            ]
    return found


def installer_job_dirs(customer: ScenarioCustomer, env: str) -> list[Path]:
    """The detached installer runs on the environment's host: ``<backup>/installer-job/<job>/``."""
    backups = customer.installations[env].backup_path
    return sorted(path for path in backups.glob("*/installer-job/*") if path.is_dir())


def trigger_started(logs_dir: Path, story: Story, task_id: str) -> bool:
    """Whether a triggerer runs the task's trigger (it logs ``... starting`` beside the task's log)."""
    folder = logs_dir / f"dag_id={story.dag_id}" / f"run_id={story.run_id}" / f"task_id={task_id}"
    return any(
        "starting" in path.read_text(encoding="utf-8", errors="replace")
        for path in folder.glob("attempt=*.log.trigger.*.log")
    )


def upgrade_plan(api: Any, story: Story, env: str) -> UpgradePlan:
    """The upgrade task's plan (job folder, installer log) with the backup its run took."""
    installation = story.customer.installations[env]
    backup = xcom(api, story.dag_id, story.run_id, f"{env}.backup_environment")
    return UpgradePlan(
        str(installation.install_path),
        str(installation.staging_path),
        str(installation.backup_path),
        backup["backup_id"],
        TARGET_VERSION,
    )


def instance_of(task_key: str) -> tuple[str, int]:
    """``("task", 0)`` for ``task[0]``, ``("task", -1)`` for an unmapped task."""
    task_id, _, index = task_key.partition("[")
    return task_id, int(index.rstrip("]")) if index else -1


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def upstream_race_lines(logs_dir: Path) -> list[str]:
    """Lines of the component and task logs naming the Airflow 3.3.2 resume race."""
    return log_lines_with(logs_dir, (UPSTREAM_RACE,))


def play_with_crashes(
    airflow: harness.LocalAirflow,
    customer: ScenarioCustomer,
    connections: dict[str, dict[str, Any]],
    uat_link: NetworkLink,
) -> CrashRehearsal:
    """Ops triggers the customer's rehearsal; people answer every gate; components crash meanwhile."""
    story = Story(customer, run_id=f"e2e__{customer.customer_id}")
    rehearsal = CrashRehearsal(airflow, customer, connections, story, uat_link)
    part = customer.installations["uat"].staging_path / TARGET_VERSION / f"{PAYLOAD}.part"
    uat_link.set_rate(UAT_LINE_BYTES_PER_SECOND)
    uat_link.cut_when(lambda: part.exists() and part.stat().st_size >= UAT_CUT_AFTER_BYTES)
    with airflow.client() as api:
        policy = GatePolicy(
            {
                # restarted so that a killed worker's task is noticed in seconds, not minutes
                "initiation.respond_to_request": rehearsal.at_gate("scheduler", SCHEDULER_ENVIRON),
                # the gate is answered through the api-server that was just killed, once it is back
                "preparation.review_test_case_verification": rehearsal.at_gate("api-server"),
            }
        )
        try:
            api.wait_for_dag(customer.dag_id, timeout=DAG_PARSE_TIMEOUT)
            api.unpause(customer.dag_id)
            api.trigger(
                customer.dag_id,
                {"seconds_per_business_day": SECONDS_PER_BUSINESS_DAY, **request_case_dates(customer)},
                run_id=story.run_id,
                note="end-to-end crash rehearsal",
            )
            story.run, story.answered = drive_run(
                api,
                customer.dag_id,
                story.run_id,
                policy,
                timeout=CRASH_STORY_TIMEOUT,
                on_answer=rehearsal.after_answer("dev.customer_sign_off", "triggerer"),
                check=lambda: rehearsal.between_gates(api),
            )
            story.states = api.task_states(customer.dag_id, story.run_id)
        except Exception as error:  # reported with the run's state; the faults so far stay
            story.failure = f"{type(error).__name__}: {error}"
        finally:
            if rehearsal.outage is not None:  # the ledger is back before anything is checked
                rehearsal.outage.join()
    with airflow.client() as api:  # a fresh client: the api-server it started with was killed
        story.diagnostics = diagnostics(api, customer.dag_id, story.run_id)
    races = upstream_race_lines(airflow.settings.logs_dir)
    if races:
        story.diagnostics += "\nAirflow 3.3.2 resume race (apache/airflow#72716):\n" + "\n".join(races)
    return rehearsal


def test_a_rehearsal_upgrade_survives_components_killed_while_it_runs(
    airflow: harness.LocalAirflow,
    crash_customer: ScenarioCustomer,
    harness_connections: dict[str, dict[str, Any]],
    estate: Estate,
    smtp_sink: Any,
    uat_link: NetworkLink,
) -> None:
    customer = crash_customer
    started = time.monotonic()
    rehearsal = play_with_crashes(airflow, customer, harness_connections, uat_link)
    story_seconds = time.monotonic() - started
    story, faults = rehearsal.story, rehearsal.faults
    crashed = [fault.component for fault in faults]
    summary = "\n".join(f"  {f.component}: {f.moment} (down {f.down_seconds:.1f} s)" for f in faults)

    assert story.failure is None, f"{story.failure}\nfaults so far:\n{summary}\n{story.diagnostics}"
    assert story.run["state"] == "success", f"{summary}\n{story.diagnostics}"
    expected_faults = [
        "scheduler",
        "api-server",
        "network line to UAT",
        "scheduler",
        worker_component("default"),
        "triggerer",
        "ledger",
        "triggerer",
        worker_component("default"),
        "dag-processor",
    ]
    assert crashed == expected_faults, f"{summary}\n{story.diagnostics}"
    assert all(fault.killed for fault in faults), summary
    for env in ENVIRONMENT_NAMES:
        version, code, status = installed(estate, customer, env)
        assert (version, code, status["version"], status["ok"]) == (
            TARGET_VERSION,
            0,
            TARGET_VERSION,
            True,
        ), env

    # Every gate answered once, by its assigned user: nothing asked or answered twice.
    assert story.answered_by() == {task: {user} for task, user in GATES_ANSWERED_BY.items()}, (
        story.diagnostics
    )
    assert len(story.answered) == len(GATES_ANSWERED_BY), story.answered
    ledger_dsn = airflow.settings.ledger_dsn
    with open_ledger(ledger_dsn) as ledger:
        answers = ledger.gate_answers(story.dag_id, story.run_id)
        backups = {env: ledger.backups(customer.customer_id, env) for env in ENVIRONMENT_NAMES}
    run = run_row(ledger_dsn, story.dag_id, story.run_id)  # the run's record lost nothing either
    assert run is not None and run["finished_at"] is not None, run
    for env in ENVIRONMENT_NAMES:
        part = run["summary"]["environments"][env]
        assert (part["previous_version"], part["version"]) == (CURRENT_VERSION, TARGET_VERSION), part
        assert part["signed_off"]["by"] == GATES_ANSWERED_BY[f"{env}.customer_sign_off"], part
    # The ledger outage lost no activity event: every activity that succeeded has its events (the
    # unique key keeps each once), and something really was refused while the ledger was away.
    with open_ledger(ledger_dsn) as ledger:
        events = ledger.events(story.dag_id, story.run_id)
    finished = {event["activity_key"] for event in events if event["event"] == "finished"}
    started = {event["activity_key"] for event in events if event["event"] == "started"}
    activities = set(load_process_model().activities_by_key)
    succeeded = {task for task, state in story.states.items() if state == "success" and task in activities}
    assert succeeded - finished == set() and succeeded - started == set(), (
        succeeded - finished,
        succeeded - started,
    )
    assert log_lines_with(airflow.settings.logs_dir, LEDGER_OUTAGE_SIGNS), "nothing met the ledger outage"
    per_question = Counter((row["task_id"], row["question"]) for row in answers)
    assert [key for key, count in per_question.items() if count > 1] == [], answers
    assert {(row["task_id"], row["responded_by"]) for row in answers} == set(GATES_ANSWERED_BY.items())

    # One backup per environment per backup task (the preparation's and the one before the upgrade),
    # complete on the host, none left half-made by a retry.
    for env, rows in backups.items():
        assert len(rows) == 2, rows
        assert {(row["run_id"], row["version"]) for row in rows} == {(story.run_id, CURRENT_VERSION)}, rows
        folder = customer.installations[env].backup_path
        names = sorted(path.name for path in folder.iterdir() if path.is_dir())
        assert names == sorted(row["backup_id"] for row in rows), (env, names)
        assert all(re.fullmatch(BACKUP_ID_PATTERN, name) for name in names), names
        assert not [name for name in names if name.endswith(PARTIAL_SUFFIX)], names

    # The line to UAT dropped mid-payload: that try failed, the retry resumed the part already on the
    # host and sent nothing to Dev again, and every staged file verifies against the release.
    with airflow.client() as api:
        task_id, map_index = instance_of(STAGING_DEFAULT_ZONE)
        staging = api.task_instance(story.dag_id, story.run_id, task_id, map_index=map_index)
        staged = xcom(api, story.dag_id, story.run_id, task_id, map_index)
    release = {path.name: sha256_of(path) for path in estate.release_dir(TARGET_VERSION).iterdir()}
    outcomes = {host: report["files"] for host, report in staged["hosts"].items()}
    assert staging["try_number"] == 2, (staging, outcomes)
    assert outcomes["dev"] == dict.fromkeys(release, "skipped"), outcomes
    assert outcomes["uat"][PAYLOAD] == "resumed", outcomes
    payload_size = (estate.release_dir(TARGET_VERSION) / PAYLOAD).stat().st_size
    assert staged["hosts"]["uat"]["bytes_sent"] < payload_size, staged
    for env in ENVIRONMENT_NAMES:
        folder = customer.installations[env].staging_path / TARGET_VERSION
        assert {path.name: sha256_of(path) for path in folder.iterdir()} == release, env

    # On each host the installer ran exactly once: one detached job, one run in the installer log.
    # A retry after the crash followed (or judged) the run its killed try started.
    tries: dict[str, int] = {}
    retry_logs: dict[str, str] = {}
    with airflow.client() as api:
        for env in ENVIRONMENT_NAMES:
            plan = upgrade_plan(api, story, env)
            jobs = sorted(path.name for path in Path(plan.job_base_dir).iterdir())
            assert len(jobs) == 1, (env, jobs)
            assert installer_job_dirs(customer, env) == [Path(plan.job_base_dir) / jobs[0]], env
            runs = Path(plan.log_path).read_text(encoding="utf-8").count(f" installer {TARGET_VERSION} for ")
            assert runs == 1, (env, plan.log_path)
            instance = api.task_instance(story.dag_id, story.run_id, f"{env}.upgrade_environment")
            tries[env] = instance["try_number"]
            if tries[env] > 1:
                retry_logs[env] = task_log(
                    api, story.dag_id, story.run_id, f"{env}.upgrade_environment", tries[env]
                )
        for fault in faults:
            task_id, map_index = instance_of(fault.task_id)
            ended = api.task_instance(story.dag_id, story.run_id, task_id, map_index=map_index)["end_date"]
            if ended and fault.killed_at is not None:
                fault.task_done_after = (datetime.fromisoformat(ended) - fault.killed_at).total_seconds()
    dev_fault = next(fault for fault in faults if fault.task_id == "dev.upgrade_environment")
    if dev_fault.moment.startswith("dev.upgrade_environment running"):  # killed in the worker
        assert tries["dev"] >= 2, (tries, story.diagnostics)
    followed = {
        env: next(
            (
                verdict
                for marker, verdict in (
                    ("still runs: following it", "followed the running installer"),
                    ("ended unobserved", "judged the installer's finished run"),
                    ("nothing to do", "found the target version running"),
                )
                if marker in log
            ),
            "?",
        )
        for env, log in retry_logs.items()
    }
    assert "?" not in followed.values(), {env: log[-3000:] for env, log in retry_logs.items()}

    # The worker killed in UAT's sanity test: the scheduler noticed, the retry ran every case again
    # (the slow one included), and the ledger holds that round's report once, complete.
    with airflow.client() as api:
        sanity = api.task_instance(story.dag_id, story.run_id, "uat.sanity_test")
    with open_ledger(ledger_dsn) as ledger:
        uat_reports = ledger.test_reports(story.dag_id, story.run_id, "uat")
    assert sanity["try_number"] == 2, (sanity, story.diagnostics)
    assert [row["round"] for row in uat_reports] == [1], uat_reports
    uat_cases = {case["id"]: case["status"] for case in uat_reports[0]["report"]["results"]}
    assert uat_cases == dict.fromkeys([*(c.id for c in customer.config.test_cases)], "passed"), uat_cases
    assert UAT_SLOW_CASE["id"] in uat_cases, uat_cases

    # Every e-mail the customer gets, once.
    subjects = Counter(message["Subject"] for message in mails_of(smtp_sink, customer))
    assert [subject for subject, count in subjects.items() if count > 1] == [], subjects
    case = f"[{customer.case_id}]"
    expected = [
        "Managed Upgrade request received",
        "Platinum Service Request acknowledged - Managed Upgrade next steps",
        *(
            f"{ENV_TITLES[env]} environment upgraded to {TARGET_VERSION} - ready for your testing"
            for env in ENVIRONMENT_NAMES
        ),
        f"Managed Upgrade complete - Aurea CRM {TARGET_VERSION} on all environments",
    ]
    for part in expected:
        assert len([subject for subject in subjects if subject.startswith(case) and part in subject]) == 1, (
            part,
            subjects,
        )
    failures = [m["Subject"] for m in list(smtp_sink.messages) if m["Subject"].startswith("[Failed]")]
    assert not [subject for subject in failures if customer.config.name in subject], failures

    survived = [f for f in faults if f.killed and story.states.get(f.task_id) == "success"]
    details = "\n".join(
        f"  {f.component}: {f.moment}; back after {f.down_seconds:.1f} s, {f.task_id} succeeded "
        f"{f.task_done_after or 0:.0f} s after the kill"
        for f in faults
    )
    print(
        f"\ncrash rehearsal: {len(faults)} faults injected (SIGKILL), {len(survived)} survived; rehearsal "
        f"upgrade {story_seconds:.1f} s; upgrade tries {tries}; retries {followed}; one installer run "
        f"per host; {len(answers)} gate answers and {sum(subjects.values())} customer e-mails, none twice"
        f"\n{details}"
    )
    assert len(survived) == len(faults), summary
