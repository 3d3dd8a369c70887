"""Managed upgrades end to end: ops triggers, consultants and the PM answer, the customer is told.

Four customers, each on Dev, UAT and Prod installations of its own, are upgraded at the same time
by one real Airflow (api-server, scheduler, dag-processor, triggerer) in rehearsal mode. People are
played through the REST API as the users the configs assign, the way they answer in the UI:

- happy path: every gate answered as asked, all three environments end on the target version,
  the customer receives each message the process promises, the ledger holds the whole story;
- fix loop: an upgrade breaks a customer's test case on Dev, the consultant fixes it (a settings
  file and SQL) and asks for a retest; the fix travels to UAT and Prod, which need no fix round;
- failed upgrade: the installer fails on UAT; UAT is restored and runs its old version again,
  Production is never touched and the customer never hears of a UAT hand-over;
- rejected sign-off: the PM may not answer the consultant's gate; the customer rejects Dev, the
  consultant fixes and retests, the customer signs off and the upgrade completes.

Each scenario's story runs in a thread of its own from the start of the module; each test waits
for its story and checks what people and systems can see afterwards.

Runs start now; rehearsal mode has no weekends, so the weekday does not matter. The request case's
dates are set around the customer's today at trigger time (deadline a year away), not taken from the
config, whose fixed dates would one day pass and put run-level deadline alerts inside the stories.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from scenario_customers import (
    CURRENT_VERSION,
    TARGET_VERSION,
    ScenarioCustomer,
    diagnostics,
    open_ledger,
    provision_customer,
    remove_customer,
    remove_folder,
    request_case_dates,
    run_row,
    task_log,
    xcom,
)

from airflow_local import harness
from airflow_local.client import AirflowApiError, AirflowClient
from airflow_local.settings import HarnessOverrides
from crm_estate import Estate
from crm_estate.installation import customer_file_settings
from managed_upgrade.config import ENVIRONMENT_NAMES
from managed_upgrade.dag_ids import review_dag_id_of
from managed_upgrade.operations.settings_files import parse_properties
from managed_upgrade.review.review_loop import REJECTED, RETEST, SIGNED_OFF
from managed_upgrade.review.review_runs import review_run_id
from managed_upgrade.verification.report import TestReport
from upgrade_demo.autopilot import Answer, AnsweredGate, GatePolicy, drive_run

TOKEN = uuid.uuid4().hex[:8]
CUSTOMERS_DIR = Path(tempfile.gettempdir()) / f"managed-upgrade-e2e-customers-{TOKEN}"
"""Known when the module is collected: the harness parameter names it before the fixtures run."""

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize(
        "airflow", [HarnessOverrides(customers_folder=CUSTOMERS_DIR)], indirect=True, ids=["scenarios"]
    ),
]

SECONDS_PER_BUSINESS_DAY = 20
DAG_PARSE_TIMEOUT = 240.0
STORY_TIMEOUT = 600.0
CONSULTANT, PROJECT_MANAGER = "carla", "pete"  # the `users` of include/customers/acme.yaml
ENV_TITLES = {"dev": "Development", "uat": "UAT", "prod": "Production"}

ANALYTICS_CASE = {
    "id": "no_analytics_settings",
    "title": "No analytics settings until the customer's data protection officer approves",
    "kind": "sql",
    "query": "SELECT count(*) FROM crm_settings WHERE key LIKE 'analytics.%'",
    "expect": {"scalar": 0},
}
"""Passes on 10.2.0; release 11.0.0 adds ``analytics.retention_days``, so it fails after the upgrade."""
FIX_SQL = "DELETE FROM crm_settings WHERE key LIKE 'analytics.%'"
FIX_FILE = "settings/analytics.properties"
FIX_FILE_TEXT = "# analytics off until the DPO approves (case E2E-FIXLOOP)\nanalytics.enabled=false\n"

CUSTOMERS = {
    # scenario: (customer id, request case id, extra test cases)
    "happy": ("e2e_happy", "E2E-HAPPY", ()),
    "fixloop": ("e2e_fixloop", "E2E-FIXLOOP", (ANALYTICS_CASE,)),
    "uatfail": ("e2e_uatfail", "E2E-UATFAIL", ()),
    "signoff": ("e2e_signoff", "E2E-SIGNOFF", ()),
}

INSTALLER_SECONDS = 12
"""How long each vendor installer run takes here (a real one takes minutes). A faster one lets the
trigger resume a deferred upgrade before the scheduler has handled the exit of the worker that
deferred it; Airflow 3.3.2 then fails the resumed task although the upgrade worked (apache/airflow
issue 72716), which a loaded two-core machine makes likely."""

GATES_ANSWERED_BY = {
    "initiation.respond_to_request": CONSULTANT,
    "initiation.acknowledge_request_formally": PROJECT_MANAGER,
    "initiation.analyse_questionnaire_and_system": CONSULTANT,
    "preparation.review_test_case_verification": CONSULTANT,
    "dev.customer_sign_off": CONSULTANT,
    "uat.customer_sign_off": CONSULTANT,
    "prod.customer_sign_off": CONSULTANT,
}
"""Who answers each gate of a run without fix rounds (the PM acknowledges, consultants do the rest)."""


# --- the estate and the Airflow of this module ----------------------------------------------------


@pytest.fixture(scope="session")
def scenario_customers(estate: Estate) -> Iterator[dict[str, ScenarioCustomer]]:
    """A customer per scenario on fresh installations, configs in ``CUSTOMERS_DIR``; removed after."""
    CUSTOMERS_DIR.mkdir(parents=True)
    customers: dict[str, ScenarioCustomer] = {}
    try:
        for scenario, (customer_id, case_id, extra_cases) in CUSTOMERS.items():
            customers[scenario] = provision_customer(
                estate, CUSTOMERS_DIR, customer_id, case_id, TOKEN, extra_cases
            )
        for scenario, customer in customers.items():
            for env in ENVIRONMENT_NAMES:
                # The UAT installer of that scenario fails half-way through migrating the config DB.
                step = "migrate_db" if (scenario, env) == ("uatfail", "uat") else None
                estate.set_fault(customer.install_path(env), step, slow_seconds=INSTALLER_SECONDS)
        yield customers
    finally:
        for customer in customers.values():
            remove_customer(estate, customer, CUSTOMERS_DIR)
        remove_folder(CUSTOMERS_DIR)


@pytest.fixture(scope="session")
def harness_connections(scenario_customers: dict[str, ScenarioCustomer]) -> dict[str, dict[str, Any]]:
    """The scenario customers' config databases, for the Airflow of this module."""
    return {
        conn_id: connection
        for customer in scenario_customers.values()
        for conn_id, connection in customer.connections.items()
    }


