"""Start, check and stop a complete local Airflow (api-server, scheduler, dag-processor, triggerer).

End-to-end tests and the demo need the real components: human-in-the-loop tasks only resume
when an api-server records the answer and a scheduler picks the task up again (`dag.test()`
blocks on them). Everything is bound to 127.0.0.1 and verified to be.

With the celery executor, a private Redis (the broker) and the Celery workers of the settings'
layout are components too: Redis starts first, and `up` returns once every worker answers a ping.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow_local import celery_workers, metadata_db
from airflow_local.celery_workers import REDIS, WORKER_PREFIX, worker_component
from airflow_local.client import AirflowClient
from airflow_local.environment import (
    airflow_settings,
    celery_worker_concurrency,
    celery_worker_environment,
    component_environment,
    write_env_file,
)
from airflow_local.processes import (
    STOP_GRACE_SECONDS,
    ComponentProcess,
    kill_components,
    listening_sockets,
    non_loopback,
    recorded_component,
    start_component,
    stop_components,
)
from airflow_local.settings import HarnessSettings
from airflow_local.users import all_users, ensure_passwords, read_passwords, write_fab_users

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
"""Airflow's own components, started with either executor."""
# Components whose liveness /api/v2/monitor/health reports (by its key there).
HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
LOG_TAIL_LINES = 40
POLL_SECONDS = 0.5
PARKED_TIMEOUT = 20.0
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(: .*)?$")
SUCCESSFUL_ACCESS_LINE = re.compile(r"\[http\.access\].* status_code=[23]\d\d")


class HarnessError(RuntimeError):
    """The local Airflow could not be started or is not in the expected state."""


@dataclass(frozen=True)
class LocalAirflow:
    """A running local Airflow: where it answers and who can log in."""

    settings: HarnessSettings
    passwords: dict[str, str]
    startup_seconds: float = 0.0

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def client(self) -> AirflowClient:
        """A REST client for this instance that only hands out HITL requests safe to answer."""
        return AirflowClient(self.base_url, self.passwords, hitl_settle=self.wait_until_hitl_parked)

    def log_tail(self, component: str, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.settings.logs_dir / f"{component}.log", lines)

    def require_running(self) -> None:
        """Raise HarnessError naming each component that has exited and the last error in its log.

        Waiting for a run whose scheduler died only ends at the wait's timeout, with every task
        still queued; this says at once what happened.
        """
        exited = []
        for name in component_names(self.settings):
            log_path = self.settings.logs_dir / f"{name}.log"
            component = recorded_component(self.settings.run_dir, name, log_path)
            if component is None or not component.is_running():
                exited.append(f"{name} ({last_error(log_path) or 'no error in its log'})")
        if exited:
            raise HarnessError(f"Airflow component(s) exited: {'; '.join(exited)}")

    def wait_until_hitl_parked(self, detail: dict[str, Any], timeout: float = PARKED_TIMEOUT) -> None:
        """Return once the scheduler has handled the exit of the workers that are waiting for this answer.

        Airflow 3.3.2 race: an answer that arrives before the scheduler processed the parking
        worker's exit gets the task re-queued under the same try number; the stale "success" of the
        parking worker then removes the new execution from the executor and the scheduler fails the
        task ("finished with state success, but the task instance's state attribute is queued").
        People never answer that fast; tests do. The scheduler logs one "TaskInstance Finished" line
        per handled executor event; that line (or `timeout`, long after the window) makes it safe.
        A review question has two waiting workers: its own HITL task, parked, and the customer
        run's task that asked it, deferred until the question's run ends -- answered too early, that
        task resumes into the same race. So for question ``n`` the asking task's ``n``-th deferral
        must have been handled too.
        """
        instance = detail["task_instance"]
        waits = [
            (
                (
                    "TaskInstance Finished:",
                    f"ti_id={instance['id']},",
                    "state=awaiting_input,",
                    f"try_number={instance['try_number']},",
                ),
                1,
            )
        ]
        gate = detail.get("gate") or {}
        if gate.get("question"):
            asking = (
                "TaskInstance Finished:",
                f"dag_id={gate['dag_id']},",
                f"task_id={gate['task_id']},",
                f"run_id={gate['run_id']},",
                "state=deferred,",
            )
            waits.append((asking, int(gate["question"])))
        scheduler_log = self.settings.logs_dir / "scheduler.log"
        deadline = time.monotonic() + timeout
        seen = [0] * len(waits)
        with scheduler_log.open(encoding="utf-8", errors="replace") as log:
            while time.monotonic() < deadline:
                for line in log:
                    for index, (markers, _) in enumerate(waits):
                        if all(marker in line for marker in markers):
                            seen[index] += 1
                if all(count >= needed for count, (_, needed) in zip(seen, waits, strict=True)):
                    return
                time.sleep(POLL_SECONDS / 2)
        print(
            f"airflow-local: no scheduler record of {instance['task_id']} (and the task asking it) waiting "
            f"within {timeout:.0f} s; answering anyway",
            file=sys.stderr,
        )


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    health: str | None  # /monitor/health's verdict, or Redis PING / Celery ping answered; None: no answer


