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
    def secrets_file(self) -> Path:
        return self.home / "secrets.json"

    @property
    def database_file(self) -> Path:
        return self.home / "airflow.db"

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
        )
        if not settings.dags_folder.is_dir():
            raise HarnessConfigError(f"dags folder {settings.dags_folder} does not exist")
        return settings


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
