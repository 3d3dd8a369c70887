"""Each person sees only their customers: a real Airflow with the FAB auth manager and per-customer roles.

The harness starts Airflow with ``auth_manager="fab"``: at start-up the product's sync
(``managed_upgrade_airflow.access_control``) creates the role ``customer_<id>`` of every customer config
and gives it to the people the config names; the manager has FAB's ``Viewer``, ops ``Op``. The demo's
customer configs make the story: gina consults for globex only, carla for every customer.

Ops triggers globex's and acme's upgrades. Gina sees globex's DAG and review DAG and nothing else in
the DAG list, answers globex's first gate, and gets 403 on acme's DAG, its runs, its task instances'
logs, its HITL details and its review DAG; listings across DAGs (``~``) leave acme out. A request
without a token gets 401. The manager sees both customers' DAGs, runs and open questions.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from airflow_local import harness
from airflow_local.client import AirflowClient
from airflow_local.settings import HarnessOverrides
from managed_upgrade.dag_ids import dag_id_for, review_dag_id_for
from upgrade_demo.autopilot import DEFAULT_ANSWERS, params_input

# The product's DAGs on the simulated estate (shared with test_browser.py); these runs stay at first gates.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("airflow", [HarnessOverrides(auth_manager="fab")], indirect=True),
]

MINE, THEIRS = "globex", "acme"
CONSULTANT = "gina"
"""Consultant of globex only (include/customers/globex.yaml); carla consults for every customer."""
RESPOND = "initiation.respond_to_request"
FIRST_TASK = "initiation.create_request_case"
TOKEN = uuid.uuid4().hex[:8]
DAG_PARSE_TIMEOUT = 240.0
GATE_TIMEOUT = 180.0


def ours(dag_ids: set[str]) -> set[str]:
    return {dag_id for dag_id in dag_ids if dag_id.startswith("managed_upgrade")}


@pytest.fixture(scope="module")
def runs(airflow: harness.LocalAirflow, api: AirflowClient) -> dict[str, str]:
    """One run per customer, triggered by ops, each waiting at its first gate."""
    triggered = {}
    for customer in (MINE, THEIRS):
        dag_id = dag_id_for(customer)
        api.wait_for_dag(dag_id, timeout=DAG_PARSE_TIMEOUT)
        api.unpause(dag_id)
        run_id = f"access_{customer}_{TOKEN}"
        api.trigger(dag_id, {"seconds_per_business_day": 600}, run_id=run_id, note="customer-access e2e")
        triggered[customer] = run_id
    for customer, run_id in triggered.items():
        api.wait_for_pending_hitl(dag_id_for(customer), run_id, RESPOND, timeout=GATE_TIMEOUT)
    return triggered


def forbidden(api: AirflowClient, path: str, method: str = "GET", **kwargs: Any) -> None:
    """``path`` answers the consultant 403 (authenticated, but not theirs)."""
    api.request(method, path, user=CONSULTANT, expected=(403,), **kwargs)


def test_a_request_without_a_token_is_unauthenticated(airflow: harness.LocalAirflow) -> None:
    with httpx.Client(base_url=airflow.base_url, timeout=30) as anonymous:
        for path in (
            "/api/v2/dags",
            f"/api/v2/dags/{dag_id_for(MINE)}",
            "/api/v2/dags/~/dagRuns/~/hitlDetails",
        ):
            assert anonymous.get(path).status_code == 401, path
        bad = anonymous.post("/auth/token", json={"username": CONSULTANT, "password": "not-the-password"})
        assert bad.status_code == 401, bad.text


def test_the_dag_list_shows_a_consultant_only_their_customers_and_the_manager_everyone(
    api: AirflowClient, runs: dict[str, str]
) -> None:
    """(Before the dag-processor has synced any DAG of theirs, FAB answers a consultant's list with 403.)"""
    api.wait_for_dag(review_dag_id_for("initech"), timeout=DAG_PARSE_TIMEOUT)
    everyone = {dag_id_for(c) for c in (MINE, THEIRS, "initech")}
    everyone |= {review_dag_id_for(c) for c in (MINE, THEIRS, "initech")}
    assert ours({dag["dag_id"] for dag in api.dags(user=CONSULTANT)}) == {
        dag_id_for(MINE),
        review_dag_id_for(MINE),
    }
    assert ours({dag["dag_id"] for dag in api.dags(user="manager")}) == everyone
    assert ours({dag["dag_id"] for dag in api.dags(user="carla")}) == everyone


def test_a_consultant_answers_their_customers_gate_and_cannot_reach_another_customer(
    api: AirflowClient, runs: dict[str, str]
) -> None:
    mine, theirs = dag_id_for(MINE), dag_id_for(THEIRS)
    run_id = runs[THEIRS]

    # acme: the DAG, its runs, a task's log, its questions, its review DAG -- all refused
    forbidden(api, f"/api/v2/dags/{theirs}")
    forbidden(api, f"/api/v2/dags/{theirs}/dagRuns")
    forbidden(api, f"/api/v2/dags/{theirs}/dagRuns/{run_id}")
    forbidden(api, f"/api/v2/dags/{theirs}/dagRuns/{run_id}/taskInstances")
    forbidden(api, f"/api/v2/dags/{theirs}/dagRuns/{run_id}/taskInstances/{FIRST_TASK}/logs/1")
    forbidden(api, f"/api/v2/dags/{theirs}/dagRuns/{run_id}/hitlDetails")
    forbidden(api, f"/api/v2/dags/{theirs}/dagRuns/{run_id}/taskInstances/{RESPOND}/-1/hitlDetails")
    forbidden(
        api,
        f"/api/v2/dags/{theirs}/dagRuns/{run_id}/taskInstances/{RESPOND}/-1/hitlDetails",
        method="PATCH",
        json={"chosen_options": [DEFAULT_ANSWERS["respond_to_request"].option], "params_input": {}},
    )
    forbidden(api, f"/api/v2/dags/{review_dag_id_for(THEIRS)}")
    forbidden(api, f"/api/v2/dags/{review_dag_id_for(THEIRS)}/dagRuns")
    forbidden(api, f"/api/v2/dags/{theirs}/dagRuns", method="POST", json={"logical_date": None})

    # across DAGs (~), Airflow filters instead of refusing: acme's run and question are left out
    runs_seen = api.request("GET", "/api/v2/dags/~/dagRuns", user=CONSULTANT, params={"limit": 100})
    assert {run["dag_id"] for run in runs_seen["dag_runs"]} == {mine}
    pending = api.hitl_details("~", "~", user=CONSULTANT)
    assert {detail["task_instance"]["dag_id"] for detail in pending} == {mine}

    # globex: readable, and the gate is answered by its consultant
    assert api.dag(mine, user=CONSULTANT)["dag_id"] == mine
    api.request("GET", f"/api/v2/dags/{review_dag_id_for(MINE)}", user=CONSULTANT)
    log = api.request(
        "GET", f"/api/v2/dags/{mine}/dagRuns/{runs[MINE]}/taskInstances/{FIRST_TASK}/logs/1", user=CONSULTANT
    )
    assert log["content"], log
    detail = api.wait_for_pending_hitl(mine, runs[MINE], RESPOND, user=CONSULTANT)
    choice = DEFAULT_ANSWERS["respond_to_request"]
    answered = api.answer_gate(detail, [choice.option], params_input(detail, choice.values), user=CONSULTANT)
    assert answered["responded_by"]["name"] == CONSULTANT


def test_the_manager_sees_both_customers_runs_and_questions(api: AirflowClient, runs: dict[str, str]) -> None:
    for customer, run_id in runs.items():
        assert api.dag_run(dag_id_for(customer), run_id, user="manager")["state"] == "running"
        api.request("GET", f"/api/v2/dags/{review_dag_id_for(customer)}", user="manager")
    pending = api.hitl_details("~", "~", user="manager")
    assert (dag_id_for(THEIRS), runs[THEIRS]) in {
        (d["task_instance"]["dag_id"], d["task_instance"]["dag_run_id"]) for d in pending
    }
    # a viewer reads every customer but answers nothing: the gate is assigned to acme's consultants
    detail = api.wait_for_pending_hitl(dag_id_for(THEIRS), runs[THEIRS], RESPOND, user="manager")
    choice = DEFAULT_ANSWERS["respond_to_request"]
    api.answer_gate(
        detail, [choice.option], params_input(detail, choice.values), user="manager", expected=(403,)
    )