def component_names(settings: HarnessSettings) -> tuple[str, ...]:
    """The components of the instance: Airflow's, and with celery the broker and each worker."""
    if not settings.celery:
        return COMPONENTS
    return (*COMPONENTS, REDIS, *(worker_component(hostname) for hostname, _ in settings.celery_workers))


def component_argv(settings: HarnessSettings, name: str) -> list[str]:
    """The command of each component; every one bound to loopback or serving nothing at all."""
    if name == REDIS:
        if settings.redis_port is None:
            raise HarnessError("the celery executor's Redis port is not chosen yet (`up` chooses it)")
        try:
            return celery_workers.redis_argv(settings.redis_port, settings.redis_dir)
        except FileNotFoundError as error:
            raise HarnessError(str(error)) from None
    if name.startswith(WORKER_PREFIX):
        return _worker_argv(settings, name)
    arguments = {
        "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(settings.port), "--workers", "1"],
        # Without --skip-serve-logs both start a log server on 0.0.0.0 (8793/8794). Task logs are
        # local files here, which the api-server reads directly.
        "scheduler": ["scheduler", "--skip-serve-logs"],
        "dag-processor": ["dag-processor"],
        "triggerer": ["triggerer", "--skip-serve-logs"],
    }[name]
    return [sys.executable, "-m", "airflow", *arguments]


def _worker_argv(settings: HarnessSettings, name: str) -> list[str]:
    queues = dict(settings.celery_workers).get(name.removeprefix(WORKER_PREFIX))
    if queues is None:
        raise HarnessError(f"no Celery worker {name!r} in the settings' layout {settings.celery_workers}")
    return [
        sys.executable,
        "-m",
        "airflow",
        "celery",
        "worker",
        "--celery-hostname",
        f"{name.removeprefix(WORKER_PREFIX)}@%h",
        "--queues",
        ",".join(queues),
        "--concurrency",
        str(celery_worker_concurrency(settings)),
        # Airflow's log server binds every interface (no host setting in 3.3.2); the api-server
        # reads the workers' task logs from the log folder they share with it, as for the scheduler.
        "--skip-serve-logs",
        # Workers need not know each other: no start-up sync and no heartbeat events between them.
        "--without-mingle",
        "--without-gossip",
    ]


def with_broker_port(settings: HarnessSettings, *, choose: bool = False) -> HarnessSettings:
    """`settings` with the Redis port of the home (celery only); `choose`: a new free port, recorded.

    `up` chooses it; `status`, `restart` and the env file of a running instance use the recorded one.
    """
    if not settings.celery or settings.redis_port is not None:
        return settings
    if choose:
        port = _free_port()
        settings.redis_dir.mkdir(parents=True, exist_ok=True)
        settings.redis_port_file.write_text(f"{port}\n", encoding="utf-8")
        return dataclasses.replace(settings, redis_port=port)
    port = _recorded_broker_port(settings)
    return settings if port is None else dataclasses.replace(settings, redis_port=port)


