"""The four customer messages say what the process document promises, to the right people, safely."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from managed_upgrade.config import load_customer_config
from managed_upgrade.config.run_settings import RunSettings, settings_from_conf
from managed_upgrade.messages.customer_emails import (
    EnvironmentOutcome,
    environment_handover_email,
    next_steps_table,
    request_acknowledged_email,
    request_received_email,
    upgrade_complete_email,
)
from managed_upgrade.verification.report import CaseResult, TestReport

CUSTOMERS = Path(__file__).resolve().parents[3] / "include" / "customers"
HOSTILE = '<script>alert("x")</script> & <b>bold</b>'


@pytest.fixture(scope="module")
def config():
    return load_customer_config(CUSTOMERS / "acme.yaml")


@pytest.fixture(scope="module")
def settings(config) -> RunSettings:
    case = config.request_case
    parsed, problems = settings_from_conf(
        {
            "case_id": case.case_id,
            "earliest_start": case.earliest_start,
            "ideal_start": case.ideal_start,
            "deadline": case.deadline,
            "deadline_reason": case.deadline_reason,
            "target_version": config.versions.target,
        }
    )
    assert not problems
    return parsed


class _TextOfHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _TextOfHtml:
    parser = _TextOfHtml()
    parser.feed(html)
    return parser


def test_request_received_promises_the_project_manager_within_one_business_day(config, settings):
    email = request_received_email(config, settings, information_gathered="VPN access confirmed")
    assert email.kind == "request_received"
    assert email.to == ("alice.admin@acme.example",)
    assert email.cc == ("carla@platinum.example", "pete@platinum.example")
    assert "ACME-1042" in email.subject
    for body in (email.text, " ".join(_parse(email.html).text)):
        assert "Pete Manager, will be in touch within 1 business day" in body
        assert "VPN access confirmed" in body
        assert "10.2.0" in body and "11.0.0" in body
        assert "Change freeze for the fiscal year end starts in April" in body
        assert "ERP order sync hook" in body
    assert "Carla Consultant" in email.text


def test_request_received_without_notes_has_no_empty_section(config, settings):
    email = request_received_email(config, settings)
    assert "gathered" not in email.text


def test_acknowledgement_lists_next_steps_with_planned_durations_from_the_process_model(config, settings):
    email = request_acknowledged_email(config, settings, kickoff_note="Kick-off call on Monday 10:00")
    process = config.process_model()
    assert "acknowledged" in email.subject.lower()
    assert "formally acknowledge receipt of your Platinum Service Request ACME-1042" in email.text
    assert "Kick-off call on Monday 10:00" in email.text
    for group, days in (("Analyse", 4), ("Test Case Verification", 4), ("Upgrade Preparation", 3),
                        ("Development", 12), ("UAT", 8), ("Production", 8)):  # fmt: skip
        assert process.budget_unit(next(u.id for u in process.budget_units if u.title == group)).days == days
        assert re.search(rf"<td>{group}</td><td>[^<]*</td><td>{days} business days</td>", email.html)
        assert f"Step: {group}\n" in email.text
        assert f"Planned duration: {days} business days" in email.text
    assert "Planned total: 39 business days (about 8 weeks)" in email.text
    assert "questionnaire" in email.text.lower()
    assert "Production is only upgraded after you have signed off UAT" in email.text
    assert "Pete Manager" in email.text


def test_acknowledgement_follows_duration_overrides(config, settings):
    process = config.process_model().with_overrides({"development": 15})
    table, total = next_steps_table(process)
    assert ("Development", 15) in {(row[0], int(row[2].split()[0])) for row in table.rows}
    assert total == 42
    email = request_acknowledged_email(config, settings, process=process)
    assert "Planned total: 42 business days" in email.text


def _report(environment: str, statuses: dict[str, str], *, baseline: TestReport | None = None) -> TestReport:
    now = datetime(2027, 2, 1, 12, tzinfo=UTC)
    report = TestReport(
        environment=environment,
        round=0 if baseline is None else 1,
        started_at=now,
        finished_at=now,
        results=tuple(
            CaseResult(id=case_id, title=f"Case {case_id}", kind="sql", status=status, duration=0.1)
            for case_id, status in statuses.items()
        ),
    )
    return report if baseline is None else report.compare_to(baseline)


def test_handover_names_environment_version_and_test_summary(config, settings):
    baseline = _report("dev", {"a": "passed", "b": "failed", "c": "passed"})
    report = _report("dev", {"a": "passed", "b": "failed", "c": "failed"}, baseline=baseline)
    email = environment_handover_email(
        config, settings, environment="dev", installed_version="11.0.0", report=report,
        known_issues="Case c: report export is slower; fix planned for UAT",
    )  # fmt: skip
    assert email.kind == "environment_handover"
    assert "Development environment upgraded to 11.0.0" in email.subject
    assert "1 of 3 passed" in email.text
    assert "failed (failed before the upgrade too)" in email.text
    assert "1 failed before the upgrade as well" in email.text
    assert "1 still fail; see the known issues below" in email.text
    assert "report export is slower" in email.text
    assert "continue with the UAT environment" in email.text
    assert email.to == ("alice.admin@acme.example",)


def test_handover_of_production_ends_the_process(config, settings):
    report = _report("prod", {"a": "passed"})
    email = environment_handover_email(
        config, settings, environment="prod", installed_version="11.0.0", report=report
    )
    assert "Production environment" in email.subject
    assert "Once you sign it off the upgrade is complete." in email.text


def test_handover_rejects_unknown_environment(config, settings):
    with pytest.raises(KeyError, match="staging"):
        environment_handover_email(
            config, settings, environment="staging", installed_version="11.0.0", report=_report("dev", {})
        )


def _outcomes(version: str = "11.0.0") -> list[EnvironmentOutcome]:
    return [
        EnvironmentOutcome(env, version, "10.2.0", "3 of 3 passed", f"carla on 2027-03-0{i}")
        for i, env in enumerate(("dev", "uat", "prod"), start=1)
    ]


def test_completion_states_latest_version_on_all_environments_with_a_table(config, settings):
    email = upgrade_complete_email(config, settings, _outcomes())
    assert email.kind == "upgrade_complete"
    assert "the latest version of Aurea CRM, 11.0.0, is running on all the environments" in email.text
    assert "all environments" in email.subject
    html_rows = re.findall(r"<tr><td>(\w+)</td><td>10\.2\.0</td><td>11\.0\.0</td>", email.html)
    assert html_rows == ["Development", "UAT", "Production"]
    assert "carla on 2027-03-03" in email.text


def test_completion_refuses_an_environment_not_at_target(config, settings):
    outcomes = _outcomes()
    outcomes[2] = EnvironmentOutcome("prod", "10.2.0", "10.2.0")
    with pytest.raises(ValueError, match=r"prod: runs 10\.2\.0, not the target 11\.0\.0"):
        upgrade_complete_email(config, settings, outcomes)
    with pytest.raises(ValueError, match="uat: no outcome"):
        upgrade_complete_email(config, settings, {"dev": outcomes[0], "prod": _outcomes()[2]})


def test_html_escapes_every_value_and_text_keeps_it_verbatim(config, settings):
    email = request_received_email(config, settings, information_gathered=HOSTILE)
    assert "<script>" not in email.html
    assert "&lt;script&gt;" in email.html
    assert "&amp; &lt;b&gt;bold&lt;/b&gt;" in email.html
    assert HOSTILE in " ".join(_parse(email.html).text)
    assert set(_parse(email.html).tags) <= {"html", "head", "meta", "title", "body", "p", "br", "h3", "ul",
                                            "li", "table", "tr", "th", "td"}  # fmt: skip
    assert HOSTILE in email.text


def test_subject_never_carries_a_line_break(config, settings):
    email = request_received_email(config, settings)
    assert "\n" not in email.subject and "\r" not in email.subject


def test_to_dict_is_json_ready(config, settings):
    data = request_received_email(config, settings).to_dict()
    assert data["to"] == ["alice.admin@acme.example"]
    assert set(data) == {"kind", "subject", "text", "html", "to", "cc"}
