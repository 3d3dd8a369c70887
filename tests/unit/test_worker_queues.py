"""Tasks run on the workers of the network zone of the environment they touch, and nowhere else."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from managed_upgrade.config import ENVIRONMENT_NAMES, parse_customer_config
from managed_upgrade.process.model import load_process_model
from managed_upgrade_airflow.dag_factory import build_dag
from managed_upgrade_airflow.operators.sla_watch import SLA_WATCH_TASK_ID
from managed_upgrade_airflow.worker_queues import (
    QUEUES_KEY,
    WrongWorkerQueueError,
    Zone,
    check_worker_queue,
    task_instance_mutation_hook,
    zones,
)

CUSTOMERS = Path(__file__).resolve().parents[2] / "include" / "customers"
MULTI_ENVIRONMENT = {
    "preparation.stage_upgrade_files",
    "preparation.backup_configuration_files",
    "closure.verify_target_versions",
}


def acme(**queues: str) -> Any:
    data = yaml.safe_load((CUSTOMERS / "acme.yaml").read_text())
    for env, queue in queues.items():
        data["environments"][env]["worker_queue"] = queue
    return parse_customer_config(data, str(CUSTOMERS / "acme.yaml"), file_stem="acme")


def touched_environment(task_id: str) -> str | None:
    stage, _, activity = task_id.partition(".")
    if stage in ENVIRONMENT_NAMES:
        return stage
    return "dev" if activity in ("inventory_dev_system", "verify_test_cases_dev") else None


def instance_queues(task: Any) -> list[str | None] | None:
    config = task.partial_kwargs.get("executor_config") if hasattr(task, "partial_kwargs") else None
    return (config or {}).get(QUEUES_KEY)


def test_environments_are_grouped_into_zones_in_upgrade_order():
    assert zones(acme()) == (Zone(None, ("dev", "uat", "prod")),)
    assert zones(acme(prod="prod_zone")) == (Zone(None, ("dev", "uat")), Zone("prod_zone", ("prod",)))
    assert zones(acme(dev="lab", prod="prod_zone", uat="lab")) == (
        Zone("lab", ("dev", "uat")),
        Zone("prod_zone", ("prod",)),
    )


def test_every_task_touching_prod_runs_on_the_prod_zone_queue_and_nothing_else_does():
    dag = build_dag(acme(prod="prod_zone"))
    default = dag.get_task(SLA_WATCH_TASK_ID).queue
    assert default != "prod_zone"

    for task in dag.tasks:
        if task.task_id in MULTI_ENVIRONMENT:
            continue
        expected = "prod_zone" if touched_environment(task.task_id) == "prod" else default
        assert task.queue == expected, task.task_id
    assert {t.task_id for t in dag.tasks if t.task_id.startswith("prod.")} == {
        a.key for a in load_process_model().activities if a.stage == "prod"
    }


def test_a_task_touching_several_zones_runs_one_instance_per_zone_on_that_zones_queue():
    dag = build_dag(acme(prod="prod_zone"))

    stage = dag.get_task("preparation.stage_upgrade_files")
    assert instance_queues(stage) == [None, "prod_zone"]
    assert [list(part) for part in stage.expand_input.value["environments"]] == [["dev", "uat"], ["prod"]]
    verify = dag.get_task("closure.verify_target_versions")
    assert instance_queues(verify) == [None, "prod_zone"]
    assert [list(part) for part in verify.expand_input.value["hosts"]] == [["dev", "uat"], ["prod"]]
    backups = dag.get_task("preparation.backup_configuration_files")
    assert instance_queues(backups) == [None, None, "prod_zone"]
    assert [kwargs["environment"] for kwargs in backups.expand_input.value] == ["dev", "uat", "prod"]


def test_without_worker_queues_the_dag_keeps_one_task_per_activity_on_the_default_queue():
    dag = build_dag(acme())
    default = dag.get_task(SLA_WATCH_TASK_ID).queue

    assert {task.queue for task in dag.tasks} == {default}
    assert not hasattr(dag.get_task("preparation.stage_upgrade_files"), "partial_kwargs")
    assert not hasattr(dag.get_task("closure.verify_target_versions"), "partial_kwargs")
    assert instance_queues(dag.get_task("preparation.backup_configuration_files")) is None


def test_one_zone_other_than_the_default_keeps_one_task_on_that_queue():
    dag = build_dag(acme(dev="vendor_net", uat="vendor_net", prod="vendor_net"))

    assert dag.get_task("preparation.stage_upgrade_files").queue == "vendor_net"
    assert dag.get_task("closure.verify_target_versions").queue == "vendor_net"
    assert dag.get_task("initiation.create_request_case").queue != "vendor_net"


def _ti(**fields: Any) -> SimpleNamespace:
    defaults = {"dag_id": "managed_upgrade__acme", "task_id": "t", "map_index": 2, "queue": "default"}
    return SimpleNamespace(**{**defaults, **fields})


@pytest.mark.parametrize(
    ("fields", "queue"),
    [
        ({"executor_config": {QUEUES_KEY: [None, None, "prod_zone"]}}, "prod_zone"),
        ({"executor_config": {QUEUES_KEY: [None, None, "prod_zone"]}, "map_index": 0}, "default"),
        ({"executor_config": {QUEUES_KEY: [None, "prod_zone"]}}, "default"),  # no such index
        ({"executor_config": {QUEUES_KEY: [None, None, "prod_zone"]}, "map_index": -1}, "default"),
        ({"executor_config": {}}, "default"),
        ({"executor_config": None}, "default"),
        ({"executor_config": {QUEUES_KEY: [None, None, "x"]}, "dag_id": "someone_elses_dag"}, "default"),
    ],
)
def test_the_cluster_policy_sets_the_queue_of_each_instance(fields, queue):
    ti = _ti(**fields)
    task_instance_mutation_hook(ti, dag_run=None)
    assert ti.queue == queue


def test_airflow_finds_the_cluster_policy_in_the_plugins_folder_when_it_starts():
    import airflow.settings

    assert airflow.settings.task_instance_mutation_hook.is_noop is False
    ti = _ti(executor_config={QUEUES_KEY: [None, None, "prod_zone"]})

    airflow.settings.task_instance_mutation_hook(ti, dag_run=None)

    assert ti.queue == "prod_zone"


def test_an_instance_on_the_wrong_queue_refuses_to_run_naming_the_missing_policy():
    task = SimpleNamespace(executor_config={QUEUES_KEY: [None, None, "prod_zone"]})
    context: Any = {"ti": _ti(task_id="preparation.backup_configuration_files"), "task": task}

    with pytest.raises(WrongWorkerQueueError, match=r"'prod_zone'.*queue 'default'.*cluster policy"):
        check_worker_queue(context)
    context["ti"].queue = "prod_zone"
    check_worker_queue(context)  # on its zone's queue it runs
