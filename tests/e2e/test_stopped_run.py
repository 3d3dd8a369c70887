"""A stopped run is quiet: ops marks a run failed, its SLA watch ends silently and its open questions close.

In a real Airflow, a rehearsal run of the demo customer (one business day = 8 s) is stopped by ops
(``PATCH /api/v2/dags/{dag}/dagRuns/{run}`` with ``state=failed``) while a question is open:

- at the analysis, a question of the customer's review DAG (``managed_upgrade_review__acme``): the
  Analyse budget's clock runs, its miss would fall due ~20 s later;
- at "Respond to Request", a human gate of the customer run itself (Airflow 3.3.2 leaves such a gate's
  HITL detail pending in Required Actions when the run is marked failed).

Then the test waits until past the instant the running budget would have run out and checks: nothing was
alerted about the run after the stop (e-mail, webhook, ledger), the SLA watch task ended and its trigger
says why, no question of the run is pending anywhere (``hitlDetails?response_received=false``), the
review run is failed, and the ledger keeps the stop and each closed question with the reason
"run managed_upgrade__acme/<run> was stopped by ops at <time>".
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from scenario_customers import diagnostics, open_ledger

from airflow_local import harness
from airflow_local.client import AirflowClient
from managed_upgrade.config import load_customer_config
from managed_upgrade.dag_ids import review_dag_id_for
from managed_upgrade.sla.calendar import calendar_for
from managed_upgrade.sla.clock import sla_state
from upgrade_demo.autopilot import DEFAULT_ANSWERS, params_input

pytestmark = pytest.mark.e2e

CONFIG = load_customer_config(Path(__file__).resolve().parents[2] / "include" / "customers" / "acme.yaml")
DAG = CONFIG.dag_id
REVIEW_DAG_ID = review_dag_id_for(CONFIG.customer_id)
"""The demo customer's review DAG: its runs are the questions of the analysis (and the fix loops)."""
TOKEN = uuid.uuid4().hex[:8]
SECONDS_PER_DAY = 8.0
"""Rehearsal speed of the run stopped at its analysis: the Analyse budget (4 business days, from the Dev
inventory on) still runs when its question opens (misses of the first gates before the stop are allowed)."""
GATE_SECONDS_PER_DAY = 15.0
"""Rehearsal speed of the run stopped at Respond to Request (1 business day): its gate opens well before."""
SETTLE_SECONDS = 4.0
"""How long past a would-be due instant an alert would have arrived (the watcher polls each second)."""
CONSULTANT, PROJECT_MANAGER = "carla", "pete"
RESPOND = "initiation.respond_to_request"
ACKNOWLEDGE = "initiation.acknowledge_request_formally"
ANALYSIS = "initiation.analyse_questionnaire_and_system"
WEBHOOK_CONN_ID = "managed_upgrade_alerts_webhook"
DAG_PARSE_TIMEOUT = 240.0
STOPPED_BY_OPS = "was stopped by ops at "