def prepare(settings: HarnessSettings) -> tuple[dict[str, str], dict[str, str]]:
    """Write passwords and the env file; return (Airflow environment, passwords)."""
    for folder in (settings.home, settings.logs_dir, settings.run_dir):
        folder.mkdir(parents=True, exist_ok=True)
    users = all_users(settings)
    passwords = ensure_passwords(settings.passwords_file, users)
    environment = airflow_settings(settings, users)
    write_env_file(settings.env_file, environment)
    if settings.fab:
        write_fab_users(settings, passwords)
    return environment, passwords


def prepare_ledger(settings: HarnessSettings) -> None:
    """Create (if needed) and migrate the project ledger the tasks write to."""
    import psycopg2

    from managed_upgrade.ledger import ensure_database, migrate

    try:
        ensure_database(settings.ledger_dsn)
        connection = psycopg2.connect(settings.ledger_dsn)
    except psycopg2.Error as error:
        raise HarnessError(f"ledger database {settings.ledger_dsn!r} is not usable: {error}") from error
    try:
        migrate(connection)
    finally:
        connection.close()


def migrate_database(settings: HarnessSettings, environment: dict[str, str]) -> None:
    """A migrated metadata database for the instance, copied from one migrated earlier where possible."""

    def migrate() -> None:
        log_path = settings.logs_dir / "db-migrate.log"
        with log_path.open("wb") as log:
            result = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                env=component_environment(environment),
                cwd=settings.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            raise HarnessError(f"airflow db migrate failed (exit {result.returncode}):\n{log_tail(log_path)}")

    try:
        metadata_db.prepare(settings, migrate)
    except metadata_db.MetadataDatabaseError as error:
        raise HarnessError(str(error)) from error


