"""SLA alert wording and recipients: every channel states who, what, when (local and UTC) and by how much."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from managed_upgrade.config import load_customer_config
from managed_upgrade.sla.alerts import (
    Alert,
    alert_recipients,
    email_body,
    email_subject,
    task_url,
    webhook_payload,
)

CUSTOMERS = Path(__file__).resolve().parents[3] / "include" / "customers"
GLOBEX = load_customer_config(CUSTOMERS / "globex.yaml")
URL = "http://airflow.example/dags/managed_upgrade__globex/runs/manual__1/tasks/dev.upgrade_dev"

MISS = Alert(
    kind="sla_miss",
    customer_id="globex",
    customer_name="Globex GmbH",
    dag_id="managed_upgrade__globex",
    run_id="manual__1",
    budget_unit="development",
    title="Development",
    owner_role="consultant",
    owner_users=("gina",),
    planned_finish=datetime(2027, 1, 26, 23, 0, tzinfo=UTC),
    now=datetime(2027, 1, 27, 11, 0, tzinfo=UTC),
    overrun_days=0.54,
    task_url=URL,
    timezone="Europe/Berlin",
)


def facts_of(body: str) -> dict[str, str]:
    """The body's ``Label:   value`` lines (alignment aside)."""
    return dict(re.findall(r"^([A-Z][A-Za-z ]+):\s+(.+)$", body, flags=re.MULTILINE))


REMINDER = dataclasses.replace(
    MISS,
    kind="customer_reminder",
    budget_unit="customer_sign_off_dev",
    title="Customer Sign-off (Development)",
    owner_role="customer",
    owner_users=(),
    number=2,
    overrun_days=0.0,
    waiting_since=datetime(2027, 1, 11, 8, 0, tzinfo=UTC),
)


def test_a_miss_subject_names_customer_activity_and_overrun() -> None:
    assert email_subject(MISS) == "[SLA miss] Globex GmbH: Development is 0.5 business days over budget"


def test_a_miss_alerted_as_the_budget_runs_out_does_not_claim_zero_days_over() -> None:
    at_once = dataclasses.replace(MISS, overrun_days=0.001)
    assert (
        email_subject(at_once) == "[SLA miss] Globex GmbH: Development has used up its budget and is not done"
    )


def test_a_miss_body_states_every_fact_in_the_customers_zone_and_utc() -> None:
    body = email_body(MISS)
    assert body.startswith(
        "Development for Globex GmbH has run out of budget and is not done yet; it is 0.5 "
    )
    assert facts_of(body) == {
        "Customer": "Globex GmbH (globex)",
        "Activity": "Development (development)",
        "Owner": "Consultant (gina)",
        "Planned finish": "2027-01-27 00:00 CET (2027-01-26 23:00 UTC)",
        "Now": "2027-01-27 12:00 CET (11:00 UTC)",
        "Overrun": "0.5 business days",
        "Run": "managed_upgrade__globex / manual__1",
        "Open in Airflow": URL,
    }
    assert body.endswith("Business days are counted in the customer's calendar (Europe/Berlin).\n")


def test_a_utc_customer_sees_times_once() -> None:
    body = email_body(dataclasses.replace(MISS, timezone="UTC", overrun_days=1.04, task_url=None))
    facts = facts_of(body)
    assert (facts["Planned finish"], facts["Overrun"]) == ("2027-01-26 23:00 UTC", "1.0 business day")
    assert "Open in Airflow" not in body


def test_a_reminder_speaks_to_the_customer_and_numbers_itself() -> None:
    assert email_subject(REMINDER) == (
        "Reminder 2: Globex GmbH managed upgrade is waiting for you (Customer Sign-off (Development))"
    )
    body = email_body(REMINDER)
    assert "waiting for your input on Customer Sign-off (Development). This is reminder 2" in body
    facts = facts_of(body)
    assert (facts["Reminder"], facts["Owner"]) == ("2", "Customer")
    assert facts["Waiting since"] == "2027-01-11 09:00 CET (08:00 UTC)"
    assert facts["Response due"] == "2027-01-27 00:00 CET (2027-01-26 23:00 UTC)"


