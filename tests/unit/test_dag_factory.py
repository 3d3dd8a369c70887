"""DAG integrity: discovery finds every customer, the DAGs follow the process model, nothing dangles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from managed_upgrade.config import CUSTOMERS_DIR_VARIABLE, DEFAULT_CUSTOMERS_DIR, load_customer_configs
from managed_upgrade.dag_ids import customer_id_of, review_dag_id_for
from managed_upgrade.process.model import load_process_model
from managed_upgrade_airflow.access_control import CUSTOMER_DAG_ACCESS
from managed_upgrade_airflow.dag_factory import BUILDERS, build_dag, builder_for
from managed_upgrade_airflow.dag_registry import shard_of
from managed_upgrade_airflow.operators.sla_watch import SLA_WATCH_TASK_ID

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS), safe_mode=True)


def test_every_example_customer_has_a_dag_and_nothing_fails(dagbag):
    configs, errors = load_customer_configs(DEFAULT_CUSTOMERS_DIR)
    assert configs, "discovery found no customer config at all"
    assert errors == {}
    assert dagbag.import_errors == {}
    customer_dags = {f"managed_upgrade__{cid}" for cid in configs}
    assert set(dagbag.dag_ids) == customer_dags | {f"managed_upgrade_review__{cid}" for cid in configs}


def test_dag_follows_the_process_model(dagbag):
    model = load_process_model()
    dag = dagbag.dags["managed_upgrade__acme"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None: manual runs only
    assert dag.max_active_runs == 1
    assert {a.key for a in model.activities} | {SLA_WATCH_TASK_ID} == set(dag.task_ids)
    groups = [group_id for group_id in dag.task_group.children if group_id != SLA_WATCH_TASK_ID]
    assert groups == [stage.id for stage in model.stages]
    for activity in model.activities:
        task = dag.get_task(activity.key)
        assert task.task_display_name == activity.title
        assert set(task.upstream_task_ids) == set(activity.after), activity.key


def test_no_orphan_tasks_and_a_single_chain_to_closure(dagbag):
    dag = dagbag.dags["managed_upgrade__acme"]
    roots = [t.task_id for t in dag.roots if t.task_id != SLA_WATCH_TASK_ID]
    leaves = [t.task_id for t in dag.leaves if t.task_id != SLA_WATCH_TASK_ID]
    assert roots == ["initiation.create_request_case"]
    assert leaves == ["closure.send_completion"]


def test_the_sla_watch_runs_alongside_the_whole_run_and_deadlines_are_run_level(dagbag):
    dag = dagbag.dags["managed_upgrade__acme"]
    watch = dag.get_task(SLA_WATCH_TASK_ID)
    assert type(watch).__name__ == "SlaWatchOperator"
    assert watch.upstream_task_ids == set() and watch.downstream_task_ids == set()
    assert watch.task_group.is_root  # not inside a stage: it is not an activity
    kinds = sorted(alert.reference.kind for alert in dag.deadline)
    assert kinds == ["deadline_missed", "deadline_warning", "timeline_ceiling"]


def test_prod_only_after_uat_sign_off_and_uat_only_after_dev_sign_off(dagbag):
    dag = dagbag.dags["managed_upgrade__acme"]
    prod_upgrade_ancestors = dag.get_task("prod.upgrade_environment").get_flat_relative_ids(upstream=True)
    assert "uat.customer_sign_off" in prod_upgrade_ancestors
    assert "dev.customer_sign_off" in dag.get_task("uat.upgrade_environment").get_flat_relative_ids(
        upstream=True
    )
    for env in ("dev", "uat", "prod"):
        upgrade = dag.get_task(f"{env}.upgrade_environment")
        assert upgrade.upstream_task_ids == {f"{env}.backup_environment"}


def test_trigger_form_defaults_come_from_the_config(dagbag):
    configs, _ = load_customer_configs(DEFAULT_CUSTOMERS_DIR)
    dag = dagbag.dags["managed_upgrade__globex"]
    params = dag.params
    assert params["target_version"] == configs["globex"].versions.target
    assert params["case_id"] == configs["globex"].request_case.case_id
    assert params.get_param("target_version").schema["pattern"]


def test_gates_are_assigned_to_the_configured_users(dagbag):
    dag = dagbag.dags["managed_upgrade__acme"]
    gate = dag.get_task("initiation.acknowledge_request_formally")
    assert [u["id"] for u in gate.assigned_users] == ["pete"]
    assert dag.get_task("dev.fix_and_retest").assigned_users == ("carla",)  # answer its review questions


def test_each_customer_has_a_review_dag_of_one_question_task_that_never_queues_questions(dagbag):
    configs, _ = load_customer_configs(DEFAULT_CUSTOMERS_DIR)
    for customer_id in configs:
        review = dagbag.dags[review_dag_id_for(customer_id)]
        assert review.task_ids == ["question"]
        assert type(review.timetable).__name__ == "NullTimetable"
        assert review.max_active_runs >= 10_000 and review.max_active_tasks >= 10_000
        assert review.is_paused_upon_creation is False  # its runs are created by the customer DAGs
        # generated beside the customer's DAG, in the same shard file
        customer = dagbag.dags[f"managed_upgrade__{customer_id}"]
        assert review.fileloc == customer.fileloc
        assert review.fileloc.endswith(f"managed_upgrade_shard_{shard_of(customer_id):02d}.py")


def test_a_customers_dags_grant_exactly_its_role_reading_and_editing_them(dagbag):
    expected = {resource: set(actions) for resource, actions in CUSTOMER_DAG_ACCESS.items()}
    assert expected == {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read"}}
    for dag_id in ("managed_upgrade__acme", "managed_upgrade_review__acme"):
        assert dagbag.dags[dag_id].access_control == {"customer_acme": expected}, dag_id
    assert set(dagbag.dags["managed_upgrade_review__globex"].access_control) == {"customer_globex"}


def test_every_process_activity_has_an_operator():
    for activity in load_process_model().activities:
        assert builder_for(activity) in BUILDERS.values()


def test_a_broken_customer_file_is_an_import_error_that_hides_no_other_customer(tmp_path, monkeypatch):
    for name in ("acme.yaml", "globex.yaml"):
        shutil.copy(DEFAULT_CUSTOMERS_DIR / name, tmp_path / name)
    broken = (
        (DEFAULT_CUSTOMERS_DIR / "initech.yaml").read_text().replace("target: ", "target: 1.0; rm -rf / #")
    )
    (tmp_path / "initech.yaml").write_text(broken)
    monkeypatch.setenv(CUSTOMERS_DIR_VARIABLE, str(tmp_path))
    bag = DagBag(dag_folder=str(DAGS), safe_mode=True)
    assert set(bag.dag_ids) == {
        "managed_upgrade__acme",
        "managed_upgrade__globex",
        "managed_upgrade_review__acme",
        "managed_upgrade_review__globex",
    }
    [(path, message)] = bag.import_errors.items()
    assert path.endswith("customer_config_errors.py")
    assert "initech.yaml (DAG managed_upgrade__initech not loaded)" in message
    assert "versions.target" in message


def test_build_dag_directly_for_each_example():
    configs, _ = load_customer_configs(DEFAULT_CUSTOMERS_DIR)
    for config in configs.values():
        dag = build_dag(config)
        assert dag.dag_id == config.dag_id
        assert len(dag.tasks) == len(config.process_model().activities) + 1  # and the SLA watch


def test_one_shard_file_per_shard_and_each_customer_in_exactly_one():
    from managed_upgrade_airflow.dag_registry import SHARDS, register_customer_dags

    files = sorted(p.name for p in DAGS.glob("managed_upgrade_shard_*.py"))
    assert files == [f"managed_upgrade_shard_{k:02d}.py" for k in range(SHARDS)]
    for k in range(SHARDS):
        assert f"register_customer_dags(globals(), shard={k})" in (DAGS / files[k]).read_text()
    configs, _ = load_customer_configs(DEFAULT_CUSTOMERS_DIR)
    seen: list[str] = []
    for k in range(SHARDS):
        namespace: dict = {}
        seen += register_customer_dags(namespace, shard=k)
        assert all(shard_of(customer_id_of(dag_id) or "") == k for dag_id in namespace)
    expected = [dag_id for c in configs.values() for dag_id in (c.dag_id, review_dag_id_for(c.customer_id))]
    assert sorted(seen) == sorted(expected)


@pytest.mark.parametrize("wanted", ["managed_upgrade__acme", "managed_upgrade_review__acme"])
def test_a_task_process_builds_only_the_dag_it_runs(wanted, monkeypatch):
    """A task parses its shard to find its own DAG: the customer DAG or the review DAG, not both."""
    from managed_upgrade_airflow.dag_registry import register_customer_dags

    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", wanted)
    namespace: dict = {}
    assert register_customer_dags(namespace, shard=shard_of("acme")) == [wanted]
    assert list(namespace) == [wanted]


def test_the_longest_customer_id_still_names_valid_dags_and_roles():
    from airflow.models.base import ID_LEN
    from airflow.providers.fab.auth_manager.models import Role

    from managed_upgrade.dag_ids import MAX_DAG_ID_LENGTH, MAX_ROLE_NAME_LENGTH, customer_role_for, dag_id_for
    from managed_upgrade.vocabulary import SAFE_KINDS

    assert MAX_DAG_ID_LENGTH == ID_LEN  # what Airflow checks a dag_id against
    assert Role.__table__.c.name.type.length == MAX_ROLE_NAME_LENGTH  # FAB's ab_role.name
    longest = "c" * SAFE_KINDS["customer id"].max_length
    assert len(review_dag_id_for(longest)) <= MAX_DAG_ID_LENGTH
    assert len(dag_id_for(longest)) <= MAX_DAG_ID_LENGTH
    assert len(customer_role_for(longest)) <= MAX_ROLE_NAME_LENGTH
    assert customer_id_of(review_dag_id_for(longest)) == customer_id_of(dag_id_for(longest)) == longest


# CRC-32 of the customer id modulo 16 (acme: 0x05c4ba3e), pinned: a change of the scheme moves
# customers' DAGs to other files, so it must be a decision, not an accident.
PINNED_SHARDS = {"acme": 14, "globex": 10, "initech": 0, "a": 3, "zz-top": 1}


def test_a_customer_keeps_its_shard_in_every_process_whatever_the_hash_seed():
    from managed_upgrade_airflow.dag_registry import shard_of

    assert {customer: shard_of(customer) for customer in PINNED_SHARDS} == PINNED_SHARDS
    program = (
        "import json; from managed_upgrade_airflow.dag_registry import shard_of; "
        f"print(json.dumps({{c: shard_of(c) for c in {sorted(PINNED_SHARDS)!r}}}))"
    )
    for seed in ("0", "1", "4242"):  # Python's own hash() of a str differs between these
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True
        )
        assert json.loads(done.stdout) == PINNED_SHARDS, (seed, done.stderr)
