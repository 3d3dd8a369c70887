"""The local Airflow runs a gated DAG the way people will use the product.

Ops triggers a run; its approval gate announces itself by email; someone who is not assigned
(even an admin) cannot answer it; the assigned consultant can, once; the run then finishes and
its final email arrives. The harness stays on loopback throughout.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from airflow_local import harness
from airflow_local.client import AirflowClient
from airflow_local.processes import listening_sockets
from airflow_local.settings import REPO_ROOT, HarnessOverrides

# As in dags_smoke/harness_smoke.py.
DAG_ID = "harness_smoke"
GATE = "approve_release"
ASSIGNED_USER = "smoke_consultant"
OUTSIDER = "smoke_outsider"
TICKS = 4

SMOKE = HarnessOverrides(
    dags_folder=Path(__file__).parent / "dags_smoke",
    extra_users=(f"{ASSIGNED_USER}:user", f"{OUTSIDER}:user"),
)
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("airflow", [SMOKE], indirect=True, ids=["dags_smoke"]),
]


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_components_listen_on_loopback_only(airflow: harness.LocalAirflow) -> None:
    sockets = listening_sockets(harness.running_components(airflow.settings))

    assert {address for _, _, address, _ in sockets} <= {"127.0.0.1", "::1"}, sockets
    assert ("api-server", airflow.settings.port) in {(name, port) for name, _, _, port in sockets}
    # No log or health servers (Airflow's defaults would bind 0.0.0.0 on these).
    assert not {port for *_, port in sockets} & {8793, 8794, 8974}


def test_command_line_reports_the_running_instance(airflow: harness.LocalAirflow) -> None:
    environment = os.environ | {
        "AIRFLOW_LOCAL_HOME": str(airflow.settings.home),
        "AIRFLOW_LOCAL_PORT": str(airflow.settings.port),
    }

    def airflow_local(*arguments: str) -> subprocess.CompletedProcess[str]:
        command = [str(REPO_ROOT / "scripts" / "airflow-local"), *arguments]
        return subprocess.run(command, env=environment, capture_output=True, text=True, check=False)

    status = airflow_local("status")
    token = airflow_local("token", ASSIGNED_USER)

    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("health=healthy") == len(harness.COMPONENTS)
    assert token.returncode == 0, token.stderr
    assert token.stdout.count(".") == 2  # a JWT: header.payload.signature


def test_only_the_assigned_consultant_can_approve_and_the_run_then_finishes(
    airflow: harness.LocalAirflow, api: AirflowClient, smtp_sink
) -> None:
    api.wait_for_dag(DAG_ID, timeout=120)
    api.unpause(DAG_ID, user="ops")
    run_id = api.trigger(DAG_ID, user="ops")["dag_run_id"]

    request = api.wait_for_pending_hitl(DAG_ID, run_id, GATE, timeout=120)
    assert request["assigned_users"] == [{"id": ASSIGNED_USER, "name": ASSIGNED_USER}]
    assert request["options"] == ["Approve", "Reject"]
    smtp_sink.wait_for(lambda message: message["Subject"] == f"Action required: {GATE} of {run_id}")

    for intruder in (OUTSIDER, "admin"):
        refusal = api.answer_hitl(DAG_ID, run_id, GATE, ["Approve"], user=intruder, expected=(403,))
        assert "not a respondent" in refusal["detail"]
    assert api.task_instance(DAG_ID, run_id, GATE)["state"] == "awaiting_input"

    answered_at = time.monotonic()
    answer = api.answer_hitl(DAG_ID, run_id, GATE, ["Approve"], user=ASSIGNED_USER)
    api.wait_for_task_state(DAG_ID, run_id, GATE, {"success"}, timeout=60)
    resume_latency = time.monotonic() - answered_at
    assert answer["responded_by"]["id"] == ASSIGNED_USER
    api.answer_hitl(DAG_ID, run_id, GATE, ["Reject"], user=ASSIGNED_USER, expected=(409,))

    run = api.wait_for_run(DAG_ID, run_id, timeout=120)
    assert run["state"] == "success", api.task_states(DAG_ID, run_id)
    assert set(api.task_states(DAG_ID, run_id).values()) == {"success"}
    smtp_sink.wait_for(lambda message: message["Subject"] == f"Approved: {run_id}")
    assert "Done. Returned value was: 0" in api.task_log(DAG_ID, run_id, "tick_0")

    ticks = {ti["task_id"]: ti for ti in api.task_instances(DAG_ID, run_id)}
    per_task = (
        _time(ticks[f"tick_{TICKS - 1}"]["end_date"]) - _time(ticks["tick_0"]["end_date"])
    ).total_seconds() / (TICKS - 1)
    print(
        f"\nharness timings: up {airflow.startup_seconds:.1f} s, sequential task {per_task:.2f} s, "
        f"gate answer to task success {resume_latency:.2f} s"
    )
    # Timings are printed, not asserted: benchmarks/ holds the performance claims (noisy machines).
