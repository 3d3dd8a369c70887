"""One rehearsal run of the demo customer's upgrade vs no-op tasks of the same shape, in one local Airflow.

    .venv/bin/python benchmarks/bench_run.py [--rounds 1] [--seconds-per-business-day 20]

Starts a private local Airflow (own home, free port, own ledger database, own mail sink; all on
127.0.0.1) whose dags folder holds copies of the product's DAG files and, once the product run has
shown which gates open in a clean run, a generated baseline DAG: the same task ids, task groups and
dependencies (the mapped backup task mapped over the same three environments) built from
``PythonOperator`` no-ops, and for every gate the product run opened a ``HITLOperator`` with the same
options and assigned users. The autopilot answers the gates of both (the same option, as the same
user), so gate-answer latency is in both. Per round it resets the demo customer's installations on
the simulated estate, triggers ``managed_upgrade__acme`` in rehearsal mode and the baseline, one
after the other (the order alternates between rounds), and measures trigger -> success.

Prints each run's wall time, the ratio (goal <= 1.2x) and per-task durations and overhead.
Stops Airflow and the mail sink, drops the ledger database and removes ``benchmarks/.work/run``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for sub in ("include", "plugins", "scripts"):
    sys.path.insert(0, str(ROOT / sub))

import crm_estate  # noqa: E402
from airflow_local import harness  # noqa: E402
from airflow_local.client import AirflowClient  # noqa: E402
from airflow_local.settings import HarnessOverrides, HarnessSettings  # noqa: E402
from managed_upgrade.config import CustomerConfig, load_customer_config  # noqa: E402
from managed_upgrade.dag_ids import dag_id_for  # noqa: E402
from upgrade_demo import mail_sink  # noqa: E402
from upgrade_demo.autopilot import Answer, AnsweredGate, GatePolicy, drive_run  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "run"
CUSTOMER = "acme"
PRODUCT_DAG = dag_id_for(CUSTOMER)
BASELINE_DAG = f"bench_noop__{CUSTOMER}"
RATIO_GOAL = 1.2
RUN_TIMEOUT = 900.0
LOG_TAIL = 15

BASELINE_DAG_FILE = '''\
"""Baseline for bench_run.py: {product_dag}'s tasks, groups and dependencies as no-ops; its gates as HITL."""

from datetime import UTC, datetime

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, TaskGroup

STAGES = {stages!r}
GATES = {gates!r}
MAPPED = {mapped!r}
EDGES = {edges!r}


def no_op(**_):
    return None


