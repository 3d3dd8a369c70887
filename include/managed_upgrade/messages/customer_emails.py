"""The messages the customer receives during a managed upgrade, built from the config and the run's facts.

The process document promises the customer four messages: the receipt of the request (the Platinum
Project Manager will be in touch within 1 business day), the formal acknowledgement with an overview
of the next steps, the hand-over of each environment for testing and sign-off, and the completion
("latest version running on all environments"). Building them here, without Airflow, keeps their
wording testable and lets a manager preview a message before it is sent.

Each message is composed once as blocks (paragraphs, bullet lists, tables) and rendered twice: plain
text, and HTML through a Jinja2 template with autoescaping, so no customer-provided value (a
customization, a note typed into a gate) can inject markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jinja2
import markupsafe

from managed_upgrade.config import ENVIRONMENT_NAMES, CustomerConfig
from managed_upgrade.config.run_settings import RunSettings
from managed_upgrade.process.model import BudgetUnit, ProcessModel
from managed_upgrade.verification.report import CaseResult, TestReport
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
TEXT_TABLE_WIDTH = 100
"""Wider plain-text tables are written as one ``header: value`` record per row."""
TYPICAL_TIMELINE = "6-10 weeks"
"""The process document's typical duration of upgrading all three environments."""


# --- blocks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Heading:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


Block = Paragraph | Heading | Bullets | Table


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


# --- rendering ---------------------------------------------------------------------------------

_HTML = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    r"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{ subject }}</title></head>
<body style="font-family: Arial, Helvetica, sans-serif; font-size: 14px; color: #222;">
{% for block in blocks %}
{%- if block.kind == "paragraph" %}<p>{{ block.text | replace("\n", br) }}</p>
{% elif block.kind == "heading" %}<h3>{{ block.text }}</h3>
{% elif block.kind == "bullets" %}<ul>
{%- for item in block["items"] %}<li>{{ item | replace("\n", br) }}</li>{% endfor -%}
</ul>
{% elif block.kind == "table" %}
<table border="1" cellpadding="4" cellspacing="0" style="border-collapse: collapse;">
<tr>{% for cell in block.header %}<th align="left">{{ cell }}</th>{% endfor %}</tr>
{% for row in block.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endif %}
{%- endfor %}</body></html>
"""
)


def _block_for_html(block: Block) -> dict[str, Any]:
    kind = type(block).__name__.lower()
    return {"kind": kind, **block.__dict__}


def render_html(subject: str, blocks: Sequence[Block]) -> str:
    """The blocks as an HTML document; every value is escaped by the template."""
    blocks_data = [_block_for_html(block) for block in blocks]
    return _HTML.render(subject=subject, blocks=blocks_data, br=markupsafe.Markup("<br>\n"))


def _text_table(table: Table) -> str:
    """Aligned columns; a table too wide for a mail client becomes one ``header: value`` record per row."""
    widths = [
        max(len(row[index]) for row in (table.header, *table.rows)) for index in range(len(table.header))
    ]
    if sum(widths) + 2 * (len(widths) - 1) > TEXT_TABLE_WIDTH:
        records = (
            "\n".join(f"{name}: {cell}" for name, cell in zip(table.header, row, strict=True))
            for row in table.rows
        )
        return "\n\n".join(records)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    rows = [line(table.header), line(["-" * width for width in widths]), *(line(row) for row in table.rows)]
    return "\n".join(rows)


def render_text(blocks: Sequence[Block]) -> str:
    """The blocks as plain text: paragraphs, ``- `` bullets and column-aligned tables."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Heading):
            parts.append(f"{block.text}\n{'=' * len(block.text)}")
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        else:
            parts.append(_text_table(block))
    return "\n\n".join(parts) + "\n"


def _one_line(text: str) -> str:
    """Mail headers must not carry line breaks (header injection); collapse all whitespace."""
    return " ".join(text.split())


def _message(kind: EmailKind, config: CustomerConfig, subject: str, blocks: Sequence[Block]) -> CustomerEmail:
    subject = _one_line(subject)
    cc = config.contact_emails("consultant") + config.contact_emails("project_manager")
    return CustomerEmail(
        kind=kind,
        subject=subject,
        text=render_text(blocks),
        html=render_html(subject, blocks),
        to=config.contact_emails("customer"),
        cc=tuple(dict.fromkeys(cc)),
    )


# --- shared wording ----------------------------------------------------------------------------


def _names(contacts: Sequence[Any]) -> str:
    names = [contact.name for contact in contacts]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _greeting(config: CustomerConfig) -> Paragraph:
    return Paragraph(f"Dear {_names(config.contacts.customer)},")


