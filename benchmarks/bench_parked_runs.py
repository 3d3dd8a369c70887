"""N customer runs parked at a human gate: what they cost Airflow, against the same Airflow with none.

    .venv/bin/python benchmarks/bench_parked_runs.py [--customers 200] [--executor celery|local]
        [--requests 20] [--probes 5] [--window 60] [--page-loads 5] [--rehearsal] [--parse-interval S]
        [--keep]

Writes N valid customer configs (copies of the demo customer ``include/customers/acme.yaml`` with
their own id, name, case id, connection ids and paths; checked with ``load_customer_configs``) into a
private customers folder and starts a private local Airflow (``scripts/airflow_local``: own home
under ``benchmarks/.work/parked``, free port, throwaway ledger and metadata databases; with
``--executor celery``, the default, a private Redis and the deployment's two Celery workers) serving
copies of ``dags/*.py`` and a generated one-task probe DAG. Every DAG is parsed and unpaused before
anything is measured, so both phases serve the same DAGs; an unchanged file is not parsed again
(``--parse-interval``, see :func:`parse_interval`).

* **phase A** (baseline, no runs): the Required Actions listing
  (``GET /api/v2/dags/~/dagRuns/~/hitlDetails`` with the query the UI's Required Actions page sends:
  pending, task deferred or awaiting input, 50 rows; and all pending requests paged through, as a
  client collecting every open gate does), median of ``--requests``; scheduler responsiveness: the
  probe DAG (one no-op task, through the executor and a worker) trigger -> success, median of
  ``--probes`` after one warm-up; the scheduler loop duration (every ``Ran scheduling loop in ... ms``
  line the scheduler logs at debug level, enabled for that one logger) over ``--window`` seconds,
  and each component's CPU and the databases' transactions in that window; before that window, the
  **portfolio page** (``/managed-upgrade/portfolio``) as the manager's browser loads it: Debian's
  chromium, headless, driven by Playwright, ``--page-loads`` navigations after a warm-up (navigation
  -> load event, and request -> first byte), checking it lists every customer (and, in phase B, each
  with its run).
* **phase B**: triggers one real run per customer (``--rehearsal``: rehearsal runs, 86400 s per
  business day so nothing falls due while parked) and waits until every run is parked at
  ``initiation.respond_to_request`` (its HITL request pending, the task instance ``awaiting_input``;
  nothing running, queued or scheduled), then measures the same, plus the task instances ``running``
  (worker slots used), ``awaiting_input`` and ``deferred`` (the runs' SLA watchers, in the triggerer)
  and the Celery workers' active tasks (``celery inspect active``).

The first task, ``initiation.create_request_case``, only checks the request case and writes the
ledger; no host of the estate is needed. The parked runs' SLA watchers share the triggerer's small
ledger pool; the benchmark still refuses to start when the server is short of connections and stops
waiting if it runs short (it is usually shared).

Prints a table (metric, baseline, with N parked, ratio) and ``worker slots used: <n>``; exits 1 unless
that is 0, every run's request is pending and the workers report no active task. Unless ``--keep``:
stops Airflow, drops the ledger and metadata databases it created, removes ``benchmarks/.work/parked``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
for sub in ("include", "plugins", "scripts"):
    sys.path.insert(0, str(ROOT / sub))

from airflow_local import celery_workers, harness, metadata_db  # noqa: E402
from airflow_local.browser import headless_chromium  # noqa: E402
from airflow_local.client import AirflowApiError, AirflowClient  # noqa: E402
from airflow_local.settings import HarnessOverrides, HarnessSettings  # noqa: E402
from managed_upgrade.config import load_customer_configs  # noqa: E402
from managed_upgrade.dag_ids import dag_id_for  # noqa: E402
from managed_upgrade_airflow.ledger_access import LEDGER_CONN_ID, SharedLedgers  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "parked"
TEMPLATE_CUSTOMER = ROOT / "include" / "customers" / "acme.yaml"
CUSTOMER_PREFIX = "parked"
GATE_TASK = "initiation.respond_to_request"
PROBE_DAG = "bench_parked_probe"
REHEARSAL_DAY_SECONDS = 86_400.0
"""Rehearsal speed of the parked runs: a business day as long as a real one, so nothing falls due."""
REQUIRED_ACTIONS_PAGE = 50
POLL = 0.1
"""Seconds between two looks at a probe run (its trigger -> success is what we time)."""
PROBE_TIMEOUT = 300.0
PORTFOLIO_PAGE = "/managed-upgrade/portfolio"
PAGE_VIEWER = "manager"
"""The portfolio's reader: a viewer of every customer's DAG, as the deployment's manager is."""
PAGE_TIMEOUT_MS = 180_000
NAVIGATION_TIMING = """() => {
  const n = performance.getEntriesByType("navigation")[0];
  return {total: n.loadEventEnd - n.startTime, server: n.responseStart - n.requestStart};
}"""
LOOP_LINE = re.compile(r"Ran scheduling loop in ([0-9.]+) ms")
SCHEDULER_LOGGER = "airflow.jobs.scheduler_job_runner"
STATES = ("running", "queued", "scheduled", "awaiting_input", "deferred", "failed")
SETTLE_SECONDS = 15.0
CONNECTION_MARGIN = 10
"""PostgreSQL connections kept free for the tasks on their way and other users."""
LEDGER_POOL = SharedLedgers(LEDGER_CONN_ID).size
"""Ledger connections the triggerer's SLA watchers share, however many runs are parked."""
AIRFLOW_CONNECTIONS = 15
"""PostgreSQL connections this Airflow's components hold with no run (measured: 7-13 with Celery)."""
CONNECTIONS_LOW = 5
"""Stop waiting (and so stop the runs) when the server has fewer free connections than this."""

