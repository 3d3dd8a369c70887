"""The messages the customer receives during a managed upgrade, built from the config and the run's facts.

The process document promises the customer four messages: the receipt of the request (the Platinum
Project Manager will be in touch within 1 business day), the formal acknowledgement with an overview
of the next steps, the hand-over of each environment for testing and sign-off, and the completion
("latest version running on all environments"). Building them here, without Airflow, keeps their
wording testable and lets a manager preview a message before it is sent.

This module gathers the facts of a message; its wording is in the templates of
:mod:`managed_upgrade.messages.templating`, one per message kind and format: ``<kind>.subject.txt.j2``,
``<kind>.txt.j2`` and ``<kind>.html.j2``. The HTML templates escape every value, so no
customer-provided value (a customization, a note typed into a gate) can inject markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from managed_upgrade.config import ENVIRONMENT_NAMES, CustomerConfig, Role
from managed_upgrade.config.run_settings import RunSettings
from managed_upgrade.messages.templating import macro, render
from managed_upgrade.process.model import BudgetUnit, ProcessModel
from managed_upgrade.verification.report import TestReport
from managed_upgrade.vocabulary import parse_version

EmailKind = Literal[
    "request_received",
    "request_acknowledged",
    "questionnaire_follow_up",
    "environment_handover",
    "upgrade_complete",
]

ENVIRONMENT_TITLES = {"dev": "Development", "uat": "UAT", "prod": "Production"}
BUSINESS_DAYS_PER_WEEK = 5
TYPICAL_TIMELINE = "6-10 weeks"
"""The process document's typical duration of upgrading all three environments."""


@dataclass(frozen=True)
class CustomerEmail:
    """A message ready to send: recipients, subject, and the same content as plain text and HTML."""

    kind: EmailKind
    subject: str
    text: str
    html: str
    to: tuple[str, ...]
    cc: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (XCom, previews)."""
        return {
            "kind": self.kind,
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "to": list(self.to),
            "cc": list(self.cc),
        }


def _one_line(text: str) -> str:
    """Mail headers must not carry line breaks (header injection); collapse all whitespace."""
    return " ".join(text.split())


def _message(kind: EmailKind, config: CustomerConfig, settings: RunSettings, **facts: Any) -> CustomerEmail:
    """The e-mail ``kind`` from its templates; ``facts``: the values they use besides config and settings."""
    context = {"config": config, "settings": settings, **facts}
    subject = _one_line(render(f"{kind}.subject.txt.j2", **context))
    cc = config.contact_emails(Role.CONSULTANT) + config.contact_emails(Role.PROJECT_MANAGER)
    return CustomerEmail(
        kind=kind,
        subject=subject,
        text=render(f"{kind}.txt.j2", **context),
        html=render(f"{kind}.html.j2", subject=subject, **context),
        to=config.contact_emails(Role.CUSTOMER),
        cc=tuple(dict.fromkeys(cc)),
    )


# --- (1) request received ----------------------------------------------------------------------


def request_received_email(
    config: CustomerConfig, settings: RunSettings, *, information_gathered: str = ""
) -> CustomerEmail:
    """After "Respond to Request": receipt, what we gathered, and the Project Manager's promise."""
    return _message("request_received", config, settings, information_gathered=information_gathered.strip())


# --- questionnaire follow-up ----------------------------------------------------------------------


def questionnaire_follow_up_email(
    config: CustomerConfig, settings: RunSettings, *, questions: str, number: int
) -> CustomerEmail:
    """During "Analyse": the consultant needs more details than the questionnaire gave."""
    return _message("questionnaire_follow_up", config, settings, questions=questions.strip(), number=number)


# --- (2) formal acknowledgement ----------------------------------------------------------------


@dataclass(frozen=True)
class NextSteps:
    """The steps after the acknowledgement, one row each: title, what happens, planned duration."""

    rows: tuple[tuple[str, str, str], ...]


def _step_activities(process: ProcessModel, unit: BudgetUnit) -> str:
    """What a step consists of: its seed activities and what the customer does in it."""
    titles = [
        activity.title
        for key in unit.activity_keys
        if (activity := process.activity(key)).seed or activity.owner == Role.CUSTOMER
    ]
    return "; ".join(titles)


def next_steps_table(process: ProcessModel) -> tuple[NextSteps, float]:
    """The process's steps after the acknowledgement with their planned durations, and their total."""
    business_days = macro("_email_parts.txt.j2", "business_days")
    units = [unit for unit in process.budget_units if unit.is_group]
    rows = tuple((unit.title, _step_activities(process, unit), business_days(unit.days)) for unit in units)
    return NextSteps(rows), float(sum(unit.days for unit in units))


def request_acknowledged_email(
    config: CustomerConfig,
    settings: RunSettings,
    *,
    process: ProcessModel | None = None,
    kickoff_note: str = "",
) -> CustomerEmail:
    """After "Acknowledge Request Formally": the formal receipt and the high-level next steps."""
    steps, total_days = next_steps_table(process or config.process_model())
    return _message(
        "request_acknowledged",
        config,
        settings,
        kickoff_note=kickoff_note.strip(),
        steps=steps,
        total_days=total_days,
        total_weeks=total_days / BUSINESS_DAYS_PER_WEEK,
        typical_timeline=TYPICAL_TIMELINE,
    )


# --- (3) hand-over for customer testing --------------------------------------------------------


def environment_handover_email(
    config: CustomerConfig,
    settings: RunSettings,
    *,
    environment: str,
    installed_version: str,
    report: TestReport,
    known_issues: str = "",
) -> CustomerEmail:
    """After an environment's sanity tests: it is yours to test; please sign it off."""
    config.environment(environment)
    later = ENVIRONMENT_NAMES[ENVIRONMENT_NAMES.index(environment) + 1 :]
    return _message(
        "environment_handover",
        config,
        settings,
        title=ENVIRONMENT_TITLES[environment],
        next_title=ENVIRONMENT_TITLES[later[0]] if later else None,
        installed_version=installed_version,
        report=report,
        known_issues=known_issues.strip(),
    )


# --- (4) completion ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvironmentOutcome:
    """What one environment ended with, for the completion summary."""

    environment: str
    version: str
    previous_version: str
    tests: str = ""
    """Headline of the last test round, e.g. ``"3 of 3 passed"``."""
    signed_off: str = ""
    """Who signed it off and when, as text."""


def upgrade_complete_email(
    config: CustomerConfig,
    settings: RunSettings,
    outcomes: Sequence[EnvironmentOutcome] | Mapping[str, EnvironmentOutcome],
) -> CustomerEmail:
    """After all environments run the target version: the seed's final output, with a summary table.

    Raises ``ValueError`` naming every environment that is missing or not at the target version, so
    the message can never claim a completion that did not happen.
    """
    by_env = dict(outcomes) if isinstance(outcomes, Mapping) else {o.environment: o for o in outcomes}
    problems = [f"{env}: no outcome" for env in ENVIRONMENT_NAMES if env not in by_env]
    problems += [
        f"{env}: runs {outcome.version}, not the target {settings.target_version}"
        for env, outcome in by_env.items()
        if env in ENVIRONMENT_NAMES
        and parse_version(outcome.version) != parse_version(settings.target_version)
    ]
    if problems:
        raise ValueError("cannot announce completion: " + "; ".join(problems))
    return _message(
        "upgrade_complete",
        config,
        settings,
        outcomes=[(ENVIRONMENT_TITLES[env], by_env[env]) for env in ENVIRONMENT_NAMES],
    )