def sync_access_roles(settings: HarnessSettings, environment: dict[str, str]) -> None:
    """FAB only: the customer roles from the configs, and every user with its password and roles.

    Runs before any component starts: the dag-processor refuses a DAG whose `access_control` names a
    role FAB does not have. The product's own sync (`managed_upgrade_airflow.access_control`), as the
    compose deployment's airflow-init runs it; its warnings are in `<home>/logs/access-roles.log`.
    """
    log_path = settings.logs_dir / "access-roles.log"
    command = [
        sys.executable,
        "-m",
        "managed_upgrade_airflow.access_control",
        "sync",
        "--customers",
        str(settings.customers_folder),
        "--users",
        str(settings.fab_users_file),
    ]
    with log_path.open("wb") as log:
        result = subprocess.run(
            command,
            env=component_environment(environment),
            cwd=settings.home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise HarnessError(
            f"the FAB access roles sync failed (exit {result.returncode}):\n{log_tail(log_path)}"
        )


def up(
    settings: HarnessSettings, report: Callable[[str], None] = print, *, die_with_caller: bool = False
) -> LocalAirflow:
    """Start every component (or confirm they run) and wait until all of them are healthy.

    `die_with_caller`: the components stop when the calling process dies (test sessions).
    """
    started_at = time.monotonic()
    statuses = status(settings)
    wanted = component_names(settings)
    if all(entry.running for entry in statuses) and {entry.name for entry in statuses} == set(wanted):
        report(f"already running at {settings.base_url}")
        return LocalAirflow(with_broker_port(settings), read_passwords(settings.passwords_file))
    if any(entry.running for entry in statuses):
        report("some components run, others do not (or another executor's): stopping them to start cleanly")
        down(settings)
    _require_free_port(settings.port)

    settings = with_broker_port(settings, choose=True)
    environment, passwords = prepare(settings)
    prepare_ledger(settings)
    migrate_database(settings, environment)
    if settings.fab:
        sync_access_roles(settings, environment)
    heartbeat_floor = datetime.now(UTC) - timedelta(seconds=1)
    components: list[ComponentProcess] = []
    try:
        if settings.celery:
            # The broker first: the scheduler and the workers connect to it as they start.
            components += _start(settings, (REDIS,), environment, die_with_caller)
            _wait_until_healthy(settings, components, heartbeat_floor, names=(REDIS,))
        others = tuple(name for name in wanted if name != REDIS)
        components += _start(settings, others, environment, die_with_caller)
        _wait_until_healthy(settings, components, heartbeat_floor, names=wanted)
        exposed = non_loopback(listening_sockets(components))
        if exposed:
            raise HarnessError(f"components listen on non-loopback addresses: {exposed}")
    except BaseException:
        down(settings)
        raise
    elapsed = time.monotonic() - started_at
    report(f"Airflow is up at {settings.base_url} ({elapsed:.1f} s); home {settings.home}")
    return LocalAirflow(settings, passwords, startup_seconds=elapsed)


def restart(
    settings: HarnessSettings,
    components: tuple[str, ...],
    *,
    kill: bool = False,
    die_with_caller: bool = False,
) -> None:
    """Stop the named running components and start them again, waiting until they are healthy.

    Rehearses an operator's restart (or, with `kill`, a crash: SIGKILL at once, no graceful shutdown)
    while runs are in flight. The components get this process's environment again, so a caller that
    added Airflow connections to it for `up` must add them again around this call.
    """
    settings = with_broker_port(settings)
    _require_known(settings, components)
    recorded = [recorded_component(settings.run_dir, n, settings.logs_dir / f"{n}.log") for n in components]
    grace = 0.0 if kill else STOP_GRACE_SECONDS
    stop_components(settings.run_dir, [c for c in recorded if c is not None], grace=grace)
    environment = airflow_settings(settings, all_users(settings))
    heartbeat_floor = datetime.now(UTC) - timedelta(seconds=1)
    started = _start(settings, components, environment, die_with_caller)
    _wait_until_healthy(settings, started, heartbeat_floor, names=components)


def kill_component(settings: HarnessSettings, name: str) -> bool:
    """Crash one component: SIGKILL its process group and every descendant, no graceful shutdown.

    Returns whether it was running. It stays down until `restart_component` starts it again, so a
    test can act while it is gone (what a crash leaves behind is the component's to clean up).
    """
    settings = with_broker_port(settings)
    _require_known(settings, (name,))
    component = recorded_component(settings.run_dir, name, settings.logs_dir / f"{name}.log")
    return bool(kill_components(settings.run_dir, [component] if component is not None else []))


def restart_component(
    settings: HarnessSettings, name: str, *, die_with_caller: bool = False
) -> ComponentProcess:
    """Start a component that no longer runs (killed, or exited) and wait until it is healthy again.

    Like `restart`, it gets this process's environment plus the instance's settings, so a caller that
    added Airflow connections for `up` must add them again around this call. Its sockets must be on
    loopback, as `up` requires; otherwise it is stopped again and HarnessError says what it bound.
    """
    settings = with_broker_port(settings)
    _require_known(settings, (name,))
    existing = recorded_component(settings.run_dir, name, settings.logs_dir / f"{name}.log")
    if existing is not None and existing.is_running():
        raise HarnessError(f"{name} still runs (pid {existing.pid}); kill or stop it first")
    environment = airflow_settings(settings, all_users(settings))
    heartbeat_floor = datetime.now(UTC) - timedelta(seconds=1)
    started = _start(settings, (name,), environment, die_with_caller)
    try:
        _wait_until_healthy(settings, started, heartbeat_floor, names=(name,))
        exposed = non_loopback(listening_sockets(started))
        if exposed:
            raise HarnessError(f"{name} listens on non-loopback addresses: {exposed}")
    except BaseException:
        stop_components(settings.run_dir, started)
        raise
    return started[0]


def _require_known(settings: HarnessSettings, components: tuple[str, ...]) -> None:
    known = component_names(settings)
    unknown = sorted(set(components) - set(known))
    if unknown:
        raise HarnessError(f"unknown component(s) {unknown}; choose from {', '.join(known)}")


def _start(
    settings: HarnessSettings, names: tuple[str, ...], environment: dict[str, str], die_with_caller: bool
) -> list[ComponentProcess]:
    """Start the named components with the Airflow `environment` on top of this process's.

    A Celery worker also gets its own node name (which its task instances report as hostname).
    """
    process_environment = component_environment(environment)
    started = []
    for name in names:
        own = process_environment
        if name.startswith(WORKER_PREFIX):
            own = process_environment | celery_worker_environment(name.removeprefix(WORKER_PREFIX))
        started.append(
            start_component(
                name,
                component_argv(settings, name),
                own,
                settings.logs_dir / f"{name}.log",
                settings.run_dir,
                settings.home,
                die_with_caller=die_with_caller,
            )
        )
    return started


def known_components(settings: HarnessSettings) -> tuple[str, ...]:
    """The settings' components, then any other this home recorded (started with another executor)."""
    wanted = component_names(settings)
    recorded = (
        sorted(path.stem for path in settings.run_dir.glob("*.pid")) if settings.run_dir.exists() else []
    )
    return (*wanted, *(name for name in recorded if name not in wanted))


def down(settings: HarnessSettings) -> list[str]:
    """Stop every recorded component (idempotent); return the names of those that were running.

    The broker goes last, so the workers' warm shutdown can still reach it.
    """
    found = (
        recorded_component(settings.run_dir, n, settings.logs_dir / f"{n}.log")
        for n in known_components(settings)
    )
    recorded = [component for component in found if component is not None]
    stopped = stop_components(
        settings.run_dir, [component for component in recorded if component.name != REDIS]
    )
    return stopped + stop_components(
        settings.run_dir, [component for component in recorded if component.name == REDIS]
    )


def status(settings: HarnessSettings) -> list[ComponentStatus]:
    """Process state of each component plus its health: /api/v2/monitor/health, Redis PING, Celery ping."""
    names = known_components(settings)
    recorded = {
        name: recorded_component(settings.run_dir, name, settings.logs_dir / f"{name}.log") for name in names
    }
    running = {name: component is not None and component.is_running() for name, component in recorded.items()}
    health = _health(settings.port)
    port = _recorded_broker_port(settings)
    broker_up = port is not None and running.get(REDIS, False) and celery_workers.redis_answers(port)
    workers = [name for name in names if name.startswith(WORKER_PREFIX) and running[name]]
    answering = _workers_answering(port, workers) if broker_up else set()
    statuses = []
    for name in names:
        component = recorded[name]
        if name == "api-server":
            verdict = "healthy" if running[name] and health is not None else None
        elif name in HEALTH_KEYS:
            verdict = (health or {}).get(HEALTH_KEYS[name], {}).get("status")
        elif name == REDIS:
            verdict = "healthy" if broker_up else None
        else:
            verdict = "healthy" if name in answering else None
        statuses.append(ComponentStatus(name, component.pid if component else None, running[name], verdict))
    return statuses


def running_components(settings: HarnessSettings) -> list[ComponentProcess]:
    names = known_components(settings)
    found = (recorded_component(settings.run_dir, n, settings.logs_dir / f"{n}.log") for n in names)
    return [component for component in found if component is not None and component.is_running()]


def celery_workers_online(settings: HarnessSettings) -> dict[str, list[str]]:
    """Celery nodes answering through this instance's broker, with their queues (`celery inspect`)."""
    port = _recorded_broker_port(settings)
    if port is None:
        raise HarnessError(
            f"no Celery broker recorded in {settings.home} (not started with the celery executor)"
        )
    return celery_workers.active_queues(port)


def _recorded_broker_port(settings: HarnessSettings) -> int | None:
    """The settings' Redis port, else the one `up` recorded in the home (whatever the executor now)."""
    if settings.redis_port is not None:
        return settings.redis_port
    if settings.redis_port_file.exists():
        return int(settings.redis_port_file.read_text(encoding="utf-8").strip())
    return None


def _workers_answering(port: int | None, workers: list[str]) -> set[str]:
    """The worker components among `workers` whose Celery node answers a ping."""
    if port is None or not workers:
        return set()
    nodes = {celery_workers.node_name(name.removeprefix(WORKER_PREFIX)): name for name in workers}
    return {nodes[node] for node in celery_workers.nodes_answering_ping(port, list(nodes))}


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a component log, without the api-server's access lines of successful calls."""
    if not path.exists():
        return f"(no log at {path})"
    text = [
        line
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
        if not SUCCESSFUL_ACCESS_LINE.search(line)
    ][-lines:]
    return f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text)


