"""The wording templates: each is used, renders strictly for every customer, and takes values as data."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from managed_upgrade.config import DEFAULT_CUSTOMERS_DIR, CustomerConfig, load_customer_configs
from managed_upgrade.config.run_settings import RunSettings, settings_from_conf
from managed_upgrade.messages import templating
from managed_upgrade.messages.customer_emails import (
    CustomerEmail,
    EnvironmentOutcome,
    environment_handover_email,
    questionnaire_follow_up_email,
    request_acknowledged_email,
    request_received_email,
    upgrade_complete_email,
)
from managed_upgrade.review.review_loop import (
    ABORT,
    ACCEPT,
    REJECTED,
    RETEST,
    SIGN_OFF_OPTIONS,
    Action,
    Decision,
    GateAnswer,
    LoopHistory,
    Question,
    RecordedFix,
    RoundReport,
    decide_fix_and_retest,
    fix_request_body,
    known_issues,
    sign_off_body,
)
from managed_upgrade.verification.report import BaselineOutcome, CaseResult, CaseStatus, TestReport
from managed_upgrade_airflow.gates.initiation import (
    AcknowledgeRequestGate,
    RespondToRequestGate,
    ReviewTestCaseVerificationGate,
)
from managed_upgrade_airflow.gates.review import ReviewGate
from managed_upgrade_airflow.operators.customer_sign_off import CustomerSignOffOperator
from managed_upgrade_airflow.operators.fix_and_retest import FixAndRetestOperator
from managed_upgrade_airflow.operators.questionnaire_analysis import (
    ANSWERED,
    FOLLOW_UP,
    QuestionnaireAnalysisOperator,
    follow_ups,
)

ROOT = Path(__file__).resolve().parents[3]
AT = datetime(2027, 2, 1, 9, 0, tzinfo=UTC)
INJECTION = "{{ 12345*2 }} {% if true %}yes{% endif %} {{ config.name }}"


def _configs() -> dict[str, CustomerConfig]:
    configs, errors = load_customer_configs(DEFAULT_CUSTOMERS_DIR)
    assert not errors and configs
    return configs


CONFIGS = _configs()


def _settings(config: CustomerConfig, seconds_per_business_day: float | None = None) -> RunSettings:
    case = config.request_case
    settings, problems = settings_from_conf(
        {
            "case_id": case.case_id,
            "earliest_start": case.earliest_start,
            "ideal_start": case.ideal_start,
            "deadline": case.deadline,
            "deadline_reason": case.deadline_reason,
            "target_version": config.versions.target,
            "seconds_per_business_day": seconds_per_business_day,
        }
    )
    assert settings is not None, problems
    return settings


def _report(
    environment: str, statuses: dict[str, CaseStatus], baseline: dict[str, BaselineOutcome]
) -> TestReport:
    return TestReport(
        environment=environment,
        round=1,
        started_at=AT,
        finished_at=AT,
        results=tuple(
            CaseResult(id=case, title=f"Case {case}", kind="sql", status=status, duration=0.1,
                       baseline=baseline.get(case))
            for case, status in statuses.items()
        ),
    )  # fmt: skip


def customer_emails(config: CustomerConfig, text: str = "Notes\nover two lines") -> Iterator[CustomerEmail]:
    """Every customer e-mail, with and without each optional part."""
    settings = _settings(config)
    yield request_received_email(config, settings)
    yield request_received_email(config, settings, information_gathered=text)
    yield request_acknowledged_email(config, settings)
    yield request_acknowledged_email(config, settings, kickoff_note=text)
    questionnaire = config.questionnaire
    for answers, location in (({}, "the case"), ({"q": "a"}, None)):
        changed = questionnaire.model_copy(update={"answers": answers, "location": location})
        yield request_acknowledged_email(config.model_copy(update={"questionnaire": changed}), settings)
    yield questionnaire_follow_up_email(config, settings, questions=text, number=1)
    yield questionnaire_follow_up_email(config, settings, questions=text, number=2)
    failed, passed = CaseStatus.FAILED, CaseStatus.PASSED
    mixed = _report(
        "dev",
        {"a": passed, "b": failed, "c": failed},
        {
            "a": BaselineOutcome.STILL_PASSING,
            "b": BaselineOutcome.PRE_EXISTING,
            "c": BaselineOutcome.REGRESSION,
        },
    )
    for environment in ("dev", "uat", "prod"):
        yield environment_handover_email(
            config, settings, environment=environment, installed_version="11.0.0", report=mixed
        )
        yield environment_handover_email(
            config, settings, environment=environment, installed_version="11.0.0", report=mixed,
            known_issues=text,
        )  # fmt: skip
    yield environment_handover_email(
        config, settings, environment="dev", installed_version="11.0.0",
        report=_report("dev", {"a": passed}, {}),
    )  # fmt: skip
    outcomes = [
        EnvironmentOutcome(env, settings.target_version, config.versions.current, tests, signed)
        for env, tests, signed in (("dev", "3 of 3 passed", "carla"), ("uat", "", ""), ("prod", text, text))
    ]
    yield upgrade_complete_email(config, settings, outcomes)


def review_bodies(text: str = "why *this*") -> Iterator[str]:
    """Every review question's body, with and without each optional part."""
    reports = (
        RoundReport(round=0, blocking=0, headline="4 of 4 passed"),
        RoundReport(round=1, blocking=1, headline="3 of 4 passed", markdown="**3 of 4 passed** on dev"),
        RoundReport(round=2, blocking=1, headline="3 of 4 passed"),
    )
    fixes = (
        RecordedFix(1, "dev.fix", 1, "carla", AT, text, ("settings/a.properties",), 2),
        RecordedFix(2, "dev.fix", 2, "carla", AT, text),
    )
    rejection = GateAnswer(
        "dev.sign", 1, "carla", AT, (REJECTED,), {"customer_contact": text, "feedback": text}
    )
    issues = known_issues(
        [
            GateAnswer("dev.fix", 1, "carla", AT, (ACCEPT,), {"known_issues_reason": text}),
            GateAnswer("dev.fix", 2, "dan", None, (ACCEPT,), {"known_issues_reason": text}),
        ]
    )
    history = LoopHistory("dev", "dev.fix", reports, fixes, ())
    first = LoopHistory("dev", "dev.fix", reports[:2], (), ())
    for note, rounds_used, loop, found in ((None, 0, first, ()), (text, 5, history, issues)):
        fix = Decision(Action.ASK, reports[-1], Question.FIX, (RETEST, ACCEPT, ABORT), rounds_used, 5, note)
        yield fix_request_body(fix, loop, host="h", install_path="/p", database="d", issues=found)
        rejected = Decision(
            Action.ASK, reports[-1], Question.FIX, (ACCEPT, ABORT), rounds_used, 5, note, rejection
        )
        yield fix_request_body(rejected, loop, host="h", install_path="/p", database="d", issues=found)
        sign = Decision(Action.ASK, reports[1], Question.SIGN_OFF, SIGN_OFF_OPTIONS, rounds_used, 5, note)
        yield sign_off_body(sign, loop, version="11.0.0", customer_contacts=[text], issues=found)
        yield sign_off_body(sign, loop, version="11.0.0", customer_contacts=[], issues=())