def _signature(config: CustomerConfig, role: Literal["consultant", "project_manager"]) -> Paragraph:
    title = "Platinum Consultant" if role == "consultant" else "Platinum Project Manager"
    return Paragraph(f"Kind regards,\n{_names(getattr(config.contacts, role))}\n{title}, Platinum Services")


def _subject(settings: RunSettings, config: CustomerConfig, what: str) -> str:
    return f"[{settings.case_id}] {config.name}: {what}"


def _upgrade_phrase(config: CustomerConfig, settings: RunSettings) -> str:
    return (
        f"the Managed Upgrade of {config.name}'s Aurea CRM from version {config.versions.current} "
        f"to version {settings.target_version}"
    )


def _request_table(config: CustomerConfig, settings: RunSettings) -> Table:
    customizations = "; ".join(config.request_case.customizations) or "none listed"
    rows = (
        ("Case", settings.case_id),
        ("Current version", config.versions.current),
        ("Target version", settings.target_version),
        ("Earliest start date", settings.earliest_start.isoformat()),
        ("Ideal start date", settings.ideal_start.isoformat()),
        ("Deadline date for completion", settings.deadline.isoformat()),
        ("Reason for the deadline", settings.deadline_reason),
        ("Customizations", customizations),
    )
    return Table(("Request", "Value"), rows)


def _days(days: float) -> str:
    return f"{days:g} business day{'s' if days != 1 else ''}"


# --- (1) request received ----------------------------------------------------------------------


def request_received_email(
    config: CustomerConfig, settings: RunSettings, *, information_gathered: str = ""
) -> CustomerEmail:
    """After "Respond to Request": receipt, what we gathered, and the Project Manager's promise."""
    blocks: list[Block] = [
        _greeting(config),
        Paragraph(
            f"Thank you for your Platinum Services request {settings.case_id}. We have received your "
            f"request for {_upgrade_phrase(config, settings)}."
        ),
    ]
    if information_gathered.strip():
        blocks += [
            Paragraph("The information we have gathered for your upgrade request so far:"),
            Paragraph(information_gathered.strip()),
        ]
    blocks += [
        _request_table(config, settings),
        Paragraph(
            f"Your Platinum Project Manager, {_names(config.contacts.project_manager)}, will be in touch "
            "within 1 business day to acknowledge the request formally and get the project started."
        ),
        _signature(config, "consultant"),
    ]
    return _message(
        "request_received", config, _subject(settings, config, "Managed Upgrade request received"), blocks
    )


# --- questionnaire follow-up ----------------------------------------------------------------------


def questionnaire_follow_up_email(
    config: CustomerConfig, settings: RunSettings, *, questions: str, number: int
) -> CustomerEmail:
    """During "Analyse": the consultant needs more details than the questionnaire gave."""
    blocks: list[Block] = [
        _greeting(config),
        Paragraph(
            f"While analysing your upgrade questionnaire and your Development system for request "
            f"{settings.case_id} we need a few more details. Please answer the following questions by "
            "replying to this e-mail:"
        ),
        Paragraph(questions.strip()),
        Paragraph(
            "The analysis continues as soon as we have your answers; until then the upgrade plan waits "
            "for you, and we will remind you if we have not heard back."
        ),
        _signature(config, "consultant"),
    ]
    what = "Questions on your upgrade questionnaire" + (f" ({number})" if number > 1 else "")
    return _message("questionnaire_follow_up", config, _subject(settings, config, what), blocks)


# --- (2) formal acknowledgement ----------------------------------------------------------------


def _step_activities(process: ProcessModel, unit: BudgetUnit) -> str:
    """What a step consists of: its seed activities and what the customer does in it."""
    titles = [
        activity.title
        for key in unit.activity_keys
        if (activity := process.activity(key)).seed or activity.owner == "customer"
    ]
    return "; ".join(titles)


def next_steps_table(process: ProcessModel) -> tuple[Table, float]:
    """The process's steps after the acknowledgement with their planned durations, and their total."""
    units = [unit for unit in process.budget_units if unit.is_group]
    rows = tuple((unit.title, _step_activities(process, unit), _days(unit.days)) for unit in units)
    return Table(("Step", "What happens", "Planned duration"), rows), float(sum(unit.days for unit in units))