@pytest.mark.parametrize(
    ("kind", "overrun", "subject", "lateness"),
    [
        ("deadline_warning", -3.0,
         "[Deadline warning] Globex GmbH: the upgrade must be complete by 2027-01-27",
         ("Time left", "3.0 business days")),
        ("deadline_missed", 0.26, "[Deadline missed] Globex GmbH: the upgrade was not complete by 2027-01-27",
         ("Overrun", "0.3 business days")),
        ("timeline_ceiling", 2.0,
         "[Timeline ceiling] Globex GmbH: the upgrade has run past its maximum timeline (2027-01-27)",
         ("Overrun", "2.0 business days")),
    ],
)  # fmt: skip
def test_run_deadlines_name_the_deadline_in_the_customers_calendar(
    kind: str, overrun: float, subject: str, lateness: tuple[str, str]
) -> None:
    alert = dataclasses.replace(
        MISS, kind=kind, budget_unit="", title="Managed upgrade", owner_role="project_manager",
        owner_users=("pete",), overrun_days=overrun,
    )  # fmt: skip
    assert email_subject(alert) == subject
    facts = facts_of(email_body(alert))
    assert facts[lateness[0]] == lateness[1]
    assert facts["Deadline"] == "2027-01-27 00:00 CET (2027-01-26 23:00 UTC)"
    assert (facts["Activity"], facts["Owner"]) == ("Managed upgrade", "Project Manager (pete)")


@pytest.mark.parametrize("kind", ["deadline_warning", "deadline_missed", "timeline_ceiling"])
def test_a_run_deadline_of_a_failed_run_says_the_run_is_not_progressing(kind: str) -> None:
    deadline = dataclasses.replace(
        MISS, kind=kind, budget_unit="", title="Managed upgrade", owner_role="project_manager",
        owner_users=("pete",), overrun_days=1.0,
    )  # fmt: skip
    failed = dataclasses.replace(deadline, run_state="failed")
    body = email_body(failed)
    assert "Its run has failed and is not progressing" in body.splitlines()[0]
    assert facts_of(body)["Run"] == "managed_upgrade__globex / manual__1 (failed)"
    assert webhook_payload(failed)["alert"]["run_state"] == "failed"
    running = email_body(dataclasses.replace(deadline, run_state="running"))
    assert "not progressing" not in running
    assert facts_of(running)["Run"] == "managed_upgrade__globex / manual__1 (running)"
    assert facts_of(email_body(deadline))["Run"] == "managed_upgrade__globex / manual__1"


def test_misses_go_to_the_owner_and_project_managers_copying_alerts_cc() -> None:
    config = GLOBEX.model_copy(
        update={
            "alerts": GLOBEX.alerts.model_copy(
                update={"cc": ("ops@platinum.example", "pete@platinum.example")}
            )
        }
    )
    assert alert_recipients(MISS, config) == (
        ["gina@platinum.example", "pete@platinum.example"],
        ["ops@platinum.example"],
    )


def test_a_miss_without_named_users_goes_to_everyone_in_the_owner_role() -> None:
    alert = dataclasses.replace(MISS, owner_users=())
    to, _ = alert_recipients(alert, GLOBEX)
    assert to == ["carla@platinum.example", "gina@platinum.example", "pete@platinum.example"]


def test_a_miss_of_an_unknown_user_names_the_user_and_the_fix() -> None:
    with pytest.raises(LookupError, match="no contact of customer globex has user vic"):
        alert_recipients(dataclasses.replace(MISS, owner_users=("vic",)), GLOBEX)


def test_reminders_go_to_the_customer_contacts_copying_the_consultants() -> None:
    assert alert_recipients(REMINDER, GLOBEX) == (
        ["g.weber@globex.example", "it-ops@globex.example"],
        ["carla@platinum.example", "gina@platinum.example"],
    )


