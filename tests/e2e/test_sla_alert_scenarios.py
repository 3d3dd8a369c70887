"""SLA misses, customer reminders and run deadlines reach people on time, once, in a real Airflow.

Four customers of their own (``sla_*``), each in rehearsal mode (one business day = a few seconds),
are run by one real Airflow whose global alert webhook is an HTTP receiver of this module:

- late response: the consultant answers "Respond to Request" (1 business day) late; the consultant
  and the PM get one miss alert by e-mail and webhook within seconds of the budget running out, the
  ledger holds the miss; the PM's "Acknowledge Request Formally", answered at once, is never alerted;
- customer wait: the customer takes 4.5 business days to sign Dev off (reminders every 3); the
  Development budget (cut short for this customer, so the wait would overrun it) is paused, the
  customer gets exactly one reminder, the consultant a copy;
- crash: scheduler and triggerer are killed and restarted while "Respond to Request" runs; its miss
  still goes out, exactly once;
- past deadline: a run triggered with its deadline date already past alerts "[Deadline missed]" at once.

Runs start now (rehearsal mode has no weekends, so the weekday does not matter); their request-case
dates are set around the customer's today at trigger time, not taken from the config, whose fixed dates
would one day put a run-level deadline alert inside a story or make the past deadline's request invalid.

The crash comes first, while only its own run is in flight (killing the scheduler kills the tasks it
runs); the other stories start once the new triggerer has taken its watcher over, and then run side
by side. While a new triggerer takes over a dead one's triggers, alerts of other runs falling due
then left ~5 s late (measured), which is not what these tests are about.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
import yaml
from scenario_customers import (
    ScenarioCustomer,
    diagnostics,
    open_ledger,
    provision_customer,
    remove_customer,
    remove_folder,
)

from airflow_local import harness
from airflow_local.client import AirflowClient
from airflow_local.settings import HarnessOverrides
from crm_estate import Estate
from managed_upgrade.config import load_customer_config
from managed_upgrade.ledger import Ledger
from managed_upgrade.sla.calendar import calendar_for
from managed_upgrade.sla.clock import sla_state
from upgrade_demo.autopilot import DEFAULT_ANSWERS, Answer, AnsweredGate, GatePolicy, drive_run, params_input

TOKEN = uuid.uuid4().hex[:8]
CUSTOMERS_DIR = Path(tempfile.gettempdir()) / f"managed-upgrade-e2e-sla-{TOKEN}"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize(
        "airflow", [HarnessOverrides(customers_folder=CUSTOMERS_DIR)], indirect=True, ids=["sla"]
    ),
]

SECONDS_PER_DAY = 20.0
"""Rehearsal speed of the late response: a gate answered at once still takes Airflow ~8-12 s here
(schedule, parse the DAG in the worker, park, resume), which must fit well in one business day."""
SIGN_OFF_SECONDS_PER_DAY = 20.0
"""The sign-off wait's speed: the wait ends with the answer plus ~5 s of Airflow (up to ~20 s on a
loaded machine), short of the second reminder (1.5 business days = 30 s after the answer)."""
DEADLINE_SECONDS_PER_DAY = 8.0
CRASH_SECONDS_PER_DAY = 60.0
"""The crashed run's speed: a killed triggerer's triggers move to the new one only once the old one's
heartbeat is 30 s stale ([triggerer] triggerer_health_check_threshold), well before the budget ends."""
ALERT_LATENCY_SECONDS = 5.0
REMINDER_DAYS = 3
SIGN_OFF_WAIT_DAYS = 4.5
"""Past the first reminder, 1.5 days short of the second."""
DEVELOPMENT_DAYS = 5
"""The sign-off customer's Development budget: more than its stage takes without the customer's
wait (about 1.4 rehearsal days here, ~27 s of Airflow's work; 5 days allow 100 s on a loaded
machine), less than with it (0.5 days of work, 10 s, is enough), so a wait counted against it is a
miss."""
INSTALLER_SECONDS = 12  # as in test_upgrade_scenarios: a faster installer meets apache/airflow#72716
DAG_PARSE_TIMEOUT = 240.0
STORY_TIMEOUT = 420.0
SETTLE_SECONDS = 3.0
"""How long after the last expected alert a duplicate would have shown up (the watcher polls each 1 s)."""
CONSULTANT, PROJECT_MANAGER = "carla", "pete"
CONSULTANT_EMAIL, PM_EMAIL = "carla@platinum.example", "pete@platinum.example"
WEBHOOK_CONN_ID = "managed_upgrade_alerts_webhook"

CUSTOMERS = {"late": "sla_late", "wait": "sla_wait", "crash": "sla_crash", "deadline": "sla_deadline"}
CUSTOMER_SETTINGS: dict[str, dict[str, Any]] = {
    "wait": {
        "customer_wait": {"reminder_days": REMINDER_DAYS},
        "duration_overrides": {"development": DEVELOPMENT_DAYS},
    }
}


# --- receivers: e-mails with their arrival time, the webhook ---------------------------------------


class MailClock:
    """Notes when each e-mail of the session sink arrived (polls it every 20 ms in a thread)."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self._seen: list[tuple[float, EmailMessage]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="mail-clock", daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            messages = list(self._sink.messages)
            now = time.time()
            self._seen.extend((now, message) for message in messages[len(self._seen) :])

    def start(self) -> None:
        self._seen = [(0.0, message) for message in list(self._sink.messages)]  # before this module
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def matching(self, matches: Callable[[EmailMessage], bool]) -> list[tuple[float, EmailMessage]]:
        return [(at, message) for at, message in list(self._seen) if matches(message)]

    def wait_for(self, matches: Callable[[EmailMessage], bool], timeout: float) -> tuple[float, EmailMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.matching(matches)
            if found:
                return found[0]
            time.sleep(0.1)
        subjects = [message["Subject"] for _, message in self._seen[-30:]]
        raise AssertionError(f"no matching e-mail within {timeout:.0f} s; latest subjects: {subjects}")


class WebhookReceiver:
    """A Slack-like incoming webhook on 127.0.0.1 that keeps (arrival time, JSON) of every POST."""

    def __init__(self) -> None:
        received: list[tuple[float, dict[str, Any]]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def alerts(self, run_id: str, kind: str, budget_unit: str | None = None) -> list[tuple[float, dict]]:
        """(arrival, payload["alert"]) of the alerts of ``kind`` about the run (and budget unit)."""
        return [
            (at, payload["alert"])
            for at, payload in list(self.received)
            if payload.get("alert", {}).get("run_id") == run_id
            and payload["alert"]["kind"] == kind
            and (budget_unit is None or payload["alert"]["budget_unit"] == budget_unit)
        ]


@pytest.fixture(scope="session")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


# --- customers and the Airflow of this module ------------------------------------------------------


@pytest.fixture(scope="session")
def sla_customers(estate: Estate) -> Iterator[dict[str, ScenarioCustomer]]:
    """A customer per story on fresh installations, configs in ``CUSTOMERS_DIR``; removed after."""
    CUSTOMERS_DIR.mkdir(parents=True)
    customers: dict[str, ScenarioCustomer] = {}
    try:
        for story, customer_id in CUSTOMERS.items():
            customer = provision_customer(
                estate, CUSTOMERS_DIR, customer_id, f"E2E-{customer_id.upper().replace('_', '-')}", TOKEN
            )
            if story in CUSTOMER_SETTINGS:
                path = CUSTOMERS_DIR / f"{customer_id}.yaml"
                document = yaml.safe_load(path.read_text(encoding="utf-8")) | CUSTOMER_SETTINGS[story]
                path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
                customer = dataclasses.replace(customer, config=load_customer_config(path))
            customers[story] = customer
        estate.set_fault(customers["wait"].install_path("dev"), None, slow_seconds=INSTALLER_SECONDS)
        yield customers
    finally:
        for customer in customers.values():
            remove_customer(estate, customer, CUSTOMERS_DIR)
        remove_folder(CUSTOMERS_DIR)


@pytest.fixture(scope="session")
def harness_connections(
    sla_customers: dict[str, ScenarioCustomer], webhook: WebhookReceiver
) -> dict[str, dict[str, Any]]:
    """The customers' config databases and the global alert webhook (this module's receiver)."""
    connections = {
        conn_id: connection
        for customer in sla_customers.values()
        for conn_id, connection in customer.connections.items()
    }
    connections[WEBHOOK_CONN_ID] = {"conn_type": "http", "host": webhook.url}
    return connections


@pytest.fixture(scope="module")
def mail_clock(smtp_sink: Any) -> Iterator[MailClock]:
    clock = MailClock(smtp_sink)
    clock.start()
    yield clock
    clock.stop()


# --- stories ------------------------------------------------------------------------------------------


@dataclass
class Story:
    customer: ScenarioCustomer
    run_id: str
    seconds_per_day: float = SECONDS_PER_DAY
    triggered_at: float = 0.0
    answered: list[AnsweredGate] = field(default_factory=list)
    observed: dict[str, Any] = field(default_factory=dict)
    diagnostics: str = ""
    failure: str | None = None

    @property
    def dag_id(self) -> str:
        return self.customer.dag_id

    @property
    def name(self) -> str:
        return self.customer.config.name

    def played(self) -> Story:
        assert self.failure is None, f"{self.customer.customer_id}: {self.failure}\n{self.diagnostics}"
        return self


@dataclass
class Stage:
    """What the stories share: Airflow, the receivers, and the crash that must come first."""

    airflow: harness.LocalAirflow
    mails: MailClock
    webhook: WebhookReceiver
    connections: dict[str, dict[str, Any]]
    restarted: threading.Event = field(default_factory=threading.Event)


def ledger_of(stage: Stage) -> Any:
    return open_ledger(stage.airflow.settings.ledger_dsn)


def start_of(ledger: Ledger, story: Story, activity_key: str) -> datetime:
    """When an activity became ready (its budget's clock started): its first ready/started event."""
    starts = [
        event["at"]
        for event in ledger.events(story.dag_id, story.run_id)
        if event["activity_key"] == activity_key and event["event"] in ("ready", "started")
    ]
    assert starts, f"no ready/started event of {activity_key} in the ledger"
    return min(starts)


def wait_for_event(stage: Stage, story: Story, activity_key: str, event: str, timeout: float) -> datetime:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with ledger_of(stage) as ledger:
            found = [
                row["at"]
                for row in ledger.events(story.dag_id, story.run_id)
                if row["activity_key"] == activity_key and row["event"] == event
            ]
        if found:
            return min(found)
        time.sleep(0.2)
    raise AssertionError(f"no {event} event of {activity_key} within {timeout:.0f} s")


def sleep_until(moment: datetime) -> None:
    time.sleep(max((moment - datetime.now(UTC)).total_seconds(), 0.0))


def answer(api: AirflowClient, story: Story, task_id: str, user: str) -> None:
    """The default answer of the gate, as ``user``, once it is safe to answer."""
    detail = api.wait_for_pending_hitl(story.dag_id, story.run_id, task_id, timeout=120)
    choice = DEFAULT_ANSWERS[task_id.rsplit(".", 1)[-1]]
    api.answer_gate(detail, [choice.option], params_input(detail, choice.values), user=user)
    story.answered.append(AnsweredGate(task_id, detail["gate"]["question"], user, choice.option))


def stop_run(api: AirflowClient, story: Story) -> None:
    """Ops fails the run: what the test needed is over, the rest of the process would only cost time."""
    api.fail_run(story.dag_id, story.run_id)


def miss_mail(story: Story, title: str) -> Callable[[EmailMessage], bool]:
    return lambda message: message["Subject"].startswith(f"[SLA miss] {story.name}: {title} ")


def customer_today(story: Story) -> date:
    """Today in the customer's zone (the run-level deadlines read dates there)."""
    return datetime.now(ZoneInfo(story.customer.config.calendar.timezone)).date()


def request_case_dates(today: date, deadline: date) -> dict[str, str]:
    """Trigger-form dates of a valid request case (earliest <= ideal <= deadline) around ``today``."""
    start = min(today, deadline)
    return {
        "earliest_start": start.isoformat(),
        "ideal_start": start.isoformat(),
        "deadline": deadline.isoformat(),
    }


def trigger(api: AirflowClient, story: Story, **conf: Any) -> None:
    """Triggers the story's run; its deadline is a year away unless ``conf`` says otherwise, so no
    deadline alert falls due during a story (a year is ~250 business days, over 30 min here)."""
    api.wait_for_dag(story.dag_id, timeout=DAG_PARSE_TIMEOUT)
    api.unpause(story.dag_id)
    today = customer_today(story)
    dates = request_case_dates(today, today + timedelta(days=365))
    story.triggered_at = time.time()
    api.trigger(
        story.dag_id,
        {"seconds_per_business_day": story.seconds_per_day, **dates, **conf},
        run_id=story.run_id,
        note="SLA end-to-end test",
    )


def watcher_starts(stage: Stage, story: Story) -> int:
    """How often a triggerer started the run's SLA watcher (its trigger log says so each time)."""
    folder = (
        stage.airflow.settings.logs_dir / f"dag_id={story.dag_id}/run_id={story.run_id}/task_id=sla_watch"
    )
    return sum(
        path.read_text(encoding="utf-8", errors="replace").count("watching the SLA clock")
        for path in folder.glob("attempt=*.log.trigger.*.log")
    )


def wait_for_watcher_starts(stage: Stage, story: Story, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while watcher_starts(stage, story) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"the SLA watcher of {story.run_id} did not start {count} time(s)")
        time.sleep(0.2)


def crash(stage: Stage, api: AirflowClient, story: Story) -> None:
    """Scheduler and triggerer die (SIGKILL) and come back while Respond to Request's clock runs.

    The other stories start once the new triggerer took the watcher over (a killed triggerer's
    triggers move only when its heartbeat is 30 s old), so none of their alerts fall due meanwhile.
    """
    trigger(api, story)
    api.wait_for_pending_hitl(story.dag_id, story.run_id, "initiation.respond_to_request", timeout=120)
    wait_for_watcher_starts(stage, story, 1, timeout=60)
    with ledger_of(stage) as ledger:
        due = start_of(ledger, story, "initiation.respond_to_request") + timedelta(
            seconds=story.seconds_per_day
        )
    story.observed["killed_at"] = datetime.now(UTC)
    story.observed["due"] = due
    with pytest.MonkeyPatch.context() as patch:  # as the airflow fixture started them
        for conn_id, connection in stage.connections.items():
            patch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        harness.restart(stage.airflow.settings, ("scheduler", "triggerer"), kill=True, die_with_caller=True)
    story.observed["restarted_at"] = datetime.now(UTC)
    wait_for_watcher_starts(stage, story, 2, timeout=90)
    story.observed["taken_over_at"] = datetime.now(UTC)
    stage.restarted.set()
    stage.mails.wait_for(miss_mail(story, "Respond to Request"), timeout=story.seconds_per_day + 60)
    time.sleep(SETTLE_SECONDS)
    stop_run(api, story)


def late_response(stage: Stage, api: AirflowClient, story: Story) -> None:
    """The consultant answers after the budget ran out; the PM acknowledges at once."""
    trigger(api, story)
    respond = "initiation.respond_to_request"
    api.wait_for_pending_hitl(story.dag_id, story.run_id, respond, timeout=120)
    stage.mails.wait_for(miss_mail(story, "Respond to Request"), timeout=story.seconds_per_day + 60)
    answer(api, story, respond, CONSULTANT)
    acknowledge = "initiation.acknowledge_request_formally"
    answer(api, story, acknowledge, PROJECT_MANAGER)
    api.wait_for_task_state(story.dag_id, story.run_id, acknowledge, {"success"}, timeout=60)
    with ledger_of(stage) as ledger:
        would_be_due = start_of(ledger, story, acknowledge) + timedelta(seconds=story.seconds_per_day)
    story.observed["acknowledge_would_be_due"] = would_be_due
    sleep_until(would_be_due + timedelta(seconds=SETTLE_SECONDS))
    stop_run(api, story)


def slow_sign_off(stage: Stage, api: AirflowClient, story: Story) -> None:
    """Everyone answers at once, except the customer, who signs Dev off after 4.5 business days."""

    def sign_off(detail: dict[str, Any], round_number: int) -> Answer:
        waiting_since = wait_for_event(stage, story, "dev.customer_sign_off", "waiting_on_customer", 60)
        story.observed["waiting_since"] = waiting_since
        sleep_until(waiting_since + timedelta(seconds=SIGN_OFF_WAIT_DAYS * story.seconds_per_day))
        return Answer("Signed off", {"customer_contact": "Quinn Tester", "feedback": ""}, user=CONSULTANT)

    def after(gate: AnsweredGate) -> None:
        if gate.task_id == "dev.customer_sign_off":
            api.wait_for_task_state(
                story.dag_id, story.run_id, "dev.customer_sign_off", {"success"}, timeout=60
            )
            stop_run(api, story)

    trigger(api, story)
    _, story.answered = drive_run(
        api,
        story.dag_id,
        story.run_id,
        GatePolicy({"dev.customer_sign_off": sign_off}),
        timeout=STORY_TIMEOUT,
        on_answer=after,
    )


def past_deadline(stage: Stage, api: AirflowClient, story: Story) -> None:
    """Ops triggers a run whose deadline date is already over (a week ago in the customer's zone: over
    in every zone, since local dates differ by 2 days at most), its request case otherwise valid."""
    today = customer_today(story)
    story.observed["deadline"] = today - timedelta(days=7)
    trigger(api, story, **request_case_dates(today, story.observed["deadline"]))
    at, _ = stage.mails.wait_for(
        lambda message: message["Subject"].startswith(f"[Deadline missed] {story.name}:"), timeout=60
    )
    story.observed["alerted_after"] = at - story.triggered_at
    time.sleep(SETTLE_SECONDS)
    stop_run(api, story)


PLAYS: dict[str, tuple[Callable[[Stage, AirflowClient, Story], None], float]] = {
    "crash": (crash, CRASH_SECONDS_PER_DAY),
    "late": (late_response, SECONDS_PER_DAY),
    "wait": (slow_sign_off, SIGN_OFF_SECONDS_PER_DAY),
    "deadline": (past_deadline, DEADLINE_SECONDS_PER_DAY),
}


def play(stage: Stage, customer: ScenarioCustomer, name: str) -> Story:
    script, seconds_per_day = PLAYS[name]
    story = Story(customer, run_id=f"e2e__{customer.customer_id}", seconds_per_day=seconds_per_day)
    with stage.airflow.client() as api:
        try:
            if name != "crash" and not stage.restarted.wait(timeout=STORY_TIMEOUT):
                raise RuntimeError("the crash story never restarted Airflow")
            script(stage, api, story)
        except Exception as error:  # the test reports it with the run's state
            story.failure = f"{type(error).__name__}: {error}"
        finally:
            if name == "crash":
                stage.restarted.set()  # the others go on even if the crash failed
        story.diagnostics = diagnostics(api, customer.dag_id, story.run_id)
    return story


@pytest.fixture(scope="module")
def stories(
    airflow: harness.LocalAirflow,
    sla_customers: dict[str, ScenarioCustomer],
    mail_clock: MailClock,
    webhook: WebhookReceiver,
    harness_connections: dict[str, dict[str, Any]],
) -> Iterator[dict[str, Future[Story]]]:
    stage = Stage(airflow, mail_clock, webhook, harness_connections)
    with ThreadPoolExecutor(max_workers=len(PLAYS), thread_name_prefix="sla-story") as pool:
        yield {name: pool.submit(play, stage, sla_customers[name], name) for name in PLAYS}


def story_of(stories: dict[str, Future[Story]], name: str) -> Story:
    return stories[name].result(timeout=STORY_TIMEOUT + DAG_PARSE_TIMEOUT)


def addresses(header: str | None) -> list[str]:
    return [part.strip() for part in (header or "").split(",") if part.strip()]


def miss_rows(ledger_dsn: str, story: Story) -> dict[str, dict[str, Any]]:
    with open_ledger(ledger_dsn) as ledger:
        return {row["budget_unit"]: row for row in ledger.sla_misses(story.dag_id, story.run_id)}


def assert_one_miss_alert(
    story: Story, mail_clock: MailClock, webhook: WebhookReceiver, row: dict[str, Any], title: str
) -> tuple[float, float]:
    """One e-mail to consultant and PM, one webhook; returns their delays after the budget ran out."""
    mails = mail_clock.matching(miss_mail(story, title))
    assert len(mails) == 1, [message["Subject"] for _, message in mails]
    received_at, message = mails[0]
    assert addresses(message["To"]) == [CONSULTANT_EMAIL, PM_EMAIL], message["To"]
    hooks = webhook.alerts(story.run_id, "sla_miss", row["budget_unit"])
    assert len(hooks) == 1, hooks
    hooked_at, payload = hooks[0]
    assert (payload["owner_role"], payload["owner_users"]) == ("consultant", [CONSULTANT]), payload
    assert datetime.fromisoformat(payload["planned_finish"]) == row["planned_finish"], payload
    due = row["planned_finish"].timestamp()
    return received_at - due, hooked_at - due


# --- the tests ----------------------------------------------------------------------------------------


def test_late_response_is_alerted_once_by_email_and_webhook_as_its_budget_runs_out(
    stories: dict[str, Future[Story]],
    airflow: harness.LocalAirflow,
    mail_clock: MailClock,
    webhook: WebhookReceiver,
) -> None:
    story = story_of(stories, "late").played()
    with open_ledger(airflow.settings.ledger_dsn) as ledger:
        started = start_of(ledger, story, "initiation.respond_to_request")
    row = miss_rows(airflow.settings.ledger_dsn, story).get("respond_to_request")
    assert row is not None, story.diagnostics

    assert (row["owner"], row["budget_days"]) == ("consultant", 1), row
    # its clock: from the activity's ready event, one rehearsal business day, nothing paused
    assert row["planned_finish"] == started + timedelta(seconds=story.seconds_per_day), (row, started)
    assert row["overrun_days"] >= 0, row
    assert list(row["activity_keys"]) == ["initiation.respond_to_request"], row
    assert row["notified"] == {"email": "sent", "webhook": "sent"}, row
    mail_delay, webhook_delay = assert_one_miss_alert(story, mail_clock, webhook, row, "Respond to Request")
    print(f"late response: e-mail {mail_delay:.3f} s, webhook {webhook_delay:.3f} s after the budget ran out")
    assert 0 <= mail_delay <= ALERT_LATENCY_SECONDS, mail_delay
    assert 0 <= webhook_delay <= ALERT_LATENCY_SECONDS, webhook_delay


def test_activity_finished_within_its_budget_is_never_alerted(
    stories: dict[str, Future[Story]],
    airflow: harness.LocalAirflow,
    mail_clock: MailClock,
    webhook: WebhookReceiver,
) -> None:
    story = story_of(stories, "late").played()
    # the story waited until past the instant its budget would have run out
    assert datetime.now(UTC) > story.observed["acknowledge_would_be_due"]
    with open_ledger(airflow.settings.ledger_dsn) as ledger:
        finished = [
            event
            for event in ledger.events(story.dag_id, story.run_id)
            if event["activity_key"] == "initiation.acknowledge_request_formally"
            and event["event"] == "finished"
        ]
    assert finished and finished[0]["at"] < story.observed["acknowledge_would_be_due"], finished
    misses = miss_rows(airflow.settings.ledger_dsn, story)
    assert set(misses) == {"respond_to_request"}, (misses, story.diagnostics)
    assert mail_clock.matching(miss_mail(story, "Acknowledge Request Formally")) == []
    assert [alert["budget_unit"] for _, alert in webhook.alerts(story.run_id, "sla_miss")] == [
        "respond_to_request"
    ]


def test_customer_wait_pauses_the_consultants_budget_and_reminds_the_customer_once(
    stories: dict[str, Future[Story]],
    airflow: harness.LocalAirflow,
    mail_clock: MailClock,
    webhook: WebhookReceiver,
) -> None:
    story = story_of(stories, "wait").played()
    customer = story.customer
    signed = [gate for gate in story.answered if gate.task_id == "dev.customer_sign_off"]
    assert [gate.option for gate in signed] == ["Signed off"], story.answered
    ledger_dsn = airflow.settings.ledger_dsn
    with open_ledger(ledger_dsn) as ledger:
        reminders = ledger.customer_reminders(story.dag_id, story.run_id)
        events = ledger.events(story.dag_id, story.run_id)
    resumed = [
        event["at"]
        for event in events
        if event["activity_key"] == "dev.customer_sign_off" and event["event"] in ("resumed", "finished")
    ]
    waited = (min(resumed) - story.observed["waiting_since"]).total_seconds() / story.seconds_per_day
    assert SIGN_OFF_WAIT_DAYS <= waited < 2 * REMINDER_DAYS, waited  # one reminder due, not two

    clock = sla_state(
        customer.config.process_model(),
        calendar_for(customer.config.calendar, story.seconds_per_day),
        events,
        reminder_days=REMINDER_DAYS,
        now=datetime.now(UTC),
    ).unit("development")
    print(
        f"sign-off wait: {waited:.2f} days; Development used {clock.consumed_days:.2f} of"
        f" {clock.budget_days} days, {clock.paused_days:.2f} paused"
    )
    assert clock.status == "finished" and clock.paused_days >= SIGN_OFF_WAIT_DAYS, clock
    # without the pause the wait alone would have overrun the budget
    assert clock.consumed_days < DEVELOPMENT_DAYS < clock.consumed_days + clock.paused_days, clock
    development = miss_rows(ledger_dsn, story).get("development")
    assert development is None, development
    assert [(row["budget_unit"], row["number"], row["owner"]) for row in reminders] == [
        ("development", 1, "customer")
    ], reminders
    assert reminders[0]["wait_started_at"] == story.observed["waiting_since"], reminders
    assert reminders[0]["due_at"] == story.observed["waiting_since"] + timedelta(
        seconds=REMINDER_DAYS * story.seconds_per_day
    ), reminders
    assert reminders[0]["notified"] == {"email": "sent", "webhook": "sent"}, reminders

    mails = mail_clock.matching(lambda m: m["Subject"].startswith("Reminder ") and story.name in m["Subject"])
    assert [message["Subject"].split(":")[0] for _, message in mails] == ["Reminder 1"], mails
    message = mails[0][1]
    assert addresses(message["To"]) == list(customer.contact_emails), message["To"]
    assert addresses(message["Cc"]) == [CONSULTANT_EMAIL], message["Cc"]
    assert mail_clock.matching(miss_mail(story, "Development")) == []
    assert len(webhook.alerts(story.run_id, "customer_reminder")) == 1
    assert webhook.alerts(story.run_id, "sla_miss", "development") == []


def test_a_miss_still_goes_out_once_after_scheduler_and_triggerer_crash_and_restart(
    stories: dict[str, Future[Story]],
    airflow: harness.LocalAirflow,
    mail_clock: MailClock,
    webhook: WebhookReceiver,
) -> None:
    story = story_of(stories, "crash").played()
    assert story.observed["killed_at"] < story.observed["due"], story.observed  # the clock was running
    row = miss_rows(airflow.settings.ledger_dsn, story).get("respond_to_request")
    assert row is not None, story.diagnostics
    assert row["planned_finish"] == story.observed["due"], row
    assert row["notified"] == {"email": "sent", "webhook": "sent"}, row
    mail_delay, webhook_delay = assert_one_miss_alert(story, mail_clock, webhook, row, "Respond to Request")
    observed = story.observed
    restart_seconds = (observed["restarted_at"] - observed["killed_at"]).total_seconds()
    takeover_seconds = (observed["taken_over_at"] - observed["killed_at"]).total_seconds()
    ahead = (row["planned_finish"] - observed["taken_over_at"]).total_seconds()
    print(
        f"crash: up {restart_seconds:.1f} s after the kill, watcher resumed after {takeover_seconds:.1f} s,"
        f" {ahead:.1f} s before the due time;"
        f" e-mail {mail_delay:.3f} s, webhook {webhook_delay:.3f} s after it"
    )
    # never early; and promptly once a watcher runs again (on a loaded machine the new triggerer may
    # take the watch over only after the due time: then it sends at once on taking over)
    late_takeover = max(0.0, -ahead)
    assert 0 <= mail_delay <= late_takeover + ALERT_LATENCY_SECONDS, (mail_delay, ahead)
    assert 0 <= webhook_delay <= late_takeover + ALERT_LATENCY_SECONDS, (webhook_delay, ahead)


def test_a_deadline_already_past_at_trigger_time_is_alerted_at_once(
    stories: dict[str, Future[Story]], airflow: harness.LocalAirflow, mail_clock: MailClock
) -> None:
    story = story_of(stories, "deadline").played()
    mails = mail_clock.matching(lambda m: m["Subject"].startswith(f"[Deadline missed] {story.name}:"))
    assert len(mails) == 1, [message["Subject"] for _, message in mails]
    assert addresses(mails[0][1]["To"]) == [PM_EMAIL], mails[0][1]["To"]  # the PM owns the run's dates
    body = mails[0][1].get_content()
    assert f"/dags/{story.dag_id}/runs/{quote(story.run_id, safe='')}" in body, body  # a link to the run
    print(f"past deadline: alerted {story.observed['alerted_after']:.1f} s after the trigger")
    assert story.observed["alerted_after"] < 30, story.observed
    with open_ledger(airflow.settings.ledger_dsn) as ledger:
        rows = [row for row in ledger.run_deadline_alerts(story.dag_id, story.run_id)]
    missed = [row for row in rows if row["kind"] == "deadline_missed"]
    assert len(missed) == 1, rows
    assert missed[0]["notified"].get("email") == "sent", missed
    assert missed[0]["due_at"] <= missed[0]["detected_at"], missed
