"""N customers' rehearsal upgrades at once on the Celery deployment, against one upgrade alone.

    .venv/bin/python benchmarks/bench_concurrent_upgrades.py [--customers 10] [--executor celery|local]
        [--seconds-per-business-day 20] [--parse-interval 30] [--installer-seconds 0] [--keep]

Generates N + 1 customers, each with Dev, UAT and Prod installations and config databases of its
own on the simulated estate (``crm_estate.scenario_customers``, as the end-to-end scenarios do; with
the Celery executor each customer's Prod sits in the production zone, ``worker_queue: prod_zone``, as
in the deployment), and starts a private local Airflow (``scripts/airflow_local``: own home under
``benchmarks/.work/concurrent``, free port, throwaway ledger and metadata databases, own mail sink;
with ``--executor celery``, the default, a private Redis and the deployment's two Celery workers, 4
task slots each) whose customers folder holds exactly those configs; it runs copies of ``dags/*.py``
and of the code (``include``, ``plugins``, ``scripts``) taken at the start, so edits of the working
tree meanwhile do not reach the runs. Every DAG is parsed and unpaused before anything is measured.
Then, in the same Airflow:

* **one alone**: the extra customer's rehearsal upgrade (``seconds_per_business_day``; request case
  dates around today) triggered and driven to its end;
* **N at once**: the N other customers' upgrades triggered one after the other and driven at the same
  time.

One driver loop drives the runs (:class:`Driver`): per poll, about once a second, one request for the
runs' states and one for every pending question, however many runs there are; a run with a question
waiting has its gates answered in a thread of its own the way ``upgrade_demo.autopilot.drive_run``
answers them (the default answers, as the assigned users, each once the scheduler has parked it). A
request the api-server does not answer in time is asked again at the next poll, and counted.

Wall time is first trigger -> last run ended, as the client sees it (within a poll) and as Airflow
recorded it (first run queued -> last run ended). Prints per-run times, the table (one alone, N at
once, the ratio wall(N) / alone against the ideal serial ratio N), the success rate k/N, the load and
the CPU used (the whole machine's and this Airflow's per component) in each phase and, for every run
that did not succeed, its failed tasks with their log tails and whether the failure is Airflow 3.3.2's
deferred-resume race (apache/airflow#72716: a task resuming from a deferral or a human gate refused
with "TI was not in a state where it could be marked as running", found in the task logs and the
component logs). Lines of that race are also counted in runs that succeeded (a retried task survives
it), with each run's deferrals and gate parks (the resumes that can meet it) and retried tasks.

Afterwards every customer's three installations must have been upgraded exactly once: ``VERSION`` and
``bin/crm status`` at the target, one detached installer job and one installer run in the logs kept
with the backups, the installer's lock on the installation free, every migration recorded once in
the config database, which is at the target schema. Exits 1 unless every run succeeded and every
check holds. Unless ``--keep``: stops Airflow and the mail sink, drops the ledger and metadata
databases, removes the generated installations and config databases and ``benchmarks/.work/concurrent``.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import re
import shutil
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
for sub in ("include", "plugins", "scripts"):
    sys.path.insert(0, str(ROOT / sub))

from bench_parked_runs import (  # noqa: E402
    component_cpu,
    connections,
    free_port,
    median,
    parse_interval,
    run_cleaning_up,
    seconds_between,
    wait_for_dags,
)

import crm_estate  # noqa: E402
from airflow_local import harness, metadata_db  # noqa: E402
from airflow_local.client import AirflowApiError, AirflowClient  # noqa: E402
from airflow_local.settings import DEFAULT_PROD_ZONE_QUEUE, HarnessOverrides, HarnessSettings  # noqa: E402
from crm_estate.scenario_customers import (  # noqa: E402
    TARGET_VERSION,
    ScenarioCustomer,
    provision_customer,
    remove_customer,
    request_case_dates,
)
from managed_upgrade.config import ENVIRONMENT_NAMES  # noqa: E402
from managed_upgrade.dag_ids import review_dag_id_for  # noqa: E402
from managed_upgrade.operations.upgrade import UpgradePlan, installer_lock_path  # noqa: E402
from managed_upgrade.review.review_runs import review_run_suffix  # noqa: E402
from upgrade_demo import mail_sink  # noqa: E402
from upgrade_demo.autopilot import TERMINAL_RUN_STATES, GatePolicy, params_input  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "concurrent"
CUSTOMER_PREFIX = "conc"
SOLO = "solo"
DAG_PARSE_TIMEOUT = 300.0
RUN_TIMEOUT_ALONE = 900.0
RUN_TIMEOUT_PER_CONCURRENT_RUN = 240.0
"""Each run of N at once may take this much longer (N runs share 8 task slots and two cores)."""
LOG_TAIL = 20
LOAD_SAMPLE_SECONDS = 5.0
POLL_SECONDS = 1.0
"""Between two looks at the runs (the autopilot's pace)."""
TRANSIENT = (httpx.TransportError, TimeoutError)
"""An api-server too busy to answer in time (the client waits 30 s) or a dropped connection."""
RACE_SIGNS = (
    "TI was not in a state where it could be marked as running",
    "TI was not in the running state so it cannot be updated",
    "but the task instance's state attribute is",
)
"""What Airflow 3.3.2 logs when a resumed task meets its scheduler's stale view (apache/airflow#72716):
the execution API refuses the resumed task's start or its state update, or the scheduler fails a task
whose executor event contradicts its state (the human-gate variant)."""
INSTALLER_RUN = f" installer {TARGET_VERSION} for "
"""The first line of every run of the vendor installer in its log."""
DEFERRAL_SIGNS = ('"Pausing task as DEFERRED', '"Pausing task as AWAITING_INPUT')
CONNECTIONS_NEEDED = 40
"""PostgreSQL connections this Airflow and its runs may hold (components, task processes, pools)."""

# --- the customers ------------------------------------------------------------------------------


def customer_ids(count: int) -> tuple[str, list[str]]:
    """The customer upgraded alone, and the N upgraded at once (ids of one width: no id prefixes another)."""
    width = max(2, len(str(count)))
    return f"{CUSTOMER_PREFIX}_{SOLO}", [
        f"{CUSTOMER_PREFIX}_{index:0{width}d}" for index in range(1, count + 1)
    ]


def provision(
    estate: crm_estate.Estate,
    folder: Path,
    ids: list[str],
    token: str,
    celery: bool,
    installer_seconds: float,
    report: Callable[[str], None],
) -> list[ScenarioCustomer]:
    """Every customer's config in ``folder`` and its installations on the estate (a few at a time)."""
    queues = {"prod": DEFAULT_PROD_ZONE_QUEUE} if celery else None

    def one(customer_id: str) -> ScenarioCustomer:
        case_id = customer_id.upper().replace("_", "-")
        customer = provision_customer(estate, folder, customer_id, case_id, token, worker_queues=queues)
        if installer_seconds > 0:
            for env in ENVIRONMENT_NAMES:
                estate.set_fault(customer.install_path(env), None, slow_seconds=installer_seconds)
        return customer

    started = time.monotonic()
    customers: list[ScenarioCustomer] = []
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="provision") as pool:
        futures = [pool.submit(one, customer_id) for customer_id in ids]
        failure: BaseException | None = None
        for future in futures:
            try:
                customers.append(future.result())
            except BaseException as error:  # the others are kept, so that they are removed too
                failure = failure or error
    PROVISIONED.extend(customers)
    if failure is not None:
        raise failure
    report(
        f"   {len(customers)} customers x {len(ENVIRONMENT_NAMES)} installations provisioned "
        f"in {time.monotonic() - started:.0f} s"
    )
    return customers