PROBE_DAG_FILE = '''\
"""Probe of bench_parked_runs.py: one no-op task, through the executor and a worker."""

from datetime import UTC, datetime

from airflow.sdk import DAG, task

with DAG(
    dag_id={dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False,
    max_active_runs=1, default_args={{"retries": 0}},
):

    @task
    def no_op() -> None:
        return None

    no_op()
'''


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def customer_id(index: int) -> str:
    return f"{CUSTOMER_PREFIX}{index:04d}"


def write_customers(folder: Path, count: int) -> list[str]:
    """``count`` copies of the demo customer, each with its own id, name, case id, connections and paths."""
    template = TEMPLATE_CUSTOMER.read_text(encoding="utf-8")
    folder.mkdir(parents=True)
    ids = []
    for index in range(count):
        cid = customer_id(index)
        text = (
            template.replace("ACME Corporation", f"Parked Customer {index:04d} Ltd")
            .replace("ACME-1042", f"PARKED-{index:04d}")
            .replace("acme", cid)
        )
        (folder / f"{cid}.yaml").write_text(text, encoding="utf-8")
        ids.append(cid)
    configs, errors = load_customer_configs(folder)
    if errors or sorted(configs) != ids:
        problems = "\n".join(line for error in errors.values() for line in error.problems)
        raise SystemExit(
            f"generated customer configs are not all valid ({len(configs)}/{count}):\n{problems}"
        )
    return ids


# --- what Airflow is doing ------------------------------------------------------------------------


def count_task_instances(api: AirflowClient, state: str) -> int:
    page = api.request("GET", "/api/v2/dags/~/dagRuns/~/taskInstances", params={"state": [state], "limit": 1})
    return int(page["total_entries"])


def pending_hitl(api: AirflowClient, *, limit: int = 1, task_id: str | None = None) -> dict[str, Any]:
    """The Required Actions page's query: pending requests whose task is deferred or awaiting input."""
    params: dict[str, Any] = {
        "response_received": "false",
        "state": ["deferred", "awaiting_input"],
        "order_by": "-created_at",
        "limit": limit,
        "offset": 0,
    }
    if task_id is not None:
        params["task_id"] = task_id
    return api.request("GET", "/api/v2/dags/~/dagRuns/~/hitlDetails", params=params)


def all_pending_hitl(api: AirflowClient) -> int:
    """Every pending request, 100 a page, as a client collecting all open gates does."""
    return len(api.hitl_details("~", "~", pending_only=True))


def celery_active(port: int, nodes: list[str], attempts: int = 3) -> dict[str, int] | None:
    """Active tasks per Celery node (``celery inspect active``); None if a node never answered."""
    from celery import Celery

    for _ in range(attempts):
        app = Celery(broker=celery_workers.broker_url(port), set_as_current=False)
        try:
            replies = app.control.inspect(destination=nodes, timeout=2.0).active() or {}
        finally:
            app.close()
        if set(replies) >= set(nodes):
            return {node: len(replies[node]) for node in nodes}
    return None


def component_cpu(settings: HarnessSettings) -> dict[str, float]:
    """CPU seconds so far of each component: its processes' own and their reaped children's.

    Approximate: a process that ends between two readings takes the time it used since the first
    with it unless its parent (in the component) reaps it.
    """
    found: dict[str, float] = {}
    for component in harness.running_components(settings):
        process = component.psutil_process()
        if process is None:
            continue
        group = "workers" if component.name.startswith(celery_workers.WORKER_PREFIX) else component.name
        try:
            members = [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for member in members:
            try:
                times = member.cpu_times()
            except psutil.NoSuchProcess:
                continue  # ended since: its time went to its parent's children_* (or is lost)
            total = times.user + times.system + times.children_user + times.children_system
            found[group] = found.get(group, 0.0) + total
    return found


def database_commits(settings: HarnessSettings) -> dict[str, int]:
    """Transactions committed so far in the metadata and the ledger database (``pg_stat_database``)."""
    names = database_names(settings)
    connection = admin_connection(settings)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT datname, xact_commit FROM pg_stat_database WHERE datname = ANY(%s)",
                ([name for name in names.values() if name],),
            )
            commits = dict(cursor.fetchall())
    finally:
        connection.close()
    return {label: int(commits[name]) for label, name in names.items() if name in commits}


