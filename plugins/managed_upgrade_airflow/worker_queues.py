"""Which workers run a task: those in the network zone of the environment it touches.

Production hosts are often reachable only from inside the customer's or the vendor's production
network. A customer config names a Celery queue per environment (``environments.<env>.worker_queue``)
and the DAG factory puts every task that touches that environment's hosts or database on it; the
other tasks stay on the deployment's default queue.

A task that touches several environments (staging the release, the preparation backups, the closing
version check) becomes one task instance per *zone* -- the environments that share a queue -- so no
worker ever has to reach into another zone. Airflow sets a task instance's queue from its task, and a
mapped task's instances all share it; the per-instance queue is carried in the task's
``executor_config`` and applied by Airflow's cluster policy :func:`task_instance_mutation_hook`
(loaded from ``plugins/airflow_local_settings.py``). Should a deployment miss that policy, the
instance still refuses to run on the wrong queue (:func:`check_worker_queue`) instead of reaching
for hosts its worker cannot, or must not, reach.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from managed_upgrade.dag_ids import DAG_ID_PREFIX

if TYPE_CHECKING:  # the cluster policy imports this module into every Airflow process: keep it light
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig

QUEUES_KEY = "managed_upgrade_worker_queues"
"""``executor_config`` key: the queue of each map index of a task mapped over zones (``None``: default)."""


class WrongWorkerQueueError(RuntimeError):
    """A task instance was sent to a queue other than its environment's (the cluster policy is missing)."""


@dataclass(frozen=True)
class Zone:
    """Environments reached from the same workers: their queue (``None``: the default) and names."""

    queue: str | None
    environments: tuple[str, ...]


def environment_queue(config: CustomerConfig, environment: str) -> str | None:
    """The queue of the workers that reach ``environment`` (``None``: the deployment's default)."""
    return config.environment(environment).worker_queue


def zones(config: CustomerConfig, environments: Sequence[str] | None = None) -> tuple[Zone, ...]:
    """The environments grouped by queue, in upgrade order of each group's first environment."""
    names = [name for name, _ in config.environments.items()] if environments is None else environments
    grouped: dict[str | None, list[str]] = {}
    for name in names:
        grouped.setdefault(environment_queue(config, name), []).append(name)
    return tuple(Zone(queue, tuple(members)) for queue, members in grouped.items())


def queue_kwargs(queue: str | None) -> dict[str, Any]:
    """Operator keyword arguments that put a task on ``queue`` (none for the default queue)."""
    return {} if queue is None else {"queue": queue}


def per_instance_queues(queues: Sequence[str | None]) -> dict[str, Any]:
    """``executor_config`` of a task mapped over zones: map index ``i`` runs on ``queues[i]``."""
    if all(queue is None for queue in queues):
        return {}
    return {"executor_config": {QUEUES_KEY: list(queues)}}


def declared_queue(executor_config: Mapping[str, Any] | None, map_index: int | None) -> str | None:
    """The queue the task declares for instance ``map_index``, ``None`` if it declares none."""
    queues = (executor_config or {}).get(QUEUES_KEY)
    if not isinstance(queues, list) or map_index is None or not 0 <= map_index < len(queues):
        return None
    queue = queues[map_index]
    return queue if isinstance(queue, str) else None


def task_instance_mutation_hook(task_instance: Any, dag_run: Any = None) -> None:
    """Airflow cluster policy: send each instance of a zone-mapped customer task to its zone's queue.

    Airflow calls it in the scheduler whenever it creates or refreshes a task instance, after copying
    the task's queue and ``executor_config`` (3.3: ``TaskInstance.refresh_from_task``,
    ``TaskMap.expand_mapped_task``). It must not touch the database; it only reads the instance.
    """
    if not str(getattr(task_instance, "dag_id", "")).startswith(DAG_ID_PREFIX):
        return
    queue = declared_queue(
        getattr(task_instance, "executor_config", None), getattr(task_instance, "map_index", None)
    )
    if queue is not None:
        task_instance.queue = queue


def check_worker_queue(context: Context) -> None:
    """Refuse to run a zone-mapped instance that reached a worker of another queue."""
    ti, task = context["ti"], context["task"]
    expected = declared_queue(getattr(task, "executor_config", None), getattr(ti, "map_index", None))
    actual = getattr(ti, "queue", None)
    if expected is not None and actual != expected:
        raise WrongWorkerQueueError(
            f"{ti.task_id}[{ti.map_index}] touches environments reached only from queue {expected!r}, but "
            f"was sent to queue {actual!r}: this deployment lacks the managed upgrade's cluster policy "
            "(plugins/airflow_local_settings.py, task_instance_mutation_hook). Nothing was changed."
        )