# --- stories: what people do, in a thread per scenario --------------------------------------------


@dataclass
class Story:
    """What happened in one scenario's run, as people and the REST API saw it."""

    customer: ScenarioCustomer
    run_id: str
    run: dict[str, Any] = field(default_factory=dict)
    answered: list[AnsweredGate] = field(default_factory=list)
    states: dict[str, str | None] = field(default_factory=dict)
    questions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """The HITL requests a scripted answer saw, per task id, in the order they were asked."""
    observed: dict[str, Any] = field(default_factory=dict)
    diagnostics: str = ""
    failure: str | None = None
    """Why the story could not be played to the end of the run (its steps so far are kept)."""

    @property
    def dag_id(self) -> str:
        return self.customer.dag_id

    def ended(self) -> Story:
        """The story, once the run reached its end; fails the test with what happened otherwise."""
        assert self.failure is None, f"{self.customer.customer_id}: {self.failure}\n{self.diagnostics}"
        return self

    def ask(self, detail: dict[str, Any]) -> None:
        self.questions.setdefault(detail["gate"]["task_id"], []).append(detail)

    def answered_by(self) -> dict[str, set[str]]:
        users: dict[str, set[str]] = {}
        for gate in self.answered:
            users.setdefault(gate.task_id, set()).add(gate.user)
        return users


Script = Callable[[AirflowClient, Story], GatePolicy]
"""The answers of a scenario: a policy whose scripted answers may act and observe through the API."""