def admin_connection(settings: HarnessSettings) -> Any:
    import psycopg2
    from psycopg2.extensions import make_dsn

    connection = psycopg2.connect(make_dsn(settings.ledger_dsn, dbname="postgres"))
    connection.autocommit = True
    return connection


def database_names(settings: HarnessSettings) -> dict[str, str]:
    from psycopg2.extensions import parse_dsn

    names = {"metadata DB": parse_dsn(settings.metadata_dsn or "").get("dbname") or ""}
    names["ledger DB"] = parse_dsn(settings.ledger_dsn).get("dbname") or ""
    return names


@dataclass(frozen=True)
class Connections:
    """Client connections of the PostgreSQL server: ours per database, everyone's, and the limit."""

    ours: dict[str, int]
    total: int
    limit: int
    """``max_connections`` less ``superuser_reserved_connections``."""

    @property
    def free(self) -> int:
        return self.limit - self.total

    def describe(self) -> str:
        ours = ", ".join(f"{name} {count}" for name, count in self.ours.items())
        return f"{ours}; whole server {self.total} of {self.limit}"


def connections(settings: HarnessSettings) -> Connections:
    names = database_names(settings)
    connection = admin_connection(settings)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('max_connections')::int"
                " - current_setting('superuser_reserved_connections')::int"
            )
            (limit,) = cursor.fetchone()
            cursor.execute(
                "SELECT datname, count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " GROUP BY datname"
            )
            counts = {name: int(count) for name, count in cursor.fetchall()}
    finally:
        connection.close()
    return Connections(
        {label: counts.get(name, 0) for label, name in names.items()}, sum(counts.values()), int(limit)
    )


def scheduler_loops(log_path: Path, offset: int) -> tuple[list[float], int]:
    """Loop durations (ms) the scheduler logged after byte ``offset``; and the new offset."""
    with log_path.open("rb") as log:
        log.seek(offset)
        text = log.read()
    durations = [float(match.group(1)) for match in LOOP_LINE.finditer(text.decode(errors="replace"))]
    return durations, offset + len(text)


# --- one phase ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageLoad:
    total_ms: float
    """Navigation start -> load event end: what the person waits for."""
    server_ms: float
    """Request sent -> first byte back: the api-server building the page."""
    rows: int
    runs: int
    """Rows linking to a run's planned vs actual."""


def page_loads(base_url: str, token: str, count: int) -> list[PageLoad]:
    """The portfolio as a manager's browser loads it: Debian's chromium, headless, ``count`` fresh
    navigations after one warm-up, logged in by the UI's ``_token`` cookie."""
    loads = []
    with headless_chromium() as browser:
        context = browser.new_context(base_url=base_url)
        context.add_cookies([{"name": "_token", "value": token, "url": base_url}])
        page = context.new_page()
        for number in range(count + 1):
            response = page.goto(PORTFOLIO_PAGE, wait_until="load", timeout=PAGE_TIMEOUT_MS)
            if response is None or response.status != HTTPStatus.OK:
                raise SystemExit(f"{PORTFOLIO_PAGE}: HTTP {response.status if response else 'no response'}")
            timing = page.evaluate(NAVIGATION_TIMING)
            if number:
                loads.append(
                    PageLoad(
                        total_ms=float(timing["total"]),
                        server_ms=float(timing["server"]),
                        rows=page.locator("tr[data-row]").count(),
                        runs=page.get_by_role("link", name="planned vs actual").count(),
                    )
                )
    return loads


@dataclass
class Phase:
    page_ms: list[float] = field(default_factory=list)
    all_pending_ms: list[float] = field(default_factory=list)
    pending_seen: int = 0
    probe_s: list[float] = field(default_factory=list)
    probe_parts: list[dict[str, float]] = field(default_factory=list)
    loop_ms: list[float] = field(default_factory=list)
    window_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    celery_active: dict[str, int] | None = None
    states_at_start: dict[str, int] = field(default_factory=dict)
    celery_active_at_start: dict[str, int] | None = None
    commits: dict[str, int] = field(default_factory=dict)
    load: float = 0.0
    load_at_start: float = 0.0
    portfolio: list[PageLoad] = field(default_factory=list)


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1000, result