class WebhookReceiver:
    """The global alert webhook: keeps (arrival time, JSON body) of every POST."""

    def __init__(self) -> None:
        received: list[tuple[float, dict[str, Any]]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def about(self, run_id: str, after: float = 0.0) -> list[dict[str, Any]]:
        return [
            body["alert"]
            for at, body in list(self.received)
            if at >= after and body.get("alert", {}).get("run_id") == run_id
        ]


@pytest.fixture(scope="session")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver._thread.start()
    yield receiver
    receiver._server.shutdown()
    receiver._server.server_close()


@pytest.fixture(scope="session")
def harness_connections(webhook: WebhookReceiver) -> dict[str, dict[str, Any]]:
    """The global alert webhook of the demo customer (it names none of its own): this module's receiver."""
    return {WEBHOOK_CONN_ID: {"conn_type": "http", "host": webhook.url}}


# --- helpers ----------------------------------------------------------------------------------------


def mails_about(smtp_sink: Any, run_id: str, after: int = 0) -> list[EmailMessage]:
    """E-mails (from the ``after``-th received on) whose text names the run (every alert links to it)."""
    found = []
    for message in list(smtp_sink.messages)[after:]:
        body = message.get_body(preferencelist=("plain", "html"))
        text = f"{message['Subject']}\n{body.get_content() if body is not None else ''}"
        if run_id in text:
            found.append(message)
    return found


def trigger(api: AirflowClient, run_id: str, seconds_per_day: float) -> None:
    api.wait_for_dag(DAG, timeout=DAG_PARSE_TIMEOUT)
    api.unpause(DAG)
    api.trigger(DAG, {"seconds_per_business_day": seconds_per_day}, run_id=run_id, note="stopped-run e2e")


def answer(api: AirflowClient, run_id: str, task_id: str, user: str) -> None:
    detail = api.wait_for_pending_hitl(DAG, run_id, task_id, timeout=180)
    choice = DEFAULT_ANSWERS[task_id.rsplit(".", 1)[-1]]
    api.answer_gate(detail, [choice.option], params_input(detail, choice.values), user=user)


def stop_run(api: AirflowClient, run_id: str) -> datetime:
    """Ops marks the run failed through the REST API; returns when (just before the request)."""
    stopped_at = datetime.now(UTC)
    run = api.fail_run(DAG, run_id)
    assert run["state"] == "failed", run
    return stopped_at


def ensure_stopped(api: AirflowClient, run_id: str) -> None:
    """After a failed test: the run must not hold the DAG's one active run slot."""
    if api.dag_run(DAG, run_id)["state"] not in ("failed", "success"):
        stop_run(api, run_id)


def due_of(ledger_dsn: str, run_id: str, budget_unit: str, seconds_per_day: float) -> datetime:
    """When the running budget unit runs out if nothing changes (the SLA clock from the ledger's events)."""
    with open_ledger(ledger_dsn) as ledger:
        events = ledger.events(DAG, run_id)
    unit = sla_state(
        CONFIG.process_model(),
        calendar_for(CONFIG.calendar, seconds_per_day),
        events,
        reminder_days=CONFIG.customer_wait.reminder_days,
        now=datetime.now(UTC),
    ).unit(budget_unit)
    assert unit.status == "running" and unit.due_at is not None, unit
    return unit.due_at


def pending_questions_of(api: AirflowClient, run_id: str) -> list[dict[str, Any]]:
    """``GET /api/v2/dags/~/dagRuns/~/hitlDetails?response_received=false``, those of the run (its own
    gates and its review runs, whose run ids end with ``__<dag>__<run>``)."""
    suffix = f"__{DAG}__{run_id}"
    return [
        detail
        for detail in api.hitl_details("~", "~", pending_only=True)
        if (detail["task_instance"]["dag_id"], detail["task_instance"]["dag_run_id"]) == (DAG, run_id)
        or (
            detail["task_instance"]["dag_id"] == REVIEW_DAG_ID
            and detail["task_instance"]["dag_run_id"].endswith(suffix)
        )
    ]


def trigger_log(airflow: harness.LocalAirflow, run_id: str) -> str:
    folder = airflow.settings.logs_dir / f"dag_id={DAG}/run_id={run_id}/task_id=sla_watch"
    return "\n".join(
        path.read_text(encoding="utf-8", errors="replace")
        for path in sorted(folder.glob("attempt=*.log.trigger.*.log"))
    )


def wait_for(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def sleep_until(moment: datetime) -> None:
    time.sleep(max((moment - datetime.now(UTC)).total_seconds(), 0.0))


def assert_quiet_after_stop(
    airflow: harness.LocalAirflow,
    api: AirflowClient,
    run_id: str,
    stopped_at: datetime,
    mails_before: int,
    webhook: WebhookReceiver,
    smtp_sink: Any,
) -> str:
    """Everything a stopped run must look like; returns the stop's reason."""
    # the questions were closed in the same transaction as the stop: none is pending at once
    assert pending_questions_of(api, run_id) == [], pending_questions_of(api, run_id)
    assert api.run_gates(DAG, run_id) == []
    # the SLA watch task ended, and its trigger says why it sent nothing more
    watch = api.task_instance(DAG, run_id, "sla_watch")
    assert watch["state"] == "failed", watch
    wait_for(
        lambda: api.task_instance(DAG, run_id, "sla_watch").get("trigger") is None, 30, "the trigger gone"
    )
    wait_for(
        lambda: any(
            said in trigger_log(airflow, run_id) for said in ("nothing more is sent", "stopped by Airflow")
        ),
        30,
        "the SLA watch's trigger log to say that it stopped",
    )
    # nothing reached anyone about the run after the stop
    assert mails_about(smtp_sink, run_id, after=mails_before) == [], [
        message["Subject"] for message in mails_about(smtp_sink, run_id, after=mails_before)
    ]
    assert webhook.about(run_id, after=stopped_at.timestamp()) == []
    with open_ledger(airflow.settings.ledger_dsn) as ledger:
        stops = ledger.run_stops(DAG, run_id)
        misses = ledger.sla_misses(DAG, run_id)
        reminders = ledger.customer_reminders(DAG, run_id)
    late = [row for row in misses + reminders if row["detected_at"] >= stopped_at]
    assert late == [], late
    # the ledger says why
    assert [(row["task_id"], row["how"]) for row in stops] == [(None, "run_marked_failed")], stops
    reason = stops[0]["reason"]
    assert reason.startswith(f"run {DAG}/{run_id} {STOPPED_BY_OPS}"), reason
    assert stops[0]["stopped_at"] >= stopped_at, stops
    return reason


# --- the stories ------------------------------------------------------------------------------------


def test_a_run_stopped_at_a_review_question_sends_nothing_more_and_closes_the_question(
    airflow: harness.LocalAirflow, api: AirflowClient, smtp_sink: Any, webhook: WebhookReceiver
) -> None:
    run_id = f"e2e_stopped_review__{TOKEN}"
    trigger(api, run_id, SECONDS_PER_DAY)
    try:
        answer(api, run_id, RESPOND, CONSULTANT)
        answer(api, run_id, ACKNOWLEDGE, PROJECT_MANAGER)
        question = api.wait_for_pending_hitl(DAG, run_id, ANALYSIS, timeout=180)
        review_run = question["gate"]["answer_run_id"]
        assert question["gate"]["answer_dag_id"] == REVIEW_DAG_ID, question["gate"]
        due = due_of(airflow.settings.ledger_dsn, run_id, "analyse", SECONDS_PER_DAY)
        mails_before = len(smtp_sink.messages)
        stopped_at = stop_run(api, run_id)
        assert due > stopped_at + timedelta(seconds=2), (
            f"the Analyse budget ran out at {due} before the stop at {stopped_at}: this machine is too slow "
            "for SECONDS_PER_DAY"
        )

        sleep_until(due + timedelta(seconds=SETTLE_SECONDS))
        reason = assert_quiet_after_stop(airflow, api, run_id, stopped_at, mails_before, webhook, smtp_sink)
    except BaseException:
        print(diagnostics(api, DAG, run_id))
        ensure_stopped(api, run_id)
        raise

    assert api.dag_run(REVIEW_DAG_ID, review_run)["state"] == "failed"
    (closed,) = api.hitl_details(REVIEW_DAG_ID, review_run, pending_only=False)
    assert closed["responded_by_user"]["id"] == "managed_upgrade", closed
    assert closed["params_input"] == {"closed_because": reason}, closed
    assert closed["task_instance"]["state"] == "failed", closed["task_instance"]
    with open_ledger(airflow.settings.ledger_dsn) as ledger:
        rows = ledger.closed_questions(DAG, run_id)
        misses = {row["budget_unit"] for row in ledger.sla_misses(DAG, run_id)}
    assert [(row["task_id"], row["question"], row["hitl_dag_id"], row["hitl_run_id"]) for row in rows] == [
        (ANALYSIS, 1, REVIEW_DAG_ID, review_run)
    ], rows
    assert rows[0]["reason"] == reason
    assert "analyse" not in misses, misses  # its budget ran out after the stop: no miss, no alert


def test_a_run_stopped_at_its_own_gate_leaves_no_required_action(
    airflow: harness.LocalAirflow, api: AirflowClient, smtp_sink: Any, webhook: WebhookReceiver
) -> None:
    run_id = f"e2e_stopped_gate__{TOKEN}"
    trigger(api, run_id, GATE_SECONDS_PER_DAY)
    try:
        api.wait_for_pending_hitl(DAG, run_id, RESPOND, timeout=180)
        due = due_of(airflow.settings.ledger_dsn, run_id, "respond_to_request", GATE_SECONDS_PER_DAY)
        mails_before = len(smtp_sink.messages)
        stopped_at = stop_run(api, run_id)
        assert due > stopped_at + timedelta(seconds=1), (
            f"Respond to Request ran out at {due}, before the stop"
        )

        sleep_until(due + timedelta(seconds=SETTLE_SECONDS))
        reason = assert_quiet_after_stop(airflow, api, run_id, stopped_at, mails_before, webhook, smtp_sink)
    except BaseException:
        print(diagnostics(api, DAG, run_id))
        ensure_stopped(api, run_id)
        raise

    (gate,) = api.hitl_details(DAG, run_id, pending_only=False)
    assert gate["task_instance"]["task_id"] == RESPOND
    assert gate["responded_by_user"]["id"] == "managed_upgrade", gate
    assert gate["params_input"] == {"closed_because": reason}, gate
    with open_ledger(airflow.settings.ledger_dsn) as ledger:
        rows = ledger.closed_questions(DAG, run_id)
        assert ledger.sla_misses(DAG, run_id) == []
    assert [(row["task_id"], row["question"], row["hitl_dag_id"]) for row in rows] == [(RESPOND, 0, DAG)], (
        rows
    )