class StoryFailed(AssertionError):
    """A scripted person met something the scenario does not expect (raised inside a story)."""


def cooperative(api: AirflowClient, story: Story) -> GatePolicy:
    """Everyone answers as the process expects (the autopilot's answers); sign-off questions are kept."""

    def keep_sign_off(detail: dict[str, Any], round_number: int) -> None:
        story.ask(detail)  # and no answer of its own: the autopilot's default signs off

    return GatePolicy({"customer_sign_off": keep_sign_off})


def consultant_fixes_dev(api: AirflowClient, story: Story) -> GatePolicy:
    """The consultant fixes the failing case on Dev once; UAT and Prod must not ask for a fix."""

    def fix_dev(detail: dict[str, Any], round_number: int) -> Answer:
        story.ask(detail)
        if round_number > 0:
            raise StoryFailed(f"Dev asked for another fix after the retest: {detail['subject']}")
        # Done on the Dev host before answering, as the gate tells the consultant to.
        (story.customer.install_path("dev") / FIX_FILE).write_text(FIX_FILE_TEXT, encoding="utf-8")
        return Answer(
            RETEST,
            {
                "fix_description": "Analytics off until the DPO approves: settings and DB keys removed.",
                "fix_files": [FIX_FILE],
                "fix_sql": FIX_SQL,
            },
        )

    def no_fix_expected(detail: dict[str, Any], round_number: int) -> Answer:
        story.ask(detail)
        raise StoryFailed(f"{detail['gate']['task_id']} asked for a fix: {detail['subject']}")

    return GatePolicy(
        {
            "dev.fix_and_retest": fix_dev,
            "uat.fix_and_retest": no_fix_expected,
            "prod.fix_and_retest": no_fix_expected,
        }
    )


def customer_rejects_dev_once(api: AirflowClient, story: Story) -> GatePolicy:
    """The PM tries to answer Dev's sign-off; the customer rejects it, then signs off after a retest."""

    def sign_off_dev(detail: dict[str, Any], round_number: int) -> Answer:
        story.ask(detail)
        if round_number == 0:
            try:
                api.answer_gate(
                    detail,
                    [SIGNED_OFF],
                    {"customer_contact": "Quinn Tester", "feedback": ""},
                    user=PROJECT_MANAGER,
                    expected=(403,),
                )
                story.observed["outsider_status"] = 403
            except AirflowApiError as error:
                story.observed["outsider_status"] = error.status
            still_open = api.run_gates(story.dag_id, story.run_id)
            story.observed["pending_after_outsider"] = [
                (item["gate"]["task_id"], item["gate"]["question"]) for item in still_open
            ]
            return Answer(
                REJECTED,
                {"customer_contact": "Quinn Tester", "feedback": "The account list loads too slowly."},
                user=CONSULTANT,
            )
        if round_number == 1:
            if RETEST not in detail["options"]:
                raise StoryFailed(
                    f"after the rejection, question {detail['gate']['question']} of dev.customer_sign_off "
                    f"asks {detail['subject']!r} with options {detail['options']}, not for the fix"
                )
            return Answer(
                RETEST,
                {"fix_description": "Cleared the account list cache; nothing to transfer."},
                user=CONSULTANT,
            )
        return Answer(
            SIGNED_OFF, {"customer_contact": "Quinn Tester", "feedback": "Fast now."}, user=CONSULTANT
        )

    return GatePolicy({"dev.customer_sign_off": sign_off_dev})


SCRIPTS: dict[str, Script] = {
    "happy": cooperative,
    "fixloop": consultant_fixes_dev,
    "uatfail": cooperative,
    "signoff": customer_rejects_dev_once,
}