def seconds_between(later: str | None, earlier: str | None) -> float:
    if not later or not earlier:
        return float("nan")
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def probe_once(api: AirflowClient) -> tuple[float, dict[str, float]]:
    """Trigger the probe DAG and time trigger -> success as the client sees it; plus where it went."""
    run_id = f"probe__{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    api.trigger(PROBE_DAG, {}, run_id=run_id)
    while True:
        run = api.dag_run(PROBE_DAG, run_id)
        if run["state"] in {"success", "failed"}:
            break
        if time.monotonic() - started > PROBE_TIMEOUT:
            raise SystemExit(f"probe run {run_id} still {run['state']} after {PROBE_TIMEOUT:.0f} s")
        time.sleep(POLL)
    wall = time.monotonic() - started
    if run["state"] != "success":
        raise SystemExit(f"probe run {run_id} ended {run['state']}: {api.task_states(PROBE_DAG, run_id)}")
    (ti,) = api.task_instances(PROBE_DAG, run_id)
    parts = {
        "run created -> run started": seconds_between(run["start_date"], run["queued_at"]),
        "run started -> task ended": seconds_between(ti["end_date"], run["start_date"]),
        "task ended -> run ended": seconds_between(run["end_date"], ti["end_date"]),
    }
    return wall, parts


