"""Where the local Airflow lives and what it serves, decided once from the environment.

Every other module of the harness takes a `HarnessSettings`; nothing else reads the
`AIRFLOW_LOCAL_*` variables, so the command line and the test fixtures agree by construction.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORT = 28080
DEFAULT_ESTATE_ROOT = "/tmp/crm-estate"  # the simulated estate's documented default root
DEFAULT_LEDGER_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=managed_upgrade_ledger"
DEFAULT_STARTUP_TIMEOUT = 180.0

# Which executor runs the tasks: Airflow's LocalExecutor, or the CeleryExecutor with a private Redis
# as its broker and Celery workers as processes of their own.
EXECUTORS = ("local", "celery")
DEFAULT_EXECUTOR = "local"
# `[operators] default_queue`: where a task that names no queue of its own goes.
DEFAULT_QUEUE = "default"
DEFAULT_PROD_ZONE_QUEUE = "prod_zone"
# Celery worker names (the part before `@<machine>`) and queue names: no separators, no `%` formats.
CELERY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

CeleryWorkers = tuple[tuple[str, tuple[str, ...]], ...]
"""(hostname, queues) of each Celery worker: `hostname` becomes its Celery node `<hostname>@<machine>`."""

# Who decides what a login may see: Airflow's simple auth manager (the demo's default: every `user`
# sees every DAG), or the FAB auth manager of a deployment (apache-airflow-providers-fab: each
# consultant sees only the DAGs of their customers, through per-customer roles).
AUTH_MANAGERS = ("simple", "fab")
DEFAULT_AUTH_MANAGER = "simple"

# Simple auth manager roles, lowest to highest (SimpleAuthManagerRole in the installed Airflow).
ROLES = ("viewer", "user", "op", "admin")
# The separators of `[core] simple_auth_manager_users` (",", ":", "|") can never be part of a name.
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class HarnessConfigError(ValueError):
    """A harness setting (environment variable or override) is unusable."""


def parse_user_spec(spec: str, origin: str) -> tuple[str, str]:
    """Split and check one `name:role` entry; `origin` names where it came from for the error."""
    name, sep, role = spec.strip().partition(":")
    if not sep or not USERNAME_PATTERN.match(name) or role.lower() not in ROLES:
        raise HarnessConfigError(
            f"{origin}: user entry {spec!r} must be name:role with name matching "
            f"{USERNAME_PATTERN.pattern} and role one of {', '.join(ROLES)}"
        )
    return name, role.lower()


@dataclass(frozen=True)
class HarnessOverrides:
    """What a caller (a test module) changes relative to the environment; hashable for pytest params."""

    dags_folder: Path | None = None
    extra_users: tuple[str, ...] = ()
    customers_folder: Path | None = None
    executor: str | None = None
    """"local" or "celery"; None: `AIRFLOW_LOCAL_EXECUTOR`, else local."""
    celery_workers: CeleryWorkers | None = None
    """The Celery workers to start; None: `default_celery_workers` (one per queue of a deployment)."""
    auth_manager: str | None = None
    """"simple" or "fab"; None: `AIRFLOW_LOCAL_AUTH_MANAGER`, else simple."""


def default_celery_workers(prod_zone_queue: str = DEFAULT_PROD_ZONE_QUEUE) -> CeleryWorkers:
    """One worker on the default queue, one on the queue of the hosts only the production zone reaches."""
    return (("default", (DEFAULT_QUEUE,)), ("prod-zone", (prod_zone_queue,)))


@dataclass(frozen=True)
class HarnessSettings:
    """Resolved settings of one local Airflow instance."""

    home: Path
    dags_folder: Path
    plugins_folder: Path
    customers_folder: Path
    port: int
    smtp_port: int | None
    estate_root: Path
    extra_users: tuple[tuple[str, str], ...] = ()
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    repo_root: Path = field(default=REPO_ROOT)
    # Where a freshly migrated metadata DB is kept and copied from (saves `db migrate` per fresh home).
    database_template_dir: Path | None = None
    # The project ledger (our own PostgreSQL database); created and migrated by `up`.
    ledger_dsn: str = DEFAULT_LEDGER_DSN
    # Airflow's metadata database: a PostgreSQL DSN, or None for a SQLite file in the home.
    metadata_dsn: str | None = None
    executor: str = DEFAULT_EXECUTOR
    prod_zone_queue: str = DEFAULT_PROD_ZONE_QUEUE
    celery_workers: CeleryWorkers = field(default_factory=default_celery_workers)
    # The Celery broker's loopback port: chosen free by `up` and kept in the home (None: not chosen yet).
    redis_port: int | None = None
    auth_manager: str = DEFAULT_AUTH_MANAGER

    def __post_init__(self) -> None:
        if self.auth_manager not in AUTH_MANAGERS:
            raise HarnessConfigError(
                f"auth manager {self.auth_manager!r} (AIRFLOW_LOCAL_AUTH_MANAGER or --auth-manager) must be "
                f"one of {', '.join(AUTH_MANAGERS)}"
            )
        if self.executor not in EXECUTORS:
            raise HarnessConfigError(
                f"executor {self.executor!r} (AIRFLOW_LOCAL_EXECUTOR or --executor) must be one of "
                f"{', '.join(EXECUTORS)}"
            )
        if self.executor == "celery" and self.metadata_dsn is None:
            raise HarnessConfigError(
                "the celery executor needs a PostgreSQL metadata database: set AIRFLOW_LOCAL_METADATA_DSN "
                "(workers, scheduler and api-server share it, and it is Celery's result backend; "
                "SQLite is one local file)"
            )
        _check_celery_workers(self.celery_workers)

    @property
    def celery(self) -> bool:
        return self.executor == "celery"

    @property
    def fab(self) -> bool:
        """Whether the FAB auth manager (per-customer roles) decides access instead of the simple one."""
        return self.auth_manager == "fab"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def run_dir(self) -> Path:
        """Pid files of the running components."""
        return self.home / "run"

    @property
    def logs_dir(self) -> Path:
        """Component logs (`<component>.log`); Airflow's task logs go below it as well."""
        return self.home / "logs"

    @property
    def env_file(self) -> Path:
        return self.home / "airflow.env"

    @property
    def passwords_file(self) -> Path:
        return self.home / "passwords.json"

    @property
    def fab_users_file(self) -> Path:
        """The FAB users to create at start-up, with their passwords and roles (owner-only)."""
        return self.home / "fab-users.json"

    @property
    def secrets_file(self) -> Path:
        return self.home / "secrets.json"

    @property
    def database_file(self) -> Path:
        return self.home / "airflow.db"

    @property
    def redis_dir(self) -> Path:
        """The private Redis's working directory (it persists nothing: no snapshots, no append-only file)."""
        return self.home / "redis"

    @property
    def redis_port_file(self) -> Path:
        return self.redis_dir / "port"

    @classmethod
    def from_environment(
        cls, overrides: HarnessOverrides | None = None, environ: Mapping[str, str] | None = None
    ) -> HarnessSettings:
        """Read `AIRFLOW_LOCAL_*`, `ESTATE_ROOT`; `overrides` win over the environment."""
        env = os.environ if environ is None else environ
        overrides = overrides or HarnessOverrides()
        home = Path(env.get("AIRFLOW_LOCAL_HOME") or REPO_ROOT / ".airflow")
        dags = overrides.dags_folder or Path(env.get("AIRFLOW_LOCAL_DAGS") or REPO_ROOT / "dags")
        user_specs = [s for s in env.get("AIRFLOW_LOCAL_EXTRA_USERS", "").split(",") if s.strip()]
        users = tuple(parse_user_spec(s, "AIRFLOW_LOCAL_EXTRA_USERS") for s in user_specs) + tuple(
            parse_user_spec(s, "HarnessOverrides.extra_users") for s in overrides.extra_users
        )
        executor = (
            (overrides.executor or env.get("AIRFLOW_LOCAL_EXECUTOR") or DEFAULT_EXECUTOR).strip().lower()
        )
        auth_manager = (
            (overrides.auth_manager or env.get("AIRFLOW_LOCAL_AUTH_MANAGER") or DEFAULT_AUTH_MANAGER)
            .strip()
            .lower()
        )
        prod_zone_queue = env.get("AIRFLOW_LOCAL_PROD_ZONE_QUEUE", "").strip() or DEFAULT_PROD_ZONE_QUEUE
        if not CELERY_NAME_PATTERN.match(prod_zone_queue):
            raise HarnessConfigError(
                f"AIRFLOW_LOCAL_PROD_ZONE_QUEUE={prod_zone_queue!r} is not a queue name "
                f"({CELERY_NAME_PATTERN.pattern})"
            )
        settings = cls(
            home=home.resolve(),
            dags_folder=dags.resolve(),
            plugins_folder=REPO_ROOT / "plugins",
            customers_folder=overrides.customers_folder
            or Path(env.get("MANAGED_UPGRADE_CUSTOMERS_DIR") or REPO_ROOT / "include" / "customers"),
            ledger_dsn=env.get("AIRFLOW_LOCAL_LEDGER_DSN") or DEFAULT_LEDGER_DSN,
            metadata_dsn=env.get("AIRFLOW_LOCAL_METADATA_DSN") or None,
            port=_port(env, "AIRFLOW_LOCAL_PORT", DEFAULT_PORT),
            smtp_port=_port(env, "AIRFLOW_LOCAL_SMTP_PORT", None),
            estate_root=Path(env.get("ESTATE_ROOT") or DEFAULT_ESTATE_ROOT),
            extra_users=users,
            startup_timeout=_seconds(env, "AIRFLOW_LOCAL_STARTUP_TIMEOUT", DEFAULT_STARTUP_TIMEOUT),
            executor=executor,
            auth_manager=auth_manager,
            prod_zone_queue=prod_zone_queue,
            celery_workers=default_celery_workers(prod_zone_queue)
            if overrides.celery_workers is None
            else overrides.celery_workers,
        )
        if not settings.dags_folder.is_dir():
            raise HarnessConfigError(f"dags folder {settings.dags_folder} does not exist")
        return settings


def _check_celery_workers(workers: CeleryWorkers) -> None:
    """Distinct, well-formed worker names; every worker on a queue; someone on the default queue."""
    if not workers:
        raise HarnessConfigError("celery_workers: at least one worker is needed")
    names = [name for name, _ in workers]
    if len(set(names)) != len(names):
        raise HarnessConfigError(f"celery_workers: worker hostnames must be distinct, got {names}")
    for name, queues in workers:
        bad = [value for value in (name, *queues) if not CELERY_NAME_PATTERN.match(value)]
        if bad or not queues or isinstance(queues, str):
            raise HarnessConfigError(
                f"celery_workers: ({name!r}, {queues!r}) must be (hostname, (queue, ...)) with names "
                f"matching {CELERY_NAME_PATTERN.pattern}"
            )
    if not any(DEFAULT_QUEUE in queues for _, queues in workers):
        raise HarnessConfigError(
            f"celery_workers: no worker serves the default queue {DEFAULT_QUEUE!r}; tasks naming no "
            "queue would never run"
        )


def _port(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise HarnessConfigError(f"{name}={raw!r} is not a TCP port (1-65535)")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise HarnessConfigError(f"{name}={raw!r} is not a positive number of seconds")
    return value