with DAG(
    dag_id={dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False,
    max_active_runs=1, default_args={{"retries": 0}},
) as dag:
    tasks = {{}}
    for stage, activity_ids in STAGES:
        with TaskGroup(group_id=stage):
            for activity_id in activity_ids:
                key = f"{{stage}}.{{activity_id}}"
                if key in GATES:
                    options, users = GATES[key]
                    tasks[key] = HITLOperator(
                        task_id=activity_id, subject=key, options=options, assigned_users=users
                    )
                elif key in MAPPED:
                    tasks[key] = PythonOperator.partial(task_id=activity_id, python_callable=no_op).expand(
                        op_kwargs=MAPPED[key]
                    )
                else:
                    tasks[key] = PythonOperator(task_id=activity_id, python_callable=no_op)
    for upstream, downstream in EDGES:
        tasks[upstream] >> tasks[downstream]
'''


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def baseline_dag_source(config: CustomerConfig, opened_gates: dict[str, dict[str, Any]]) -> str:
    """The baseline DAG file: the product DAG's shape from the process model, gates as the run saw them."""
    model = config.process_model()
    stages = [(stage.id, [activity.id for activity in stage.activities]) for stage in model.stages]
    edges = [(upstream, activity.key) for activity in model.activities for upstream in activity.after]
    gates = {key: (gate["options"], gate["assigned_users"]) for key, gate in opened_gates.items()}
    mapped = {
        "preparation.backup_configuration_files": [
            {"environment": name} for name, _ in config.environments.items()
        ]
    }
    return BASELINE_DAG_FILE.format(
        product_dag=PRODUCT_DAG, dag_id=BASELINE_DAG, stages=stages, gates=gates, mapped=mapped, edges=edges
    )


def run_once(
    api: AirflowClient, logs_dir: Path, dag_id: str, conf: dict[str, Any], policy: GatePolicy | None
) -> tuple[dict[str, Any], list[AnsweredGate], float]:
    run_id = f"bench__{datetime.now(UTC):%Y%m%dT%H%M%S}__{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    api.trigger(dag_id, conf, run_id=run_id, note="bench_run.py")
    run, answered = drive_run(api, dag_id, run_id, policy, timeout=RUN_TIMEOUT)
    wall = time.monotonic() - started
    if run["state"] != "success":
        states = api.task_states(dag_id, run_id)
        failed = {task: state for task, state in states.items() if state not in {"success", "skipped"}}
        logs = sorted((logs_dir / f"dag_id={dag_id}" / f"run_id={run_id}").rglob("*.log"))
        tails = [
            f"--- {log.parent.name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL:])
            for log in logs
            if any(f"task_id={task}" in str(log) for task, state in failed.items() if state == "failed")
        ]
        raise SystemExit(
            f"{dag_id} run {run_id} ended {run['state']}; not successful: {failed}\n" + "\n".join(tails)
        )
    return run, answered, wall


def task_durations(api: AirflowClient, dag_id: str, run_id: str) -> dict[str, float]:
    """Seconds each task ran (mapped instances summed), from Airflow's own timestamps."""
    durations: dict[str, float] = {}
    for instance in api.task_instances(dag_id, run_id):
        task_id = instance["task_id"]
        durations[task_id] = durations.get(task_id, 0.0) + (instance["duration"] or 0.0)
    return durations


def airflow_seconds(run: dict[str, Any]) -> float:
    """Run start -> end as Airflow recorded it (without the wait from the API call to the first schedule)."""
    ended, started = datetime.fromisoformat(run["end_date"]), datetime.fromisoformat(run["start_date"])
    return (ended - started).total_seconds()


def bench(rounds: int, seconds_per_day: float, report: Callable[[str], None]) -> None:
    config = load_customer_config(ROOT / "include" / "customers" / f"{CUSTOMER}.yaml")
    dags = WORK / "dags"
    dags.mkdir(parents=True)
    for source in sorted((ROOT / "dags").glob("*.py")):
        shutil.copy(source, dags / source.name)

    report("== simulated estate")
    crm_estate.up(say=report)

    smtp_port, ledger_db = free_port(), f"ledger_bench_{uuid.uuid4().hex[:10]}"
    environ = {
        "AIRFLOW_LOCAL_HOME": str(WORK / "airflow-home"),
        "AIRFLOW_LOCAL_PORT": str(free_port()),
        "AIRFLOW_LOCAL_SMTP_PORT": str(smtp_port),
        "AIRFLOW_LOCAL_LEDGER_DSN": f"host=127.0.0.1 port=5432 user=postgres dbname={ledger_db}",
    }
    environ |= {name: os.environ[name] for name in ("ESTATE_ROOT",) if name in os.environ}
    settings = HarnessSettings.from_environment(HarnessOverrides(dags_folder=dags), environ)
    maildir = WORK / "mail" / "maildir"
    report("== mail sink, local Airflow")
    mail_sink.start(maildir, smtp_port)
    try:
        running = harness.up(settings, report=report, die_with_caller=True)
        try:
            with running.client() as api:
                measure(api, running.settings.logs_dir, config, dags, rounds, seconds_per_day, report)
        finally:
            harness.down(settings)
    finally:
        mail_sink.stop(maildir)
        drop_database(ledger_db)


@dataclass(frozen=True)
class RunSample:
    wall: float
    airflow: float
    durations: dict[str, float]
    worker_parse_ms: list[int]
    gates: int


def worker_parse_ms(logs_dir: Path, dag_id: str, run_id: str) -> list[int]:
    """How long each task process took to parse the DAG file before running (Airflow's task log event)."""
    found = []
    for log in (logs_dir / f"dag_id={dag_id}" / f"run_id={run_id}").rglob("*.log"):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"Worker startup parse complete"' in line:
                found.append(int(json.loads(line)["dag_file_parse_ms"]))
    return found


def measure(
    api: AirflowClient,
    logs_dir: Path,
    config: CustomerConfig,
    dags: Path,
    rounds: int,
    seconds_per_day: float,
    report: Callable[[str], None],
) -> None:
    api.wait_for_dag(PRODUCT_DAG, timeout=180)
    api.unpause(PRODUCT_DAG)
    conf = {"seconds_per_business_day": seconds_per_day}
    samples: dict[str, list[RunSample]] = {"product": [], "baseline": []}
    policy: GatePolicy | None = None
    for round_number in range(rounds):
        order = ["product", "baseline"] if round_number % 2 == 0 else ["baseline", "product"]
        for contender in order:
            if contender == "product":
                crm_estate.reset(customer_id=CUSTOMER)
                run, answered, wall = run_once(api, logs_dir, PRODUCT_DAG, conf, None)
                if policy is None:  # first product run: now the baseline knows which gates open
                    policy = make_baseline(api, config, dags, run, answered)
            else:
                run, answered, wall = run_once(api, logs_dir, BASELINE_DAG, {}, policy)
            dag_id, run_id = run["dag_id"], run["dag_run_id"]
            samples[contender].append(
                RunSample(
                    wall,
                    airflow_seconds(run),
                    task_durations(api, dag_id, run_id),
                    worker_parse_ms(logs_dir, dag_id, run_id),
                    len(answered),
                )
            )
            report(f"   round {round_number + 1} {contender:8}: {wall:6.1f} s trigger -> success")
    print_results(samples)


def make_baseline(
    api: AirflowClient, config: CustomerConfig, dags: Path, run: dict[str, Any], answered: list[AnsweredGate]
) -> GatePolicy:
    """Write the baseline DAG with the gates this product run opened; the policy answers them alike."""
    opened = {}
    for gate in answered:
        details = api.run_gates(PRODUCT_DAG, run["dag_run_id"], pending_only=False)
        detail = next(d for d in details if d["gate"]["task_id"] == gate.task_id)
        opened[gate.task_id] = {"options": detail["options"], "assigned_users": detail["assigned_users"]}
    (dags / "bench_noop_baseline.py").write_text(baseline_dag_source(config, opened))
    api.wait_for_dag(BASELINE_DAG, timeout=180)
    api.unpause(BASELINE_DAG)
    return GatePolicy({gate.task_id: Answer(gate.option, user=gate.user) for gate in answered})


def print_results(samples: dict[str, list[RunSample]]) -> None:
    product_wall = statistics.median(sample.wall for sample in samples["product"])
    baseline_wall = statistics.median(sample.wall for sample in samples["baseline"])
    product_af = statistics.median(sample.airflow for sample in samples["product"])
    baseline_af = statistics.median(sample.airflow for sample in samples["baseline"])
    product_tasks, baseline_tasks = samples["product"][-1].durations, samples["baseline"][-1].durations
    gates = samples["product"][-1].gates
    task_count = len(product_tasks)
    print(
        f"\n| run ({len(samples['product'])} round(s), median) | trigger -> success | Airflow start -> end |"
    )
    print("|---|---:|---:|")
    print(f"| {PRODUCT_DAG} (rehearsal, {gates} gates) | {product_wall:.1f} s | {product_af:.1f} s |")
    print(f"| {BASELINE_DAG} (no-ops + same gates) | {baseline_wall:.1f} s | {baseline_af:.1f} s |")
    print(f"| **ratio** | **{product_wall / baseline_wall:.2f}x** | {product_af / baseline_af:.2f}x |")
    print(f"(goal <= {RATIO_GOAL}x)")
    extra = product_wall - baseline_wall
    print(f"\nper-task overhead: {extra:.1f} s over {task_count} tasks = {extra / task_count:.2f} s per task")
    print("worker start-up parse of the DAG file (every task process, again when a gate resumes):")
    for name, runs in samples.items():
        parses = [ms for run in runs for ms in run.worker_parse_ms]
        if parses:
            print(
                f"  {name:8}: {len(parses) / len(runs):.0f} per run, median {statistics.median(parses)} ms, "
                f"{sum(parses) / 1000 / len(runs):.1f} s per run in total"
            )
    print("\n| task | product run (s) | baseline (s) | difference (s) |\n|---|---:|---:|---:|")
    for task_id in sorted(product_tasks, key=lambda t: baseline_tasks.get(t, 0.0) - product_tasks[t]):
        product, baseline = product_tasks[task_id], baseline_tasks.get(task_id, 0.0)
        print(f"| {task_id} | {product:.2f} | {baseline:.2f} | {product - baseline:+.2f} |")
    product_sum, baseline_sum = sum(product_tasks.values()), sum(baseline_tasks.values())
    difference = product_sum - baseline_sum
    print(f"| sum of task durations | {product_sum:.1f} | {baseline_sum:.1f} | {difference:+.1f} |")


def drop_database(name: str) -> None:
    import psycopg2
    from psycopg2 import sql

    admin = psycopg2.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds-per-business-day", type=float, default=20.0)
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    started = time.monotonic()
    try:
        bench(args.rounds, args.seconds_per_business_day, print)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    print(f"\n(benchmark took {time.monotonic() - started:.0f} s; load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