def measure_phase(
    api: AirflowClient, settings: HarnessSettings, args: argparse.Namespace, report: Callable[[str], None]
) -> Phase:
    phase = Phase(load_at_start=os.getloadavg()[0])
    phase.states_at_start, phase.celery_active_at_start = settled_snapshot(api, settings)
    if args.page_loads:
        phase.portfolio = page_loads(settings.base_url, api.token(PAGE_VIEWER), args.page_loads)
        report(
            f"   portfolio in chromium: median {median([p.total_ms for p in phase.portfolio]):.0f} ms "
            f"({phase.portfolio[-1].rows} customers, {phase.portfolio[-1].runs} runs)"
        )
    scheduler_log = settings.logs_dir / "scheduler.log"
    offset = scheduler_log.stat().st_size
    cpu_before, window_started = component_cpu(settings), time.monotonic()
    commits_before = database_commits(settings)
    for _ in range(2):  # warm-up: token, connections, the api-server's first query plans
        pending_hitl(api, limit=REQUIRED_ACTIONS_PAGE)
    for _ in range(args.requests):
        elapsed, page = timed(lambda: pending_hitl(api, limit=REQUIRED_ACTIONS_PAGE))
        phase.page_ms.append(elapsed)
        phase.pending_seen = int(page["total_entries"])
    for _ in range(max(3, args.requests // 4)):
        elapsed, _ = timed(lambda: all_pending_hitl(api))
        phase.all_pending_ms.append(elapsed)
    report(
        f"   Required Actions page: median {statistics.median(phase.page_ms):.0f} ms "
        f"({phase.pending_seen} pending)"
    )
    probe_once(api)  # warm-up: the worker's first task process pays for imports the others find cached
    for number in range(args.probes):
        wall, parts = probe_once(api)
        phase.probe_s.append(wall)
        phase.probe_parts.append(parts)
        report(f"   probe {number + 1}: {wall:.2f} s trigger -> success")
    rest = args.window - (time.monotonic() - window_started)
    if rest > 0:
        report(f"   {rest:.0f} s more of scheduler loops")
        time.sleep(rest)
    phase.window_s = time.monotonic() - window_started
    cpu_after = component_cpu(settings)
    phase.cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    commits_after = database_commits(settings)
    phase.commits = {name: commits_after[name] - commits_before.get(name, 0) for name in commits_after}
    phase.loop_ms, _ = scheduler_loops(scheduler_log, offset)
    phase.states, phase.celery_active = settled_snapshot(api, settings)
    phase.load = os.getloadavg()[0]
    return phase


def settled_snapshot(
    api: AirflowClient, settings: HarnessSettings
) -> tuple[dict[str, int], dict[str, int] | None]:
    """:func:`snapshot` once nothing runs, or after ``SETTLE_SECONDS``.

    A Celery task ends a moment after its task instance's state changed (the task process exits,
    then the worker reports), so the last task before a snapshot may still show as active for a
    second or two; a parked run holding a worker slot would hold it for good.
    """
    settle_until = time.monotonic() + SETTLE_SECONDS
    while True:
        states, active = snapshot(api, settings)
        busy = states["running"] + sum((active or {}).values())
        if not busy or time.monotonic() > settle_until:
            return states, active
        time.sleep(1.0)


def snapshot(api: AirflowClient, settings: HarnessSettings) -> tuple[dict[str, int], dict[str, int] | None]:
    """Task instances per state and the default pool's occupied slots; the Celery workers' active tasks."""
    states = {state: count_task_instances(api, state) for state in STATES}
    pool = api.request("GET", "/api/v2/pools/default_pool")
    states["pool slots occupied"] = int(pool["occupied_slots"])
    states |= {f"PostgreSQL connections, {name}": count for name, count in connections(settings).ours.items()}
    if not settings.celery:
        return states, None
    assert settings.redis_port is not None
    nodes = [celery_workers.node_name(hostname) for hostname, _ in settings.celery_workers]
    return states, celery_active(settings.redis_port, nodes)


# --- the runs -------------------------------------------------------------------------------------


def wait_for_dags(
    api: AirflowClient, dag_ids: set[str], timeout: float, report: Callable[[str], None]
) -> None:
    deadline, shown = time.monotonic() + timeout, -1
    while True:
        parsed = {dag["dag_id"] for dag in api.dags()} & dag_ids
        if len(parsed) != shown:
            report(f"   {len(parsed)}/{len(dag_ids)} DAGs parsed")
            shown = len(parsed)
        if parsed == dag_ids:
            return
        if time.monotonic() > deadline:
            errors = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in api.import_errors())
            raise SystemExit(f"not every DAG was parsed within {timeout:.0f} s; import errors:\n{errors}")
        time.sleep(2.0)


def check_connections(settings: HarnessSettings, runs: int, airflow_itself: int = 0) -> None:
    """Refuse to start when the PostgreSQL server has too few connections left for this Airflow.

    The parked runs' SLA watchers share the triggerer's ledger pool (``SharedLedgers``, a few
    connections however many runs park), so what is needed no longer grows with ``runs``; a server
    out of connections would fail every component (the scheduler exits) and whatever else uses it.
    """
    now = connections(settings)
    needed = LEDGER_POOL + CONNECTION_MARGIN + airflow_itself
    if now.free < needed:
        itself = f", {airflow_itself} for Airflow's components" if airflow_itself else ""
        raise SystemExit(
            f"not parking {runs} runs: they need about {needed} PostgreSQL connections ({LEDGER_POOL} for "
            f"the triggerer's ledger pool, {CONNECTION_MARGIN} for the tasks on the way{itself}), and the "
            f"server has {now.free} free ({now.describe()})."
        )


def trigger_runs(api: AirflowClient, dag_ids: list[str], conf: dict[str, Any]) -> list[float]:
    latencies = []
    for dag_id in dag_ids:
        elapsed, _ = timed(lambda dag_id=dag_id: api.trigger(dag_id, conf, note="bench_parked_runs.py"))
        latencies.append(elapsed)
    return latencies


def wait_until_parked(
    api: AirflowClient,
    running: harness.LocalAirflow,
    count: int,
    timeout: float,
    report: Callable[[str], None],
) -> None:
    """Every run's gate pending (HITL request, task awaiting input); nothing running, queued or scheduled."""
    deadline, last = time.monotonic() + timeout, ""
    while True:
        try:
            running.require_running()
        except harness.HarnessError as error:
            raise SystemExit(f"{error}\nPostgreSQL: {connections(running.settings).describe()}") from None
        now = connections(running.settings)
        if now.free < CONNECTIONS_LOW:
            raise SystemExit(
                f"stopping: the PostgreSQL server is running out of connections ({now.describe()})"
            )
        parked = int(pending_hitl(api, task_id=GATE_TASK)["total_entries"])
        states = {state: count_task_instances(api, state) for state in STATES}
        line = f"   parked {parked}/{count}; " + ", ".join(f"{k} {v}" for k, v in states.items())
        line += f"; ledger connections {now.ours.get('ledger DB', 0)}"
        if line != last:
            report(line)
            last = line
        if states["failed"]:
            raise SystemExit(failure_report(api))
        if parked == count and states["running"] == states["queued"] == states["scheduled"] == 0:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"runs not parked within {timeout:.0f} s: {line}")
        time.sleep(2.0)


def failure_report(api: AirflowClient) -> str:
    page = api.request(
        "GET", "/api/v2/dags/~/dagRuns/~/taskInstances", params={"state": ["failed"], "limit": 20}
    )
    lines = [f"{page['total_entries']} task instance(s) failed:"]
    for ti in page["task_instances"]:
        lines.append(f"  {ti['dag_id']} / {ti['dag_run_id']} / {ti['task_id']}")
    if page["task_instances"]:
        first = page["task_instances"][0]
        try:
            log = api.task_log(
                first["dag_id"], first["dag_run_id"], first["task_id"], max(first["try_number"], 1)
            )
            lines.append("--- last lines of the first one's log:\n" + "\n".join(log.splitlines()[-20:]))
        except AirflowApiError as error:
            lines.append(f"(log unavailable: {error})")
    return "\n".join(lines)