def play(airflow: harness.LocalAirflow, customer: ScenarioCustomer, script: Script) -> Story:
    """Ops triggers the customer's DAG in rehearsal mode; people answer by ``script`` until it ends."""
    story = Story(customer, run_id=f"e2e__{customer.customer_id}")
    with airflow.client() as api:
        try:
            api.wait_for_dag(customer.dag_id, timeout=DAG_PARSE_TIMEOUT)
            api.unpause(customer.dag_id)
            api.trigger(
                customer.dag_id,
                {"seconds_per_business_day": SECONDS_PER_BUSINESS_DAY, **request_case_dates(customer)},
                run_id=story.run_id,
                note="end-to-end scenario",
            )
            story.run, story.answered = drive_run(
                api,
                customer.dag_id,
                story.run_id,
                script(api, story),
                timeout=STORY_TIMEOUT,
                check=airflow.require_running,
            )
            story.states = api.task_states(customer.dag_id, story.run_id)
        except Exception as error:  # the tests report it with the run's state; steps so far stay
            story.failure = f"{type(error).__name__}: {error}"
        story.diagnostics = diagnostics(api, customer.dag_id, story.run_id)
    return story


@pytest.fixture(scope="module")
def stories(
    airflow: harness.LocalAirflow, scenario_customers: dict[str, ScenarioCustomer]
) -> Iterator[dict[str, Future[Story]]]:
    """Every scenario's story, started at once (different DAGs run side by side)."""
    with ThreadPoolExecutor(max_workers=len(SCRIPTS), thread_name_prefix="story") as pool:
        yield {
            scenario: pool.submit(play, airflow, scenario_customers[scenario], script)
            for scenario, script in SCRIPTS.items()
        }


def story_of(stories: dict[str, Future[Story]], scenario: str) -> Story:
    return stories[scenario].result(timeout=STORY_TIMEOUT + DAG_PARSE_TIMEOUT)


# --- what people and systems see afterwards ---------------------------------------------------------


def mails_of(sink: Any, customer: ScenarioCustomer) -> list[EmailMessage]:
    """Every e-mail about the customer's request case (subjects start with ``[<case id>]``)."""
    return [
        message for message in list(sink.messages) if message["Subject"].startswith(f"[{customer.case_id}]")
    ]


def mail_with(messages: list[EmailMessage], subject_part: str) -> EmailMessage:
    found = [message for message in messages if subject_part in message["Subject"]]
    assert len(found) == 1, (
        f"expected one e-mail with {subject_part!r}; subjects: {[m['Subject'] for m in messages]}"
    )
    return found[0]


def addresses(header: str | None) -> list[str]:
    return [part.strip() for part in (header or "").split(",") if part.strip()]


def html_of(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("html",)).get_content()


def installed(estate: Estate, customer: ScenarioCustomer, env: str) -> tuple[str, int, dict[str, Any]]:
    """(VERSION, exit code and JSON of ``bin/crm status``) of the customer's ``env`` installation."""
    path = customer.install_path(env)
    code, status = estate.crm_status(path)
    return (path / "VERSION").read_text(encoding="utf-8").strip(), code, status


def reports_by_round(ledger_dsn: str, story: Story) -> dict[str, dict[int, TestReport]]:
    with open_ledger(ledger_dsn) as ledger:
        rows = ledger.test_reports(story.dag_id, story.run_id)
    reports: dict[str, dict[int, TestReport]] = {}
    for row in rows:
        reports.setdefault(row["environment"], {})[row["round"]] = TestReport.from_dict(row["report"])
    return reports


def sign_off_answers(ledger_dsn: str, story: Story, task_id: str) -> list[tuple[int, str, str]]:
    """(question, responded_by, option) of every recorded answer to ``task_id``, in question order."""
    with open_ledger(ledger_dsn) as ledger:
        rows = ledger.gate_answers(story.dag_id, story.run_id)
    return sorted(
        (row["question"], row["responded_by"], row["chosen_options"][0])
        for row in rows
        if row["task_id"] == task_id
    )


# --- the scenarios --------------------------------------------------------------------------------