def refused_answer_notes() -> Iterator[str | None]:
    """The note on top of a question whose previous answer was refused, both kinds."""
    reports = (RoundReport(round=1, blocking=1, headline="3 of 4 passed"),)
    for answer in (
        GateAnswer("dev.fix", 1, "carla", AT, (RETEST,), {}),  # no description
        GateAnswer("dev.fix", 1, "carla", None, (RETEST,), {"fix_description": "x"}),  # no fix recorded
    ):
        yield decide_fix_and_retest(LoopHistory("dev", "dev.fix", reports, (), (answer,)), 2, 5).note


def gate_bodies(config: CustomerConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every Initiation gate's body, as the gate renders it when it opens."""
    for seconds in (None, 30.0):
        settings = _settings(config, seconds)
        context: Any = {"ti": SimpleNamespace(xcom_pull=lambda task_ids, s=settings: s.to_conf())}
        yield RespondToRequestGate(task_id="respond", config=config).render_body(context)
        yield AcknowledgeRequestGate(task_id="acknowledge", config=config).render_body(context)
    for baseline in ("# Baseline\n\nall passed\n", None):
        gate = ReviewTestCaseVerificationGate(task_id="review", config=config)
        monkeypatch.setattr(gate, "baseline_markdown", lambda context, found=baseline: found)
        yield gate.render_body({})


def _asking(operator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``operator.question`` returns what would be asked instead of a question of a real task instance."""
    monkeypatch.setattr(operator, "question", lambda context, number, **asked: SimpleNamespace(**asked))


def review_questions(
    config: CustomerConfig, monkeypatch: pytest.MonkeyPatch, text: str = "why *this*"
) -> Iterator[Any]:
    """Subject and body of every question the review gates ask, with and without each optional part."""
    report = RoundReport(round=1, blocking=1, headline="3 of 4 passed")
    history = LoopHistory("uat", "uat.review", (report,), (), ())
    operators: tuple[type[ReviewGate], ...] = (FixAndRetestOperator, CustomerSignOffOperator)
    for operator_class in operators:
        operator = operator_class(task_id="uat.review", config=config, environment="uat")
        _asking(operator, monkeypatch)
        monkeypatch.setattr(operator, "environment_issues", lambda context: [])
        monkeypatch.setattr(operator, "installed_version", lambda context: "11.0.0", raising=False)
        questions = [(Question.FIX, (RETEST, ACCEPT, ABORT))]
        if operator.in_sign_off:
            questions.append((Question.SIGN_OFF, SIGN_OFF_OPTIONS))
        for reapplied in (None, {"base": "10.2.0", "restored": [], "conflicts": []}):
            context: Any = {"ti": SimpleNamespace(xcom_pull=lambda task_ids, found=reapplied: found)}
            for question, options in questions:
                decision = Decision(Action.ASK, report, question, options, 0, 5)
                for refusal in (None, text):
                    yield operator.review_question(context, decision, history, 1, refusal)


def questionnaire_questions(
    config: CustomerConfig, monkeypatch: pytest.MonkeyPatch, text: str = "Notes\nover two lines"
) -> Iterator[Any]:
    """Subject and body of every question of the questionnaire analysis, with and without each part."""
    asked = GateAnswer("analyse", 1, "carla", AT, (FOLLOW_UP,), {"follow_up_questions": text})
    answered = GateAnswer("analyse", 2, "dan", None, (ANSWERED,), {"customer_answers": text})
    refused = GateAnswer("analyse", 3, "dan", AT, (FOLLOW_UP,), {})
    questionnaire = config.questionnaire
    without = questionnaire.model_copy(update={"answers": {}, "location": None})
    for given in (questionnaire, without):
        operator = QuestionnaireAnalysisOperator(
            task_id="analyse", config=config.model_copy(update={"questionnaire": given})
        )
        _asking(operator, monkeypatch)
        for inventory in (None, {"markdown": "### DEV system inventory"}):
            context: Any = {"ti": SimpleNamespace(xcom_pull=lambda task_ids, found=inventory: found)}
            for answers in ([], [asked], [asked, answered], [asked, answered, refused]):
                rounds, last = follow_ups(answers)
                note = operator.refusal_note(last)
                yield operator.analysis_question(context, rounds, len(answers) + 1, note)
                if rounds and not rounds[-1].answers:
                    yield operator.wait_question(context, rounds, len(answers) + 1, note)


@pytest.fixture
def used_templates(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Names of the templates loaded while the test runs, directly or by import, include or extends."""
    used: set[str] = set()
    get_template = templating.ENVIRONMENT.get_template

    def recording(name: Any, *args: Any, **kwargs: Any) -> Any:
        used.add(str(name))
        return get_template(name, *args, **kwargs)

    monkeypatch.setattr(templating.ENVIRONMENT, "get_template", recording)
    return used


# --- every template used, strictly -----------------------------------------------------------------


def test_every_template_is_used_by_a_message_and_renders_for_every_customer(used_templates, monkeypatch):
    assert templating.template_names(), "no templates found"
    for config in CONFIGS.values():
        assert all(email.subject and email.text and email.html for email in customer_emails(config))
        assert all(gate_bodies(config, monkeypatch))
        questions = [*review_questions(config, monkeypatch), *questionnaire_questions(config, monkeypatch)]
        assert all(question.subject and question.body for question in questions)
    assert all(review_bodies())
    assert all(refused_answer_notes())
    assert sorted(used_templates) == templating.template_names()


def test_only_template_files_are_in_the_folder():
    files = sorted(path.name for path in templating.TEMPLATES_DIR.iterdir())
    assert files == templating.template_names()


def test_an_undefined_value_is_an_error_not_an_empty_string():
    with pytest.raises(UndefinedError, match="settings"):
        templating.render("request_received.subject.txt.j2", config=CONFIGS["acme"])


def test_the_environment_is_sandboxed_and_escapes_html_templates_only():
    environment = templating.ENVIRONMENT
    assert isinstance(environment, ImmutableSandboxedEnvironment)
    with pytest.raises(SecurityError):
        environment.from_string("{{ value.__class__.__mro__ }}").render(value="x")
    with pytest.raises(SecurityError):
        environment.from_string("{{ values.append(1) }}").render(values=[])
    escaped = {name: bool(environment.autoescape(name)) for name in templating.template_names()}
    assert escaped == {name: name.endswith(".html.j2") for name in templating.template_names()}


# --- values are data ---------------------------------------------------------------------------


def test_template_syntax_in_customer_values_is_printed_literally(monkeypatch):
    config = CONFIGS["acme"].model_copy(update={"name": "{{ 12345*2 }} Corp"})
    quoted = 0
    for email in customer_emails(config, text=INJECTION):
        assert "{{ 12345*2 }} Corp" in email.subject and "{{ 12345*2 }} Corp" in email.html
        assert "24690" not in email.text + email.html
        if INJECTION in email.text:
            quoted += 1
            assert INJECTION in email.html
    assert quoted >= 5
    bodies = list(gate_bodies(config, monkeypatch))
    assert not any("24690" in body for body in bodies)
    assert any("| Customer | {{ 12345\\*2 }} Corp (acme) |" in body for body in bodies)
    subjects = [
        gate.subject_for(config)
        for gate in (RespondToRequestGate, AcknowledgeRequestGate, ReviewTestCaseVerificationGate)
    ]
    assert all("{{ 12345*2 }} Corp" in subject for subject in subjects)
    questions = [
        *review_questions(config, monkeypatch, text=INJECTION),
        *questionnaire_questions(config, monkeypatch, text=INJECTION),
    ]
    assert not any("24690" in question.subject + question.body for question in questions)
    assert any(
        question.subject == "Customer sign-off of the UAT environment ({{ 12345*2 }} Corp)"
        for question in questions
    )
    assert any(
        question.subject == "Analyse the questionnaire and the Dev system of {{ 12345*2 }} Corp"
        for question in questions
    )
    assert any(
        "{{ 12345\\*2 }} {% if true %}yes{% endif %} {{ config.name }}" in question.body
        for question in questions
    )
    assert any(INJECTION in question.body for question in questions)  # the follow-up questions, fenced
    bodies = list(review_bodies(text=INJECTION))
    assert not any("24690" in body for body in bodies)
    assert any("{{ 12345\\*2 }} {% if true %}yes{% endif %} {{ config.name }}" in body for body in bodies)


# --- text and HTML say the same -------------------------------------------------------------------


class _Blocks(HTMLParser):
    """The text of every paragraph, heading, list item and table cell of an HTML e-mail, and its title."""

    BLOCKS = frozenset({"title", "p", "h3", "li", "th", "td"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.title = ""
        self._open: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.BLOCKS:
            self._open = []

    def handle_endtag(self, tag: str) -> None:
        if tag in self.BLOCKS and self._open is not None:
            text = "".join(self._open)
            if tag == "title":
                self.title = text
            else:
                self.blocks.append(text)
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open.append(data)


@pytest.mark.parametrize("customer", sorted(CONFIGS))
def test_the_html_and_the_text_of_every_email_say_the_same(customer):
    for email in customer_emails(CONFIGS[customer], text="<b>Notes</b> & 'quotes'\nover two lines"):
        parsed = _Blocks()
        parsed.feed(email.html)
        assert parsed.title == email.subject
        rest = email.text
        for block in sorted(parsed.blocks, key=len, reverse=True):
            assert block in email.text, (email.kind, block)
            rest = rest.replace(block, "")
        # what is left is layout only: table rules and padding, bullets, heading underlines
        assert set(rest) <= set(" -=:\n"), (email.kind, rest)


# --- shipped with the package ------------------------------------------------------------------------


def test_the_templates_ship_where_include_is_used():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY --chown=airflow:0 include/ /opt/airflow/include/" in dockerfile
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for name in templating.template_names():
        path = (templating.TEMPLATES_DIR / name).relative_to(ROOT).as_posix()
        parents = [path.rsplit("/", depth)[0] for depth in range(1, path.count("/") + 1)]
        for pattern in ignored:
            assert not any(
                fnmatch.fnmatch(candidate, pattern.rstrip("/")) for candidate in [path, *parents]
            ), f"{pattern!r} in .dockerignore keeps {path} out of the image"