# --- the whole benchmark --------------------------------------------------------------------------


@contextmanager
def scheduler_debug_for_its_loop() -> Iterator[None]:
    """The scheduler logs each loop's duration at debug level: enable debug for that one logger."""
    name = "AIRFLOW__LOGGING__NAMESPACE_LEVELS"
    previous = os.environ.get(name)
    os.environ[name] = " ".join(filter(None, [previous, f"{SCHEDULER_LOGGER}=DEBUG"]))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextmanager
def parse_interval(seconds: float) -> Iterator[None]:
    """Let the dag-processor re-parse an unchanged DAG file every ``seconds`` instead of the harness's 10 s.

    The harness re-parses every file every 10 s so that edits show at once. With N customers that is
    N times the parse and serialization cost of one customer (``bench_parse.py``: ~0.15-0.2 CPU-s
    each) every 10 s, more than this machine's two cores at 200 customers, in both phases alike. The
    benchmark edits no file after the start, so by default each file is parsed once; the harness builds
    the components' whole environment, hence the value is put into what it builds.
    """
    if seconds <= 0:
        yield
        return
    original = harness.airflow_settings

    def with_interval(*arguments: Any, **keywords: Any) -> dict[str, str]:
        environment = original(*arguments, **keywords)
        environment["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] = str(int(seconds))
        return environment

    harness.airflow_settings = with_interval
    try:
        yield
    finally:
        harness.airflow_settings = original


def bench(args: argparse.Namespace, report: Callable[[str], None]) -> int:
    customers, dags = WORK / "customers", WORK / "dags"
    report(f"== {args.customers} customer configs")
    ids = write_customers(customers, args.customers)
    dags.mkdir(parents=True)
    for source in sorted((ROOT / "dags").glob("*.py")):
        shutil.copy(source, dags / source.name)
    (dags / "bench_parked_probe.py").write_text(PROBE_DAG_FILE.format(dag_id=PROBE_DAG), encoding="utf-8")

    token = uuid.uuid4().hex[:10]
    ledger_db, metadata_dbname = f"ledger_parked_{token}", f"airflow_parked_{token}"
    ledger_dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={ledger_db}"
    metadata_dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={metadata_dbname}"
    environ = {
        "AIRFLOW_LOCAL_HOME": str(WORK / "airflow-home"),
        "AIRFLOW_LOCAL_PORT": str(free_port()),
        "AIRFLOW_LOCAL_LEDGER_DSN": ledger_dsn,
        "AIRFLOW_LOCAL_METADATA_DSN": metadata_dsn,
    }
    environ |= {name: os.environ[name] for name in ("ESTATE_ROOT",) if name in os.environ}
    overrides = HarnessOverrides(dags_folder=dags, customers_folder=customers, executor=args.executor)
    settings = HarnessSettings.from_environment(overrides, environ)
    check_connections(settings, args.customers, airflow_itself=AIRFLOW_CONNECTIONS)
    keep = False
    report(f"== local Airflow ({args.executor} executor)")
    try:
        with scheduler_debug_for_its_loop(), parse_interval(args.parse_interval):
            running = harness.up(settings, report=report, die_with_caller=not args.keep)
        settings = running.settings
        with running.client() as api:
            code = measure(api, running, ids, args, report)
        keep = args.keep
        if keep:
            report(
                f"\n--keep: Airflow stays up at {settings.base_url} (home {settings.home}; users and "
                f"passwords in {settings.passwords_file}).\nStop it with "
                f"AIRFLOW_LOCAL_HOME={settings.home} AIRFLOW_LOCAL_PORT={settings.port} "
                f"scripts/airflow-local down, then drop the databases {ledger_db} and {metadata_dbname} "
                f"and remove {WORK}."
            )
        return code
    finally:
        if not keep:
            harness.down(settings)
            for throwaway in (ledger_dsn, metadata_dsn):
                metadata_db.drop_database(throwaway)


def measure(
    api: AirflowClient,
    running: harness.LocalAirflow,
    ids: list[str],
    args: argparse.Namespace,
    report: Callable[[str], None],
) -> int:
    settings = running.settings
    dag_ids = [dag_id_for(cid) for cid in ids]
    started = time.monotonic()
    wait_for_dags(api, {*dag_ids, PROBE_DAG}, timeout=max(300.0, 3.0 * len(ids)), report=report)
    for dag_id in (PROBE_DAG, *dag_ids):
        api.unpause(dag_id)
    report(f"   all DAGs parsed and unpaused after {time.monotonic() - started:.0f} s")

    report("== phase A: no runs")
    baseline = measure_phase(api, settings, args, report)

    check_connections(settings, len(dag_ids))
    conf = {"seconds_per_business_day": REHEARSAL_DAY_SECONDS} if args.rehearsal else {}
    report(f"== phase B: triggering {len(dag_ids)} runs ({'rehearsal' if args.rehearsal else 'real'})")
    triggered_at = time.monotonic()
    trigger_ms = trigger_runs(api, dag_ids, conf)
    wait_until_parked(api, running, len(dag_ids), timeout=max(900.0, 12.0 * len(ids)), report=report)
    park_seconds = time.monotonic() - triggered_at
    report(f"   all {len(dag_ids)} runs parked {park_seconds:.0f} s after the first trigger")
    parked = measure_phase(api, settings, args, report)
    return print_results(baseline, parked, len(dag_ids), trigger_ms, park_seconds, args)


def ratio(after: float, before: float) -> str:
    return f"{after / before:.2f}x" if before > 0 else "-"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p95(values: list[float]) -> float:
    if len(values) < 2:
        return median(values)
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def print_results(
    baseline: Phase,
    parked: Phase,
    count: int,
    trigger_ms: list[float],
    park_seconds: float,
    args: argparse.Namespace,
) -> int:
    title = f"with {count} parked"
    print(f"\n| metric | baseline (no runs) | {title} | ratio |")
    print("|---|---:|---:|---:|")

    def row(name: str, before: float, after: float, unit: str, digits: int = 0) -> None:
        print(f"| {name} | {before:.{digits}f} {unit} | {after:.{digits}f} {unit} | {ratio(after, before)} |")

    row(
        f"Required Actions page ({REQUIRED_ACTIONS_PAGE} rows), median of {args.requests}",
        median(baseline.page_ms),
        median(parked.page_ms),
        "ms",
    )
    row("Required Actions page, p95", p95(baseline.page_ms), p95(parked.page_ms), "ms")
    row(
        f"all pending requests, paged by 100, median of {len(parked.all_pending_ms)}",
        median(baseline.all_pending_ms),
        median(parked.all_pending_ms),
        "ms",
    )
    row(
        f"probe DAG trigger -> success, median of {args.probes}",
        median(baseline.probe_s),
        median(parked.probe_s),
        "s",
        2,
    )
    if args.page_loads:
        row(
            f"portfolio page in chromium, navigation -> load event, median of {args.page_loads}",
            median([p.total_ms for p in baseline.portfolio]),
            median([p.total_ms for p in parked.portfolio]),
            "ms",
        )
        row(
            "portfolio page, request -> first byte (api-server)",
            median([p.server_ms for p in baseline.portfolio]),
            median([p.server_ms for p in parked.portfolio]),
            "ms",
        )
        print(
            f"| portfolio rows (customers) / with a run | {baseline.portfolio[-1].rows} / "
            f"{baseline.portfolio[-1].runs} | {parked.portfolio[-1].rows} / {parked.portfolio[-1].runs} | |"
        )
    row("scheduler loop duration, median", median(baseline.loop_ms), median(parked.loop_ms), "ms", 1)
    row("scheduler loop duration, p95", p95(baseline.loop_ms), p95(parked.loop_ms), "ms", 1)
    row(
        "scheduler CPU per loop",
        1000 * baseline.cpu.get("scheduler", 0.0) / max(len(baseline.loop_ms), 1),
        1000 * parked.cpu.get("scheduler", 0.0) / max(len(parked.loop_ms), 1),
        "ms",
    )
    print(
        f"| scheduler loops in the window | {len(baseline.loop_ms)} in {baseline.window_s:.0f} s | "
        f"{len(parked.loop_ms)} in {parked.window_s:.0f} s | |"
    )
    print(f"| pending HITL requests | {baseline.pending_seen} | {parked.pending_seen} | |")
    shown = ("running", "awaiting_input", "deferred", "pool slots occupied")
    shown += tuple(state for state in parked.states if state.startswith("PostgreSQL"))
    for state in shown:
        name = state if " " in state else f"task instances `{state}`"
        print(
            f"| {name} (phase start / end) | {baseline.states_at_start[state]} / "
            f"{baseline.states[state]} | {parked.states_at_start[state]} / {parked.states[state]} | |"
        )
    if args.executor == "celery":
        print(
            f"| Celery workers' active tasks (phase start / end) | "
            f"{format_active(baseline.celery_active_at_start)} / {format_active(baseline.celery_active)} | "
            f"{format_active(parked.celery_active_at_start)} / {format_active(parked.celery_active)} | |"
        )
    print(
        f"| load average (1 min), phase start / end | {baseline.load_at_start:.1f} / {baseline.load:.1f} | "
        f"{parked.load_at_start:.1f} / {parked.load:.1f} | |"
    )

    print("\nprobe run, median seconds per step (baseline / parked):")
    for step in baseline.probe_parts[0]:
        before = median([parts[step] for parts in baseline.probe_parts])
        after = median([parts[step] for parts in parked.probe_parts])
        print(f"  {step:28} {before:6.2f} / {after:6.2f}")
    print("\nCPU of each component during the measurement window (cores busy, baseline / parked):")
    for name in sorted(set(baseline.cpu) | set(parked.cpu)):
        before = baseline.cpu.get(name, 0.0) / baseline.window_s
        after = parked.cpu.get(name, 0.0) / parked.window_s
        print(f"  {name:14} {before:5.2f} / {after:5.2f}")
    print("\ntransactions per second in the measurement window (baseline / parked):")
    for name in sorted(set(baseline.commits) | set(parked.commits)):
        before = baseline.commits.get(name, 0) / baseline.window_s
        after = parked.commits.get(name, 0) / parked.window_s
        print(f"  {name:14} {before:7.1f} / {after:7.1f}")
    print(
        f"\ntriggering {count} runs: median {median(trigger_ms):.0f} ms per API call; every run parked "
        f"{park_seconds:.0f} s after the first trigger"
    )

    # Both when the runs had just parked and after the measurements (the probes' tasks done).
    slots = max(parked.states_at_start["running"], parked.states["running"])
    print(f"\nworker slots used: {slots}")
    problems = []
    if slots:
        problems.append(f"{slots} task instance(s) running while every run is parked")
    for when, active in (("parked", parked.celery_active_at_start), ("end", parked.celery_active)):
        if active is None and args.executor == "celery":
            problems.append(f"a Celery worker did not answer `inspect active` ({when})")
        elif active and sum(active.values()):
            problems.append(f"Celery workers report {sum(active.values())} active task(s) ({when})")
    if parked.pending_seen != count:
        problems.append(f"{parked.pending_seen} pending HITL requests, expected {count}")
    if args.page_loads:
        for name, phase, runs in (("baseline", baseline, 0), ("parked", parked, count)):
            shown = {(load.rows, load.runs) for load in phase.portfolio}
            if shown != {(count, runs)}:
                problems.append(
                    f"the portfolio ({name}) showed (customers, runs) {shown}, expected {count}, {runs}"
                )
    for problem in problems:
        print(f"FAIL: {problem}")
    return 1 if problems else 0


def format_active(active: dict[str, int] | None) -> str:
    if active is None:
        return "no answer"
    return ", ".join(f"{node.split('@')[0]} {count}" for node, count in active.items())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=200, help="runs to park (one customer each)")
    parser.add_argument("--executor", choices=("celery", "local"), default="celery")
    parser.add_argument("--requests", type=int, default=20, help="listing requests per phase")
    parser.add_argument("--probes", type=int, default=5, help="probe DAG runs per phase")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of scheduler loops per phase")
    parser.add_argument(
        "--page-loads",
        type=int,
        default=5,
        help="portfolio page loads in headless chromium per phase, after a warm-up (0: none)",
    )
    parser.add_argument(
        "--rehearsal",
        action="store_true",
        help="trigger rehearsal runs (86400 s per business day: nothing falls due, but every SLA watcher "
        "polls the ledger each second) instead of real runs (SLA watchers poll every 30 s)",
    )
    parser.add_argument(
        "--parse-interval",
        type=float,
        default=86_400.0,
        help="seconds before the dag-processor parses an unchanged file again (default: once a day, "
        "i.e. once; 0: the harness's 10 s)",
    )
    parser.add_argument("--keep", action="store_true", help="leave Airflow running and its data in place")
    args = parser.parse_args()
    if args.page_loads < 0:
        parser.error("--page-loads must not be negative")
    if args.customers < 1 or args.requests < 1 or args.probes < 1:
        parser.error("--customers, --requests and --probes must be at least 1")
    return run_cleaning_up(WORK, lambda: bench(args, print), keep=args.keep)


def run_cleaning_up(
    work: Path, bench: Callable[[], int], *, keep: bool, clean_up: Callable[[], None] = lambda: None
) -> int:
    """Runs ``bench`` in a fresh ``work`` folder and, unless it finished and ``keep``, cleans up after it.

    A SIGTERM ends the benchmark like Ctrl-C: through the clean-up, not around it.
    """
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    shutil.rmtree(work, ignore_errors=True)
    started = time.monotonic()
    kept = False
    try:
        code = bench()
        kept = keep
    finally:
        if not kept:
            clean_up()
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n(benchmark took {time.monotonic() - started:.0f} s; load average {os.getloadavg()[0]:.1f})")
    return code


if __name__ == "__main__":
    sys.exit(main())