PROVISIONED: list[ScenarioCustomer] = []
"""Every customer provisioned so far: removed at the end (unless --keep), also after a failure."""


# --- one run ------------------------------------------------------------------------------------


@dataclass
class RunResult:
    customer: ScenarioCustomer
    run_id: str
    triggered: float = 0.0
    """time.monotonic() just before the trigger request."""
    ended: float = 0.0
    """time.monotonic() when the client saw the run end (or gave up)."""
    run: dict[str, Any] = field(default_factory=dict)
    gates: int = 0
    error: str | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)
    race_lines: list[str] = field(default_factory=list)
    parks: int = 0
    """Deferrals and gate parks in the run's task logs (and its review questions'): resumes to come."""

    @property
    def state(self) -> str:
        return str(self.run.get("state") or "unknown")

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.state == "success"

    @property
    def wall(self) -> float:
        return self.ended - self.triggered

    @property
    def airflow_seconds(self) -> float:
        return seconds_between(self.run.get("end_date"), self.run.get("queued_at"))

    @property
    def retried(self) -> list[str]:
        return sorted(task_label(ti) for ti in self.tasks if (ti.get("try_number") or 0) > 1)

    @property
    def failed_tasks(self) -> list[dict[str, Any]]:
        return [ti for ti in self.tasks if ti["state"] in {"failed", "upstream_failed", "up_for_retry"}]

    @property
    def queue_wait(self) -> float:
        """Seconds the run's task instances waited queued for a worker slot (their last try)."""
        waits = (seconds_between(ti.get("start_date"), ti.get("queued_when")) for ti in self.tasks)
        return sum(wait for wait in waits if wait == wait and wait > 0)