def test_happy_path_upgrades_every_environment_and_keeps_the_customer_informed(
    stories: dict[str, Future[Story]], airflow: harness.LocalAirflow, estate: Estate, smtp_sink: Any
) -> None:
    story = story_of(stories, "happy").ended()
    customer = story.customer

    assert story.run["state"] == "success", story.diagnostics
    assert story.answered_by() == {task: {user} for task, user in GATES_ANSWERED_BY.items()}, (
        story.diagnostics
    )
    for env in ENVIRONMENT_NAMES:
        version, code, status = installed(estate, customer, env)
        assert (version, code, status["version"], status["ok"]) == (
            TARGET_VERSION,
            0,
            TARGET_VERSION,
            True,
        ), env

    # Settings: the customer's values survive the installer, untouched old defaults take the new ones.
    customized = customer_file_settings(customer.customer_id)["system.properties"]
    with airflow.client() as api:
        reapplied = {
            env: xcom(api, story.dag_id, story.run_id, f"{env}.reapply_settings") for env in ENVIRONMENT_NAMES
        }
    for env in ENVIRONMENT_NAMES:
        system = parse_properties((customer.install_path(env) / "settings/system.properties").read_text())
        assert {key: system[key] for key in customized} == customized, env
        assert system["ui.theme"] == "horizon", env  # 11.0.0's default, not 10.2.0's "classic" put back
        assert reapplied[env]["base"] == CURRENT_VERSION, reapplied[env]
        assert "ui.theme" in {item["key"] for item in reapplied[env]["new_defaults_kept"]}, reapplied[env]
        assert (
            "### Customer settings after the upgrade"
            in story.questions[f"{env}.customer_sign_off"][0]["body"]
        )

    messages = mails_of(smtp_sink, customer)
    completion = mail_with(
        messages, f"Managed Upgrade complete - Aurea CRM {TARGET_VERSION} on all environments"
    )
    case_mails = [
        mail_with(messages, "Managed Upgrade request received"),
        mail_with(messages, "Platinum Service Request acknowledged - Managed Upgrade next steps"),
        *(
            mail_with(
                messages,
                f"{ENV_TITLES[env]} environment upgraded to {TARGET_VERSION} - ready for your testing",
            )
            for env in ENVIRONMENT_NAMES
        ),
        completion,
    ]
    for message in case_mails:
        assert addresses(message["To"]) == list(customer.contact_emails), message["Subject"]
        assert addresses(message["Cc"]) == ["carla@platinum.example", "pete@platinum.example"], message[
            "Subject"
        ]
    completion_html = html_of(completion)
    for env in ENVIRONMENT_NAMES:
        row = f"<td>{ENV_TITLES[env]}</td><td>{CURRENT_VERSION}</td><td>{TARGET_VERSION}</td>"
        assert row in completion_html, completion_html

    ledger_dsn = airflow.settings.ledger_dsn
    run = run_row(ledger_dsn, story.dag_id, story.run_id)
    assert run is not None and run["finished_at"] is not None, run
    summary = run["summary"]
    assert summary["target_version"] == TARGET_VERSION
    assert summary["email"]["to"] == list(customer.contact_emails)
    for env in ENVIRONMENT_NAMES:
        part = summary["environments"][env]
        assert (part["previous_version"], part["version"]) == (CURRENT_VERSION, TARGET_VERSION), part
        assert part["signed_off"]["by"] == CONSULTANT, part
    with open_ledger(ledger_dsn) as ledger:
        answers = ledger.gate_answers(story.dag_id, story.run_id)
        backups = {env: ledger.backups(customer.customer_id, env) for env in ENVIRONMENT_NAMES}
    assert {(row["task_id"], row["responded_by"]) for row in answers} == set(GATES_ANSWERED_BY.items())
    for env, rows in backups.items():
        # "Backup Configuration Files" in preparation, then the backup just before the upgrade.
        assert len(rows) == 2, rows
        assert {(row["run_id"], row["version"]) for row in rows} == {(story.run_id, CURRENT_VERSION)}
        assert all(
            str(row["location"]).startswith(str(customer.installations[env].backup_path)) for row in rows
        )
    reports = reports_by_round(ledger_dsn, story)
    assert {env: sorted(rounds) for env, rounds in reports.items()} == {
        "dev": [0, 1],
        "uat": [1],
        "prod": [1],
    }
    for env, rounds in reports.items():
        for report in rounds.values():
            assert report.all_passed, f"{env} round {report.round}: {report.headline}"