def test_webhook_payload_is_slack_blocks_with_the_same_facts() -> None:
    payload = webhook_payload(MISS)
    json.dumps(payload)  # what the notifier posts
    assert payload["text"].startswith(email_subject(MISS))
    header, headline, facts, actions = payload["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": email_subject(MISS)}}
    assert "has run out of budget" in headline["text"]["text"]
    fields = [field["text"] for field in facts["fields"]]
    assert "*Owner*\nConsultant (gina)" in fields
    assert "*Planned finish*\n2027-01-27 00:00 CET (2027-01-26 23:00 UTC)" in fields
    assert "*Overrun*\n0.5 business days" in fields
    assert actions["elements"][0]["url"] == URL
    assert payload["alert"]["planned_finish"] == "2027-01-26T23:00:00+00:00"
    assert payload["alert"]["overrun_days"] == 0.5


def test_webhook_text_cannot_inject_slack_markup() -> None:
    alert = dataclasses.replace(MISS, customer_name="Globex <!channel> & Co", task_url=None)
    payload = webhook_payload(alert)
    assert "<!channel>" not in json.dumps(payload["blocks"][1:]) and "<!channel>" not in payload["text"]
    assert "Globex &lt;!channel&gt; &amp; Co" in payload["text"]
    assert len(payload["blocks"]) == 3


def test_alerts_reject_naive_times_unknown_kinds_and_unnumbered_reminders() -> None:
    with pytest.raises(ValueError, match=r"Alert\.now must be timezone-aware"):
        dataclasses.replace(MISS, now=datetime(2027, 1, 27, 11, 0))
    with pytest.raises(ValueError, match="unknown alert kind 'page'"):
        dataclasses.replace(MISS, kind="page")
    with pytest.raises(ValueError, match="a customer reminder needs its number"):
        dataclasses.replace(REMINDER, number=None)


FAILURE = dataclasses.replace(
    MISS,
    kind="activity_failed",
    budget_unit="",
    title="Upgrade UAT environment",
    planned_finish=datetime(2027, 1, 27, 11, 0, tzinfo=UTC),
    overrun_days=0.0,
    error="UpgradeRolledBackError: uat: the installer failed at migrate_db\n"
    "RESTORE SUCCEEDED: uat was restored",
)


def test_a_failure_says_the_upgrade_stopped_and_shows_the_error_not_a_budget() -> None:
    assert email_subject(FAILURE) == (
        "[Failed] Globex GmbH: Upgrade UAT environment failed; the managed upgrade has stopped"
    )
    body = email_body(FAILURE)
    facts = facts_of(body)
    assert facts["Failed at"] == "2027-01-27 12:00 CET (11:00 UTC)"
    assert facts["Error"] == "UpgradeRolledBackError: uat: the installer failed at migrate_db"
    assert "Overrun" not in facts and "Planned finish" not in facts and "business day" not in body
    assert "    RESTORE SUCCEEDED: uat was restored" in body  # the error as raised, line by line
    assert "clear the task once the cause is fixed" in body
    payload = webhook_payload(FAILURE)
    assert payload["alert"]["kind"] == "activity_failed"
    assert payload["alert"]["error"] == FAILURE.error


def test_a_failure_s_error_is_cut_in_the_middle_keeping_what_failed_and_how_it_ended() -> None:
    error = "UpgradeRolledBack: migrate_db failed\n" + "installer line\n" * 1000 + "RESTORE SUCCEEDED: uat"
    alert = dataclasses.replace(FAILURE, error=error)
    assert alert.error is not None and len(alert.error) == 2000
    assert alert.error.startswith("UpgradeRolledBack: migrate_db failed\n")
    assert alert.error.endswith("\nRESTORE SUCCEEDED: uat")
    head, cut, tail = re.fullmatch(
        r"(.*)\n… \((\d+) characters cut: the task log has them all\) …\n(.*)", alert.error, re.DOTALL
    ).groups()
    assert error == head + error[len(head) : len(error) - len(tail)] + tail
    assert int(cut) == len(error) - len(head) - len(tail)
    assert dataclasses.replace(FAILURE, error="short").error == "short"


def test_task_urls_quote_the_run_id() -> None:
    assert task_url(
        "http://airflow.example/", "managed_upgrade__acme", "manual__2027-01-11T09:00:00+00:00", "uat.x"
    ) == (
        "http://airflow.example/dags/managed_upgrade__acme/runs/manual__2027-01-11T09%3A00%3A00%2B00%3A00/tasks/uat.x"
    )