def task_label(ti: dict[str, Any]) -> str:
    return ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else "")


def trigger(api: AirflowClient, customer: ScenarioCustomer, seconds_per_day: float, note: str) -> RunResult:
    result = RunResult(customer, f"bench__{customer.customer_id}__{uuid.uuid4().hex[:6]}")
    conf = {"seconds_per_business_day": seconds_per_day, **request_case_dates(customer)}
    result.triggered = time.monotonic()
    api.trigger(customer.dag_id, conf, run_id=result.run_id, note=note)
    return result


class Driver:
    """Drives every run to its end as one client, like an operator's dashboard: each poll (about once a
    second) is one request for the runs' states and one for all pending questions, however many runs
    there are; a run with a question waiting gets its gates answered in a thread of its own, the way
    ``upgrade_demo.autopilot.drive_run`` answers them (default answers, as the assigned users, each
    gate once the scheduler has parked it). A thread per run calling ``drive_run`` would poll the
    api-server ~3 times a second per run, and the api-server is also the task processes' execution API:
    with 20 runs its requests timed out after 30 s and every task slowed down.
    """

    def __init__(self, running: harness.LocalAirflow, report: Callable[[str], None]) -> None:
        self.running = running
        self.report = report
        self.policy = GatePolicy()
        self.rounds: Counter[tuple[str, str]] = Counter()
        self.clients = threading.local()
        self.opened: list[AirflowClient] = []
        self.lock = threading.Lock()
        self.transient_errors = 0

    def client(self) -> AirflowClient:
        """This thread's REST client (one per thread: a client caches tokens and holds a connection)."""
        api = getattr(self.clients, "api", None)
        if api is None:
            api = self.clients.api = self.running.client()
            with self.lock:
                self.opened.append(api)
        return api

    def close(self) -> None:
        for api in self.opened:
            api.close()

    def drive(self, results: list[RunResult], timeout: float) -> None:
        """Until every run has ended (or ``timeout`` seconds after it was triggered)."""
        unfinished = {(result.customer.dag_id, result.run_id): result for result in results}
        asked_in = {review_dag_id_for(r.customer.customer_id): r.customer.dag_id for r in results}
        answering: dict[tuple[str, str], Future[None]] = {}
        with ThreadPoolExecutor(max(1, len(results)), thread_name_prefix="answer") as pool:
            while unfinished:
                self.running.require_running()
                try:
                    ended = self.ended_runs(unfinished)
                    pending = self.client().hitl_details("~", "~", pending_only=True)
                except TRANSIENT as error:
                    self.transient(error)
                    continue
                for key, run in ended.items():
                    self.finish(unfinished.pop(key), run)
                # customer DAGs with a question waiting (a gate of their own or a review question)
                asking = (detail["task_instance"]["dag_id"] for detail in pending)
                waiting = {asked_in.get(dag_id, dag_id) for dag_id in asking}
                for key, result in list(unfinished.items()):
                    busy = answering.get(key)
                    if busy is not None and busy.done() and busy.exception() is not None:
                        error = busy.exception()
                        result.error = f"answering its gates: {type(error).__name__}: {error}"
                        self.finish(unfinished.pop(key), {})
                    elif key[0] in waiting and (busy is None or busy.done()):
                        answering[key] = pool.submit(self.answer, result)
                now = time.monotonic()
                for key, result in list(unfinished.items()):
                    if now - result.triggered > timeout:
                        result.error = f"TimeoutError: still running after {timeout:.0f} s"
                        self.finish(unfinished.pop(key), {})
                time.sleep(POLL_SECONDS)

    def ended_runs(
        self, unfinished: dict[tuple[str, str], RunResult]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        body = {"dag_ids": sorted({dag_id for dag_id, _ in unfinished}), "page_limit": 100}
        found = {}
        while True:
            page = self.client().request("POST", "/api/v2/dags/~/dagRuns/list", json=body)
            for run in page["dag_runs"]:
                key = (run["dag_id"], run["dag_run_id"])
                if key in unfinished and run["state"] in TERMINAL_RUN_STATES:
                    found[key] = run
            body["page_offset"] = body.get("page_offset", 0) + len(page["dag_runs"])
            if not page["dag_runs"] or body["page_offset"] >= page["total_entries"]:
                return found

    def finish(self, result: RunResult, run: dict[str, Any]) -> None:
        result.ended = time.monotonic()
        dag_id = result.customer.dag_id
        for _ in range(3):
            try:
                result.run = run or self.client().dag_run(dag_id, result.run_id)
                result.tasks = self.client().task_instances(dag_id, result.run_id)
                break
            except TRANSIENT as error:
                self.transient(error)
        self.report(f"   {result.customer.customer_id}: {result.state} after {result.wall:.1f} s")

    def answer(self, result: RunResult) -> None:
        """Answer every gate of the run that waits now (as ``drive_run`` does for each of them)."""
        api, dag_id, run_id = self.client(), result.customer.dag_id, result.run_id
        try:
            for stale in api.run_gates(dag_id, run_id):
                task_id = stale["gate"]["task_id"]
                detail = api.wait_for_pending_hitl(dag_id, run_id, task_id, timeout=120)
                answer = self.policy.answer_for(detail, self.rounds[(run_id, task_id)])
                user = answer.user or detail["assigned_users"][0]["id"]
                api.answer_gate(detail, [answer.option], params_input(detail, answer.values), user=user)
                with self.lock:
                    self.rounds[(run_id, task_id)] += 1
                    result.gates += 1
        except TRANSIENT as error:  # asked again at the next poll
            self.transient(error)
        except AirflowApiError as error:
            if error.status != HTTPStatus.CONFLICT:  # 409: answered already (a retried request went through)
                raise

    def transient(self, error: Exception) -> None:
        with self.lock:
            self.transient_errors += 1
        self.report(f"   (api-server: {type(error).__name__}: {str(error)[:200]}; asking again)")
        time.sleep(POLL_SECONDS)


# --- what the logs say --------------------------------------------------------------------------


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def run_log_folders(logs_dir: Path, result: RunResult) -> list[Path]:
    """The task log folders of the run and of its review questions (runs of the customer's review DAG)."""
    folders = [logs_dir / f"dag_id={result.customer.dag_id}" / f"run_id={result.run_id}"]
    review = logs_dir / f"dag_id={review_dag_id_for(result.customer.customer_id)}"
    suffix = review_run_suffix(result.customer.dag_id, result.run_id)
    folders += sorted(review.glob(f"run_id=*{suffix}")) if review.is_dir() else []
    return folders


def scan_logs(logs_dir: Path, results: list[RunResult]) -> None:
    """Per run: the race's lines (task logs, and component log lines naming its customer), its parks."""
    component_lines = [
        (path.name, line)
        for path in sorted(logs_dir.glob("*.log"))
        for line in read_lines(path)
        if any(sign in line for sign in RACE_SIGNS)
    ]
    for result in results:
        mentions = re.compile(rf"__{re.escape(result.customer.customer_id)}\b")
        result.race_lines = [
            f"{name}: {line.strip()}" for name, line in component_lines if mentions.search(line)
        ]
        result.parks = 0
        for folder in run_log_folders(logs_dir, result):
            for path in sorted(folder.rglob("*.log")):
                lines = read_lines(path)
                result.parks += sum(1 for line in lines if any(sign in line for sign in DEFERRAL_SIGNS))
                relative = path.relative_to(logs_dir)
                result.race_lines += [
                    f"{relative}: {line.strip()[:400]}"
                    for line in lines
                    if any(sign in line for sign in RACE_SIGNS)
                ]


def log_event(line: str) -> str:
    """A task log line (JSON) as ``timestamp level event`` plus the exception it carries."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict):
        return line
    text = f"{entry.get('timestamp', '')} {entry.get('level', '')} {entry.get('event', '')}".strip()
    for error in entry.get("error_detail") or []:
        text += f"\n    {error.get('exc_type')}: {error.get('exc_value')}"
    return text


def failure_details(logs_dir: Path, result: RunResult) -> str:
    lines = [
        f"--- {result.customer.dag_id} / {result.run_id}: {result.state}"
        + (f"; {result.error}" if result.error else "")
    ]
    unfinished = [ti for ti in result.tasks if ti["state"] not in {"success", "skipped"}]
    lines.append(
        "    not successful: " + (", ".join(f"{task_label(ti)}={ti['state']}" for ti in unfinished) or "-")
    )
    run_folder = logs_dir / f"dag_id={result.customer.dag_id}" / f"run_id={result.run_id}"
    for ti in result.failed_tasks:
        folder = run_folder / f"task_id={ti['task_id']}"
        if ti.get("map_index", -1) >= 0:
            folder /= f"map_index={ti['map_index']}"
        for attempt in sorted(folder.glob("attempt=*.log")):
            tail = [log_event(line) for line in read_lines(attempt)[-LOG_TAIL:]]
            lines.append(f"    log tail of {task_label(ti)} ({attempt.name}):")
            lines += [f"      {line}" for line in tail]
    if result.race_lines:
        lines.append("    Airflow 3.3.2 deferred-resume race (apache/airflow#72716):")
        lines += [f"      {line}" for line in result.race_lines]
    else:
        lines.append("    no line of the deferred-resume race in its task logs or the component logs")
    return "\n".join(lines)


# --- did each installation get upgraded exactly once? --------------------------------------------


def upgraded_once(estate: crm_estate.Estate, customer: ScenarioCustomer) -> list[str]:
    """Problems of the customer's installations after its upgrade (empty: each upgraded exactly once)."""
    problems = []
    for env in ENVIRONMENT_NAMES:
        installation = customer.installations[env]
        where = f"{customer.customer_id}/{env}"
        version = (installation.install_path / "VERSION").read_text(encoding="utf-8").strip()
        code, status = estate.crm_status(installation.install_path)
        if (version, code, status.get("version"), status.get("ok")) != (
            TARGET_VERSION,
            0,
            TARGET_VERSION,
            True,
        ):
            problems.append(f"{where}: VERSION {version}, crm status exit {code}: {status}")
        backups = installation.backup_path
        jobs = sorted(path for path in backups.glob("*/installer-job/*") if path.is_dir())
        if len(jobs) != 1:
            problems.append(f"{where}: {len(jobs)} installer jobs, expected 1: {[str(job) for job in jobs]}")
        logs = sorted(backups.glob(f"*/installer-{TARGET_VERSION}.log"))
        runs = sum(log.read_text(encoding="utf-8", errors="replace").count(INSTALLER_RUN) for log in logs)
        if runs != 1:
            problems.append(f"{where}: the installer ran {runs} times, expected once ({len(logs)} logs)")
        # the product's lock beside the backups (held while an installer runs) and the installer's own
        locks = [installation.install_path / "logs" / ".installer.lock"]
        if jobs:
            plan = UpgradePlan(
                str(installation.install_path),
                str(installation.staging_path),
                str(backups),
                jobs[0].parent.parent.name,  # <backup_path>/<backup id>/installer-job/<job>
                TARGET_VERSION,
            )
            locks.append(Path(installer_lock_path(plan)))
        for lock in locks:
            if lock.exists() and not lock_free(lock):
                problems.append(f"{where}: an installer still holds {lock}")
        connection = estate.pg.connect(installation.db_name)
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute(
                    "SELECT version, count(*) FROM crm_migration_history GROUP BY version HAVING count(*) > 1"
                )
                twice = cursor.fetchall()
                cursor.execute("SELECT version FROM crm_schema_version")
                schema = [row[0] for row in cursor.fetchall()]
        finally:
            connection.close()
        if twice:
            problems.append(f"{where}: migrations recorded more than once: {twice}")
        if schema != [TARGET_VERSION]:
            problems.append(f"{where}: config DB schema version {schema}, expected [{TARGET_VERSION!r}]")
    return problems


def lock_free(lock: Path) -> bool:
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
    return True


# --- what the machine did while the runs went ------------------------------------------------------


@dataclass
class Phase:
    load: list[float] = field(default_factory=list)
    """The 1-minute load average every few seconds."""
    seconds: float = 0.0
    machine_cpu: float = 0.0
    """CPU seconds the whole machine used (every process, ours and others')."""
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds of this Airflow's components (task processes under their Celery worker)."""
    transient_errors: int = 0


def busy_seconds() -> float:
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq


@contextmanager
def measured(settings: HarnessSettings, phase: Phase) -> Iterator[None]:
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            phase.load.append(os.getloadavg()[0])
            stop.wait(LOAD_SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, name="load", daemon=True)
    cpu_before, machine_before, started = component_cpu(settings), busy_seconds(), time.monotonic()
    sampler.start()
    try:
        yield
    finally:
        stop.set()
        sampler.join()
        phase.seconds = time.monotonic() - started
        phase.machine_cpu = busy_seconds() - machine_before
        cpu_after = component_cpu(settings)
        phase.cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}