def last_error(path: Path) -> str | None:
    """The last exception line (`module.SomeError: message`) of a component log, if any."""
    if not path.exists():
        return None
    found = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if EXCEPTION_LINE.match(line):
            found = line.strip()
    return found


def _wait_until_healthy(
    settings: HarnessSettings,
    components: list[ComponentProcess],
    heartbeat_floor: datetime,
    names: tuple[str, ...] = COMPONENTS,
) -> None:
    """Poll until each of `names` is healthy; fail on exits.

    Airflow's: the api-server answers and the others heartbeat after our start. Redis answers PING;
    each Celery worker answers a ping through it (as `celery inspect ping` does).
    """
    deadline = time.monotonic() + settings.startup_timeout
    unhealthy: list[str] = list(names)
    while time.monotonic() < deadline:
        exited = [component for component in components if not component.is_running()]
        if exited:
            tails = "\n".join(log_tail(component.log_path) for component in exited)
            exited_names = ", ".join(component.name for component in exited)
            raise HarnessError(f"{exited_names} exited during startup:\n{tails}")
        unhealthy = _unhealthy(settings, names, heartbeat_floor, unhealthy)
        if not unhealthy:
            return
        time.sleep(POLL_SECONDS)
    tails = "\n".join(log_tail(settings.logs_dir / f"{name}.log") for name in unhealthy)
    raise HarnessError(f"not healthy after {settings.startup_timeout:.0f} s: {', '.join(unhealthy)}\n{tails}")