def test_fix_on_dev_is_retested_then_carried_to_uat_and_prod(
    stories: dict[str, Future[Story]], airflow: harness.LocalAirflow, estate: Estate
) -> None:
    story = story_of(stories, "fixloop").ended()
    customer = story.customer

    assert story.run["state"] == "success", story.diagnostics
    fix_gate = story.questions["dev.fix_and_retest"]
    assert len(fix_gate) == 1 and RETEST in fix_gate[0]["options"], fix_gate
    assert "1 to fix" in fix_gate[0]["subject"], fix_gate[0]["subject"]
    assert ANALYTICS_CASE["id"] in fix_gate[0]["body"] or ANALYTICS_CASE["title"] in fix_gate[0]["body"]
    assert "uat.fix_and_retest" not in story.questions and "prod.fix_and_retest" not in story.questions
    assert [gate.user for gate in story.answered if gate.task_id == "dev.fix_and_retest"] == [CONSULTANT]

    with airflow.client() as api:
        retested = xcom(api, story.dag_id, story.run_id, "dev.fix_and_retest")
        transfers = {
            env: xcom(api, story.dag_id, story.run_id, f"{env}.transfer_fixes") for env in ("uat", "prod")
        }
        later_loops = {
            env: xcom(api, story.dag_id, story.run_id, f"{env}.fix_and_retest") for env in ("uat", "prod")
        }
    assert (retested["outcome"], retested["fix_rounds"], retested["decided_by"]) == ("green", [1], CONSULTANT)
    for env, transfer in transfers.items():
        assert (transfer["outcome"], transfer["rounds"]) == ("applied", ["dev#1"]), transfer
        assert [item["path"] for item in transfer["applied"]["files"]] == [FIX_FILE], transfer
        assert transfer["applied"]["sql_statements"] == 1, transfer
        assert later_loops[env]["outcome"] == "no_fixes_needed", later_loops[env]
        assert (customer.install_path(env) / FIX_FILE).read_text(encoding="utf-8") == FIX_FILE_TEXT

    ledger_dsn = airflow.settings.ledger_dsn
    with open_ledger(ledger_dsn) as ledger:
        fixes = ledger.fixes(story.dag_id, story.run_id)
    assert [(row["environment"], row["round"], row["recorded_by"]) for row in fixes] == [
        ("dev", 1, CONSULTANT)
    ]
    bundle = fixes[0]["bundle"]
    assert [item["path"] for item in bundle["files"]] == [FIX_FILE]
    assert FIX_SQL in str(bundle["sql"]), bundle["sql"]
    reports = reports_by_round(ledger_dsn, story)
    assert {env: sorted(rounds) for env, rounds in reports.items()} == {
        "dev": [0, 1, 2],
        "uat": [1],
        "prod": [1],
    }
    assert [case.id for case in reports["dev"][1].blocking_failures] == [ANALYTICS_CASE["id"]]
    assert reports["dev"][2].all_passed and reports["uat"][1].all_passed and reports["prod"][1].all_passed
    for env in ENVIRONMENT_NAMES:
        assert installed(estate, customer, env)[:2] == (TARGET_VERSION, 0), env