def drive_all(
    running: harness.LocalAirflow,
    results: list[RunResult],
    timeout: float,
    phase: Phase,
    report: Callable[[str], None],
) -> None:
    driver = Driver(running, report)
    try:
        driver.drive(results, timeout)
    finally:
        driver.close()
        phase.transient_errors = driver.transient_errors


# --- the whole benchmark --------------------------------------------------------------------------


def bench(args: argparse.Namespace, report: Callable[[str], None]) -> int:
    report("== simulated estate")
    estate = crm_estate.Estate.load() if crm_estate.is_running() else crm_estate.up(say=report)
    estate.share_with_service_user()  # what this process writes on the hosts stays the service user's

    token = uuid.uuid4().hex[:8]
    customers_dir, dags = WORK / "customers", WORK / "dags"
    customers_dir.mkdir(parents=True)
    dags.mkdir(parents=True)
    for source in sorted((ROOT / "dags").glob("*.py")):
        shutil.copy(source, dags / source.name)
    ledger_dsn = f"host=127.0.0.1 port=5432 user=postgres dbname=ledger_concurrent_{token}"
    metadata_dsn = f"host=127.0.0.1 port=5432 user=postgres dbname=airflow_concurrent_{token}"
    smtp_port = free_port()
    environ = {
        "AIRFLOW_LOCAL_HOME": str(WORK / "airflow-home"),
        "AIRFLOW_LOCAL_PORT": str(free_port()),
        "AIRFLOW_LOCAL_SMTP_PORT": str(smtp_port),
        "AIRFLOW_LOCAL_LEDGER_DSN": ledger_dsn,
        "AIRFLOW_LOCAL_METADATA_DSN": metadata_dsn,
    }
    environ |= {name: os.environ[name] for name in ("ESTATE_ROOT",) if name in os.environ}
    overrides = HarnessOverrides(dags_folder=dags, customers_folder=customers_dir, executor=args.executor)
    settings = snapshot_code(HarnessSettings.from_environment(overrides, environ), WORK / "code")
    free = connections(settings).free
    if free < CONNECTIONS_NEEDED:
        raise SystemExit(
            f"the PostgreSQL server has {free} connections free; the benchmark needs {CONNECTIONS_NEEDED}"
        )
    solo_id, ids = customer_ids(args.customers)
    report(f"== {args.customers} + 1 customers with installations of their own")
    customers = provision(
        estate,
        customers_dir,
        [solo_id, *ids],
        token,
        args.executor == "celery",
        args.installer_seconds,
        report,
    )
    solo, many = customers[0], customers[1:]
    for customer in customers:  # Airflow's components inherit them: its env-var secrets backend serves them
        for conn_id, connection in customer.connections.items():
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(connection)

    maildir = WORK / "mail" / "maildir"
    keep = False
    report(f"== mail sink, local Airflow ({args.executor} executor)")
    mail_sink.start(maildir, smtp_port)
    try:
        with parse_interval(args.parse_interval):
            running = harness.up(settings, report=report, die_with_caller=not args.keep)
        settings = running.settings
        code = measure(running, estate, solo, many, args, report)
        keep = args.keep
        if keep:
            report(
                f"\n--keep: Airflow stays up at {settings.base_url} (home {settings.home}; users and "
                f"passwords in {settings.passwords_file}); mail in {maildir}.\nStop it with "
                f"AIRFLOW_LOCAL_HOME={settings.home} AIRFLOW_LOCAL_PORT={settings.port} "
                f"scripts/airflow-local down, stop the mail sink (pid in {maildir.parent}/mail-sink.pid), "
                f"drop the databases "
                f"{database_name(ledger_dsn)}, {database_name(metadata_dsn)} and crm_conc_*_{token}_*, "
                f"remove the estate's hosts/*/isolated/conc_*-{token} and {WORK}."
            )
        return code
    finally:
        if not keep:
            harness.down(settings)
            for throwaway in (ledger_dsn, metadata_dsn):
                metadata_db.drop_database(throwaway)
            mail_sink.stop(maildir)