def request_acknowledged_email(
    config: CustomerConfig,
    settings: RunSettings,
    *,
    process: ProcessModel | None = None,
    kickoff_note: str = "",
) -> CustomerEmail:
    """After "Acknowledge Request Formally": the formal receipt and the high-level next steps."""
    process = process or config.process_model()
    steps, total_days = next_steps_table(process)
    weeks = total_days / BUSINESS_DAYS_PER_WEEK
    questionnaire = config.questionnaire
    if questionnaire.answers:
        questionnaire_step = (
            "We have your completed upgrade questionnaire and will analyse it together with your "
            "Development environment; we follow up if we need more details."
        )
    else:
        questionnaire_step = (
            "Please complete and return the upgrade questionnaire; we analyse it together with your "
            "Development environment and follow up if we need more details."
        )
    if questionnaire.location:
        questionnaire_step += f" (Questionnaire: {questionnaire.location})"
    blocks: list[Block] = [
        _greeting(config),
        Paragraph(
            f"We formally acknowledge receipt of your Platinum Service Request {settings.case_id} for "
            f"{_upgrade_phrase(config, settings)}."
        ),
        _request_table(config, settings),
    ]
    if kickoff_note.strip():
        blocks.append(Paragraph(kickoff_note.strip()))
    blocks += [
        Heading("Next steps"),
        Bullets(
            (
                questionnaire_step,
                "We run your test cases against the Development environment before anything changes, "
                "so every later test result is compared with today's behaviour.",
                "We download the upgrade files, transfer them to all three environments and back up "
                "each installation and its configuration database.",
                "We upgrade Development, then UAT, then Production. After each upgrade we re-apply your "
                "settings, run the sanity tests, fix issues, and hand the environment over to you for "
                "testing and sign-off. Production is only upgraded after you have signed off UAT.",
            )
        ),
        steps,
        Paragraph(
            f"Planned total: {_days(total_days)} (about {weeks:.0f} weeks); upgrades of all three "
            f"environments typically take {TYPICAL_TIMELINE}. You asked for completion by "
            f"{settings.deadline.isoformat()}."
        ),
        _signature(config, "project_manager"),
    ]
    return _message(
        "request_acknowledged",
        config,
        _subject(settings, config, "Platinum Service Request acknowledged - Managed Upgrade next steps"),
        blocks,
    )


# --- (3) hand-over for customer testing --------------------------------------------------------


def _result_text(result: CaseResult) -> str:
    if result.failing and not result.blocking:
        return f"{result.status.value} (failed before the upgrade too)"
    return result.status.value


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
    title = ENVIRONMENT_TITLES[environment]
    summary = report.summary
    rows = tuple((result.title, _result_text(result)) for result in report.results)
    blocks: list[Block] = [
        _greeting(config),
        Paragraph(
            f"Your {title} environment now runs Aurea CRM {installed_version}. We have re-applied your "
            f"settings and run your test cases: {report.headline}."
        ),
        Table(("Test case", "Result"), rows),
    ]
    notes = []
    if summary.pre_existing:
        notes.append(f"{summary.pre_existing} failed before the upgrade as well (not caused by it).")
    if summary.blocking:
        see = "; see the known issues below" if known_issues.strip() else ""
        notes.append(f"{summary.blocking} still fail{see}.")
    if notes:
        blocks.append(Bullets(tuple(notes)))
    if known_issues.strip():
        blocks += [Heading("Known issues"), Paragraph(known_issues.strip())]
    next_env = {"dev": "UAT", "uat": "Production", "prod": None}[environment]
    after = (
        f"Once you sign it off we continue with the {next_env} environment."
        if next_env
        else "Once you sign it off the upgrade is complete."
    )
    blocks += [
        Paragraph(
            f"Please test the {title} environment and let us know whether you sign it off, or which "
            f"issues you found, by replying to this message. {after}"
        ),
        _signature(config, "consultant"),
    ]
    subject = _subject(
        settings, config, f"{title} environment upgraded to {installed_version} - ready for your testing"
    )
    return _message("environment_handover", config, subject, blocks)


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
    rows = tuple(
        (
            ENVIRONMENT_TITLES[env],
            by_env[env].previous_version,
            by_env[env].version,
            by_env[env].tests or "-",
            by_env[env].signed_off or "-",
        )
        for env in ENVIRONMENT_NAMES
    )
    blocks: list[Block] = [
        _greeting(config),
        Paragraph(
            f"Your Managed Upgrade ({settings.case_id}) is complete: the latest version of Aurea CRM, "
            f"{settings.target_version}, is running on all the environments."
        ),
        Table(("Environment", "Previous version", "Version now", "Tests", "Signed off"), rows),
        Paragraph("Thank you for working with Platinum Services. Annual Managed Upgrades are recommended."),
        _signature(config, "project_manager"),
    ]
    subject = _subject(
        settings,
        config,
        f"Managed Upgrade complete - Aurea CRM {settings.target_version} on all environments",
    )
    return _message("upgrade_complete", config, subject, blocks)
