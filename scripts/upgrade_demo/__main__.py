"""``make demo``: the demo customer's whole managed upgrade, rehearsed in minutes on this machine.

Starts the simulated estate and a local Airflow (every component on 127.0.0.1), resets the demo
customer's installations to their current version, triggers its DAG in rehearsal mode and prints
where to look. With ``--auto`` (``make demo AUTO=1``) it also answers every gate through the REST API
as the assigned users and waits for the outcome.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime

import crm_estate
from airflow_local import harness
from airflow_local.settings import HarnessSettings
from managed_upgrade.dag_ids import dag_id_for, review_dag_id_for
from upgrade_demo import mail_sink
from upgrade_demo.autopilot import drive_run

DEFAULT_CUSTOMER = "acme"
DEFAULT_SECONDS_PER_DAY = 20.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--customer", default=DEFAULT_CUSTOMER)
    parser.add_argument(
        "--seconds-per-business-day",
        type=float,
        default=DEFAULT_SECONDS_PER_DAY,
        help="rehearsal speed: how long one business day of the plan lasts (default %(default)s s)",
    )
    parser.add_argument("--auto", action="store_true", help="answer every gate and wait for the outcome")
    parser.add_argument("--timeout", type=float, default=1800.0, help="with --auto: give up after this")
    args = parser.parse_args(argv)

    print("== simulated estate")
    crm_estate.up(say=print)
    crm_estate.reset(customer_id=args.customer, say=print)

    print("== mail sink")
    settings = HarnessSettings.from_environment()
    maildir = mail_sink.start(settings.home / "mail")
    print(f"every e-mail the upgrade sends lands in {maildir}/new (one file per message)")
    os.environ["AIRFLOW_LOCAL_SMTP_PORT"] = str(mail_sink.DEFAULT_PORT)

    print("== local Airflow")
    settings = HarnessSettings.from_environment()
    running = harness.up(settings)
    dag_id = dag_id_for(args.customer)
    with running.client() as api:
        api.wait_for_dag(dag_id, timeout=180)
        api.unpause(dag_id)
        run_id = f"demo__{datetime.now(UTC):%Y%m%dT%H%M%S}"
        api.trigger(
            dag_id,
            {"seconds_per_business_day": args.seconds_per_business_day},
            run_id=run_id,
            note="Demo run in rehearsal mode",
        )
        run_url = f"{settings.base_url}/dags/{dag_id}/runs/{run_id}"
        print(
            f"\n== triggered {dag_id} run {run_id}\n"
            f"   open {run_url}  (Grid and Gantt views)\n"
            f"   log in as carla (consultant) or pete (project manager) with the passwords above;\n"
            f"   a waiting gate shows as 'Required Action' on the task: open it, fill in the form, answer;\n"
            f"   the analysis, fix rounds and customer sign-offs are asked in runs of the DAG\n"
            f"   {review_dag_id_for(args.customer)} (the customer's review questions)\n"
            f"   ({settings.base_url}/required_actions lists every open question).\n"
            f"   stop everything with: make demo-down\n"
        )
        if not args.auto:
            return 0
        started = time.monotonic()
        run, answered = drive_run(
            api,
            dag_id,
            run_id,
            timeout=args.timeout,
            on_answer=lambda gate: print(f"   answered {gate.task_id} as {gate.user}: {gate.option}"),
            check=running.require_running,
        )
        states = api.task_states(dag_id, run_id)
    failed = sorted(task for task, state in states.items() if state not in {"success", "skipped"})
    print(
        f"\n== run {run['state']} after {time.monotonic() - started:.0f} s, {len(answered)} gates answered"
        + (f"; not successful: {', '.join(failed)}" if failed else "")
    )
    return 0 if run["state"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