def snapshot_code(settings: HarnessSettings, folder: Path) -> HarnessSettings:
    """Airflow runs a copy of the product's code as it is now (``include``, ``plugins``, ``scripts``).

    Every task process imports the plugin package again: an edit of the working tree during the
    benchmark (a half-saved file) would otherwise fail or change the runs half-way.
    """
    for part in ("include", "plugins", "scripts"):
        shutil.copytree(ROOT / part, folder / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dataclasses.replace(settings, repo_root=folder, plugins_folder=folder / "plugins")


def database_name(dsn: str) -> str:
    return dsn.rsplit("dbname=", 1)[-1]


def measure(
    running: harness.LocalAirflow,
    estate: crm_estate.Estate,
    solo: ScenarioCustomer,
    many: list[ScenarioCustomer],
    args: argparse.Namespace,
    report: Callable[[str], None],
) -> int:
    logs_dir = running.settings.logs_dir
    with running.client() as api:
        wait_for_dags(api, {customer.dag_id for customer in (solo, *many)}, DAG_PARSE_TIMEOUT, report)
        for customer in (solo, *many):
            api.unpause(customer.dag_id)

        report(f"== one alone: {solo.dag_id}")
        alone_phase = Phase()
        with measured(running.settings, alone_phase):
            alone = trigger(api, solo, args.seconds_per_business_day, "bench_concurrent_upgrades.py: alone")
            drive_all(running, [alone], RUN_TIMEOUT_ALONE, alone_phase, report)

        report(f"== {len(many)} at once")
        many_phase = Phase()
        timeout = RUN_TIMEOUT_ALONE + RUN_TIMEOUT_PER_CONCURRENT_RUN * len(many)
        with measured(running.settings, many_phase):
            note = f"bench_concurrent_upgrades.py: {len(many)} at once"
            results = [trigger(api, customer, args.seconds_per_business_day, note) for customer in many]
            report(f"   {len(many)} runs triggered; answering their gates")
            drive_all(running, results, timeout, many_phase, report)
    scan_logs(logs_dir, [alone, *results])
    report("== installations upgraded exactly once?")
    problems = {
        result.customer.customer_id: upgraded_once(estate, result.customer)
        for result in (alone, *results)
        if result.succeeded
    }
    return print_results(logs_dir, alone, results, problems, alone_phase, many_phase, args)


def print_results(
    logs_dir: Path,
    alone: RunResult,
    results: list[RunResult],
    problems: dict[str, list[str]],
    alone_phase: Phase,
    many_phase: Phase,
    args: argparse.Namespace,
) -> int:
    count = len(results)
    print(
        "\n| run | state | trigger -> end (client) | queued -> end (Airflow) | gates | task queue wait "
        "| deferrals + gate parks | retried tasks | race lines |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---:|")
    for label, result in (("alone", alone), *((f"{n + 1}/{count}", r) for n, r in enumerate(results))):
        print(
            f"| {label} {result.customer.customer_id} | {result.state} | {result.wall:.1f} s | "
            f"{result.airflow_seconds:.1f} s | {result.gates} | {result.queue_wait:.0f} s | {result.parks} | "
            f"{', '.join(result.retried) or '-'} | {len(result.race_lines)} |"
        )

    first_trigger = min(result.triggered for result in results)
    wall = max(result.ended for result in results) - first_trigger
    queued = [result.run["queued_at"] for result in results if result.run.get("queued_at")]
    ended = [result.run["end_date"] for result in results if result.run.get("end_date")]
    airflow_wall = seconds_between(max(ended), min(queued)) if ended and queued else float("nan")
    ok = [result for result in results if result.succeeded]
    walls = [result.wall for result in results]
    airflow_walls = [result.airflow_seconds for result in results]
    speed = f"{args.seconds_per_business_day:g} s per business day"
    print(f"\n| {args.executor} executor, {speed} | client | Airflow |")
    print("|---|---:|---:|")
    print(f"| one alone: trigger -> end | {alone.wall:.1f} s | {alone.airflow_seconds:.1f} s |")
    print(f"| {count} at once: first trigger -> last end (**wall**) | {wall:.1f} s | {airflow_wall:.1f} s |")
    print(f"| {count} at once, each run: min / median / max | {spread(walls)} | {spread(airflow_walls)} |")
    ratio, airflow_ratio = wall / alone.wall, airflow_wall / alone.airflow_seconds
    print(f"| **ratio wall({count}) / alone** | **{ratio:.2f}x** | {airflow_ratio:.2f}x |")
    print(f"| ideal-serial ratio ({count} one after the other) | {count}x | {count}x |")
    print(f"| throughput against one at a time | {count * alone.wall / wall:.2f}x | |")
    print(f"| **success rate** | **{len(ok)}/{count}** (alone: {int(alone.succeeded)}/1) | |")
    waits = [result.queue_wait for result in results]
    waited = f"{alone.queue_wait:.0f} s / {median(waits):.0f} s"
    print(f"| tasks' queue wait per run: alone / at once, median | {waited} | |")
    print(
        f"| load average (1 min), mean / max: alone; at once | {loads(alone_phase.load)}; "
        f"{loads(many_phase.load)} | |"
    )
    print(f"| cores busy, whole machine (2): alone; at once | {cores(alone_phase)}; {cores(many_phase)} | |")
    print(
        f"| api-server requests that failed and were asked again: alone; at once | "
        f"{alone_phase.transient_errors}; {many_phase.transient_errors} | |"
    )
    print("\nCPU of this Airflow's components, cores busy (alone / at once):")
    for name in sorted(set(alone_phase.cpu) | set(many_phase.cpu)):
        before = alone_phase.cpu.get(name, 0.0) / alone_phase.seconds
        after = many_phase.cpu.get(name, 0.0) / many_phase.seconds
        print(f"  {name:14} {before:5.2f} / {after:5.2f}")

    every = [alone, *results]
    races = sum(len(result.race_lines) for result in every)
    print(
        f"\ndeferred-resume race (apache/airflow#72716): {races} line(s) in "
        f"{sum(bool(result.race_lines) for result in every)} of {len(every)} runs; "
        f"{sum(result.parks for result in every)} deferrals and gate parks in all; "
        f"{sum(bool(result.retried) for result in every)} run(s) with retried tasks"
    )
    failed = [result for result in every if not result.succeeded]
    for result in failed:
        print(failure_details(logs_dir, result))
    for result in every:
        if result.succeeded and result.race_lines:
            print(f"--- {result.customer.customer_id} succeeded, but met the race:")
            print("\n".join(f"      {line}" for line in result.race_lines))
    clean = [customer for customer, found in problems.items() if not found]
    print(
        f"\ninstallations upgraded exactly once: {len(clean)} of {len(problems)} successful customers "
        f"(3 environments each: VERSION and crm status at {TARGET_VERSION}, one installer job and one "
        f"installer run, the locks free, every migration recorded once)"
    )
    for found in problems.values():
        for problem in found:
            print(f"FAIL: {problem}")
    if failed:
        print(f"FAIL: {len(failed)} of {len(every)} run(s) did not succeed")
    if failed or len(clean) != len(problems):
        return 1
    print("\nevery upgrade succeeded, each installation upgraded exactly once")
    return 0


def spread(values: list[float]) -> str:
    return f"{min(values):.1f} / {median(values):.1f} / {max(values):.1f} s"


def cores(phase: Phase) -> str:
    ours = sum(phase.cpu.values())
    return f"{phase.machine_cpu / phase.seconds:.2f} (this Airflow {ours / phase.seconds:.2f})"


def loads(samples: list[float]) -> str:
    return f"{mean(samples):.1f} / {max(samples, default=float('nan')):.1f}"


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def remove_provisioned(report: Callable[[str], None]) -> None:
    if not PROVISIONED:
        return
    estate = crm_estate.Estate.load()
    folder = WORK / "customers"
    for customer in PROVISIONED:
        try:
            remove_customer(estate, customer, folder)
        except Exception as error:  # the rest are still removed
            report(f"could not remove {customer.customer_id}'s installations: {error}")
    report(f"removed the {len(PROVISIONED)} customers' installations and config databases")
    PROVISIONED.clear()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=10, help="upgrades at once (one customer each)")
    parser.add_argument("--executor", choices=("celery", "local"), default="celery")
    parser.add_argument("--seconds-per-business-day", type=float, default=20.0)
    parser.add_argument(
        "--parse-interval",
        type=float,
        default=30.0,
        help="seconds before the dag-processor parses an unchanged DAG file again (default: Airflow's 30, "
        "as in the compose deployment; 0: the local harness's 10)",
    )
    parser.add_argument(
        "--installer-seconds",
        type=float,
        default=0.0,
        help="make every vendor installer run this much longer (0: as the release is; more than 15 s makes "
        "the upgrade task defer while it runs)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave Airflow, the installations and the databases in place"
    )
    args = parser.parse_args()
    if args.customers < 1:
        parser.error("--customers must be at least 1")
    return run_cleaning_up(
        WORK, lambda: bench(args, print), keep=args.keep, clean_up=lambda: remove_provisioned(print)
    )


if __name__ == "__main__":
    sys.exit(main())
