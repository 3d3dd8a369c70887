"""Which installations and connections the estate must provide: one per environment of every
valid customer config in ``include/customers/*.yaml``.

Uses the project's config loader so the estate provisions exactly what the DAGs will ask for;
invalid configs are reported and skipped, as the DAG factory does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from managed_upgrade.config import CustomerConfig, load_customer_configs

CUSTOMERS_DIR = Path(__file__).resolve().parents[2] / "include" / "customers"


def customers_dir() -> Path:
    """The project's customer configs, or $ESTATE_CUSTOMERS_DIR (tests use their own)."""
    override = os.environ.get("ESTATE_CUSTOMERS_DIR")
    return Path(override) if override else CUSTOMERS_DIR


@dataclass(frozen=True)
class CustomerEnvironment:
    """What the estate provisions for one environment of one customer."""

    env: str
    ssh_conn_id: str
    db_conn_id: str
    test_db_conn_id: str | None
    install_path: Path
    staging_path: Path
    backup_path: Path


@dataclass(frozen=True)
class EstateCustomer:
    """The slice of a customer config the estate needs."""

    customer_id: str
    current_version: str
    target_version: str
    release_conn_id: str
    environments: dict[str, CustomerEnvironment]
    source: Path

    def db_name(self, env: str) -> str:
        return f"crm_{self.customer_id}_{env}"


def _from_config(config: CustomerConfig, source: Path) -> EstateCustomer:
    environments = {
        env: CustomerEnvironment(
            env=env,
            ssh_conn_id=spec.ssh_conn_id,
            db_conn_id=spec.db_conn_id,
            test_db_conn_id=spec.test_db_conn_id,
            install_path=Path(spec.install_path),
            staging_path=Path(spec.staging_path),
            backup_path=Path(spec.backup_path),
        )
        for env, spec in config.environments.items()
    }
    return EstateCustomer(
        customer_id=config.customer_id,
        current_version=config.versions.current,
        target_version=config.versions.target,
        release_conn_id=config.release_source.conn_id,
        environments=environments,
        source=source,
    )


def load_estate_customers(directory: Path | None = None) -> tuple[list[EstateCustomer], list[str]]:
    """Valid customers (sorted by id) and one message per invalid config file."""
    directory = directory or customers_dir()
    if not directory.is_dir():
        return [], []
    configs, errors = load_customer_configs(directory)
    customers = [_from_config(config, directory / f"{stem}.yaml") for stem, config in sorted(configs.items())]
    return customers, [f"{path}: {error}" for path, error in sorted(errors.items())]
