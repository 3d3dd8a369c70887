"""Finds the customer configs and turns them into DAGs, never failing for all because of one.

Two DAG files use it: ``dags/managed_upgrade.py`` registers a DAG per valid config, and
``dags/customer_config_errors.py`` raises an import error listing every invalid config (file, field,
problem). Airflow drops every DAG of a file that raises, so the raising file holds no DAG: a broken
customer file shows in the UI's import errors while every other customer's DAG keeps loading.
"""

from __future__ import annotations

import os
from pathlib import Path

from managed_upgrade.config import CustomerConfigError, load_customer_configs

CUSTOMERS_DIR_VARIABLE = "MANAGED_UPGRADE_CUSTOMERS_DIR"
DEFAULT_CUSTOMERS_DIR = Path(__file__).resolve().parents[2] / "include" / "customers"


class CustomerConfigsInvalid(Exception):
    """Raised at parse time by the errors file: its message is what the UI's import errors show."""


def customers_dir() -> Path:
    """``$MANAGED_UPGRADE_CUSTOMERS_DIR`` or ``include/customers`` of this project."""
    return Path(os.environ.get(CUSTOMERS_DIR_VARIABLE) or DEFAULT_CUSTOMERS_DIR)


def register_customer_dags(namespace: dict) -> list[str]:
    """Put a DAG per valid customer config into ``namespace`` (a DAG file's globals); returns dag ids."""
    from managed_upgrade_airflow.dag_factory import build_dag

    configs, _ = load_customer_configs(customers_dir())
    built = []
    for config in configs.values():
        namespace[config.dag_id] = build_dag(config)
        built.append(config.dag_id)
    return built


def raise_for_invalid_configs() -> None:
    """Raise :class:`CustomerConfigsInvalid` naming every invalid customer file and its problems."""
    _, errors = load_customer_configs(customers_dir())
    if errors:
        raise CustomerConfigsInvalid(describe_errors(errors))


def describe_errors(errors: dict[Path, CustomerConfigError]) -> str:
    """One block per file: which DAG is missing because of it, then each ``file: field: problem``."""
    blocks = [
        f"{len(errors)} customer config file(s) are invalid; their DAGs are not loaded "
        "(every other customer's DAG is). Fix the file, then check it with "
        "`python -m managed_upgrade.config validate FILE`."
    ]
    for path, error in sorted(errors.items()):
        blocks.append(f"\n{path.name} (DAG managed_upgrade__{path.stem} not loaded):")
        blocks.extend(f"  {problem}" for problem in error.problems)
    return "\n".join(blocks)