def _unhealthy(
    settings: HarnessSettings, names: tuple[str, ...], heartbeat_floor: datetime, previous: list[str]
) -> list[str]:
    """Which of `names` are not healthy yet (Airflow's keep `previous` while the api-server is silent)."""
    unhealthy = []
    if any(name in COMPONENTS for name in names):
        health = _health(settings.port)
        if health is None:
            unhealthy += [name for name in previous if name in COMPONENTS]
        else:
            unhealthy += [
                name
                for name, key in HEALTH_KEYS.items()
                if name in names and not _fresh_and_healthy(health.get(key) or {}, key, heartbeat_floor)
            ]
    port = settings.redis_port
    broker_up = port is not None and celery_workers.redis_answers(port)
    if REDIS in names and not broker_up:
        unhealthy.append(REDIS)
    workers = [name for name in names if name.startswith(WORKER_PREFIX)]
    answering = _workers_answering(port, workers) if broker_up else set()
    unhealthy += [name for name in workers if name not in answering]
    return unhealthy


def _fresh_and_healthy(entry: dict, key: str, heartbeat_floor: datetime) -> bool:
    """Healthy by a heartbeat of the job we started, not of one left over in the database."""
    heartbeat = entry.get(f"latest_{key}_heartbeat")
    if entry.get("status") != "healthy" or not heartbeat:
        return False
    return datetime.fromisoformat(heartbeat) >= heartbeat_floor


def _health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=3) as response:
            return json.load(response)
    except (OSError, urllib.error.URLError, json.JSONDecodeError):
        return None


def _free_port() -> int:
    """A loopback port no one listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _require_free_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise HarnessError(
                f"127.0.0.1:{port} is already in use ({error.strerror}); "
                "stop what uses it or choose another port with AIRFLOW_LOCAL_PORT"
            ) from None
