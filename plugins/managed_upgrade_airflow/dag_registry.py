"""Finds the customer configs and turns them into DAGs, never failing for all because of one.

The DAG files ``dags/managed_upgrade_shard_<k>.py`` each register the DAGs of the valid configs
whose customer id hashes to shard ``k`` -- the customer's DAG and, beside it, its review DAG
``managed_upgrade_review__<customer_id>`` (whose runs are the customer's review questions) -- and
``dags/customer_config_errors.py`` raises an import error listing every invalid config (file, field,
problem). Airflow drops every DAG of a file that raises, so the raising file holds no DAG: a broken
customer file shows in the UI's import errors while every other customer's DAG keeps loading.

Why shards: serializing a DAG with trigger-form params costs ~0.15 s per customer (Airflow copies the
DAG's params into every task), and the dag-processor gives one file 50 s. Sixteen shards keep a file
far below that up to about a thousand customers and let several parsing processes share the work.
A customer's shard never changes (CRC-32 of its id), so its DAG never moves between files.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from managed_upgrade.config import (
    CustomerConfig,
    CustomerConfigError,
    customer_config_paths,
    customers_dir,
    load_customer_config,
    load_customer_configs,
)
from managed_upgrade.dag_ids import customer_id_of, dag_id_for
from managed_upgrade.input_files import display_path

SHARDS = 16
"""Number of ``dags/managed_upgrade_shard_<k>.py`` files; changing it means adding/removing files."""


class CustomerConfigsInvalid(Exception):
    """Raised at parse time by the errors file: its message is what the UI's import errors show."""


def shard_of(customer_id: str, shards: int = SHARDS) -> int:
    """The shard (DAG file) of a customer: stable across processes, unlike ``hash()``.

    A file name that is not UTF-8 (never a valid customer id) still gets a shard instead of raising.
    """
    return zlib.crc32(customer_id.encode("utf-8", "surrogateescape")) % shards


def register_customer_dags(namespace: dict[str, Any], shard: int, shards: int = SHARDS) -> list[str]:
    """Put the DAGs of each valid customer config of ``shard`` into ``namespace`` (a DAG file's globals):
    ``managed_upgrade__<customer_id>`` and its review DAG ``managed_upgrade_review__<customer_id>``.

    Only the shard's files are read, so each shard file pays for its own customers alone; invalid
    ones are skipped here and reported by ``customer_config_errors.py``. Returns the dag ids.
    """
    from airflow.sdk import get_parsing_context

    from managed_upgrade_airflow.dag_factory import build_dag
    from managed_upgrade_airflow.gates.questions import build_review_dag

    # A task's process parses the file only to find its own DAG: build just that one.
    wanted = get_parsing_context().dag_id
    wanted_customer = None if wanted is None else customer_id_of(wanted)
    built = []
    for path in customer_config_paths(customers_dir()):
        if shard_of(path.stem, shards) != shard:
            continue
        if wanted is not None and wanted_customer != path.stem:
            continue
        try:
            config = load_customer_config(path)
        except CustomerConfigError:
            continue
        builders: list[Callable[[CustomerConfig], Any]] = [build_dag, build_review_dag]
        if wanted is not None:  # the customer DAG or the review DAG, not both
            builders = [build_dag] if wanted == config.dag_id else [build_review_dag]
        for build in builders:
            dag = build(config)
            namespace[dag.dag_id] = dag
            built.append(dag.dag_id)
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
        blocks.append(f"\n{display_path(path.name)} (DAG {dag_id_for(display_path(path.stem))} not loaded):")
        blocks.extend(f"  {problem}" for problem in error.problems)
    return "\n".join(blocks)