def test_failed_uat_upgrade_restores_uat_and_never_touches_production(
    stories: dict[str, Future[Story]], airflow: harness.LocalAirflow, estate: Estate, smtp_sink: Any
) -> None:
    story = story_of(stories, "uatfail").ended()
    customer = story.customer

    assert story.run["state"] == "failed", story.diagnostics
    assert story.states["uat.upgrade_environment"] == "failed", story.diagnostics
    assert story.states["dev.customer_sign_off"] == "success", story.diagnostics
    with airflow.client() as api:
        log = task_log(api, story.dag_id, story.run_id, "uat.upgrade_environment")
    assert "migrate_db" in log, log[-3000:]
    assert "RESTORE SUCCEEDED" in log and f"runs version {CURRENT_VERSION} again" in log, log[-3000:]

    version, code, status = installed(estate, customer, "uat")
    assert (version, code, status["ok"]) == (CURRENT_VERSION, 0, True), status
    version, code, status = installed(estate, customer, "prod")
    assert (version, code, status["ok"]) == (CURRENT_VERSION, 0, True), status
    prod_states = {task: state for task, state in story.states.items() if task.startswith("prod.")}
    assert prod_states and set(prod_states.values()) <= {None, "upstream_failed"}, prod_states

    messages = mails_of(smtp_sink, customer)
    assert mail_with(messages, "Development environment upgraded to")  # the customer does hear of Dev
    assert not [message for message in messages if "UAT environment" in message["Subject"]], [
        message["Subject"] for message in messages
    ]

    # The consultant and the PM hear of the failure when it happens; the customer does not.
    name = customer.config.name
    failures = [m for m in list(smtp_sink.messages) if m["Subject"].startswith(f"[Failed] {name}:")]
    assert [m["Subject"] for m in failures] == [
        f"[Failed] {name}: Upgrade UAT environment failed; the managed upgrade has stopped"
    ]
    alert = failures[0]
    assert addresses(alert["To"]) == ["carla@platinum.example", "pete@platinum.example"], alert["To"]
    body = alert.get_content()
    facts = dict(re.findall(r"^(\w[\w ]*):\s+(.+?)\s*$", body, flags=re.MULTILINE))
    assert facts["Error"].startswith("UpgradeRolledBack: upgrade on uat failed at step 'migrate_db'"), body
    assert "\n    RESTORE SUCCEEDED" in body, body  # the error as raised, the restore's outcome included
    assert f"/dags/{story.dag_id}/runs/" in body and "/tasks/uat.upgrade_environment" in body, body


def test_only_the_assigned_consultant_can_answer_the_customer_sign_off(
    stories: dict[str, Future[Story]], airflow: harness.LocalAirflow
) -> None:
    story = story_of(stories, "signoff")

    assert "outsider_status" in story.observed, f"{story.failure}\n{story.diagnostics}"
    assert story.observed["outsider_status"] == 403  # pete, the PM, is not assigned
    asked = story.questions["dev.customer_sign_off"][0]["gate"]
    assert asked["question"] == 1
    assert ("dev.customer_sign_off", 1) in story.observed["pending_after_outsider"]
    answers = sign_off_answers(airflow.settings.ledger_dsn, story, "dev.customer_sign_off")
    assert answers[:1] == [(1, CONSULTANT, REJECTED)], answers


def test_rejected_sign_off_is_fixed_retested_and_signed_off_then_the_upgrade_completes(
    stories: dict[str, Future[Story]], airflow: harness.LocalAirflow
) -> None:
    story = story_of(stories, "signoff").ended()

    questions = story.questions["dev.customer_sign_off"]
    assert [REJECTED in q["options"] for q in questions] == [True, False, True], [
        q["subject"] for q in questions
    ]
    assert RETEST in questions[1]["options"] and "rejection" in questions[1]["subject"], questions[1][
        "subject"
    ]
    assert [q["gate"]["question"] for q in questions] == [1, 2, 3]
    # each question is its own run of the customer's review DAG, named after the customer run
    assert [q["task_instance"]["dag_id"] for q in questions] == [review_dag_id_of(story.dag_id)] * 3
    assert questions[0]["task_instance"]["dag_id"] == story.dag_id.replace("__", "_review__", 1)
    assert [q["task_instance"]["dag_run_id"] for q in questions] == [
        review_run_id(story.dag_id, story.run_id, "dev.customer_sign_off", number) for number in (1, 2, 3)
    ]
    assert story.run["state"] == "success", story.diagnostics

    answers = sign_off_answers(airflow.settings.ledger_dsn, story, "dev.customer_sign_off")
    assert [(by, option) for _, by, option in answers] == [
        (CONSULTANT, REJECTED),
        (CONSULTANT, RETEST),
        (CONSULTANT, SIGNED_OFF),
    ]
    reports = reports_by_round(airflow.settings.ledger_dsn, story)
    assert sorted(reports["dev"]) == [0, 1, 2]  # the retest after the customer's rejection
