"""The words of an SLA alert, so an e-mail and a Slack message about one miss state the same facts.

An :class:`Alert` is what the SLA watcher and the deadline callbacks know about a miss, a customer
reminder or a run deadline, and what a failed activity's callback knows about the failure; this
module turns it into an e-mail (subject, plain-text body, recipients from the customer config) and a
Slack-compatible webhook payload. No Airflow import: the notifiers in
``managed_upgrade_airflow.notifiers`` only deliver what is built here, and the wording is unit-tested.

Times are shown in the customer's zone (where the budget is counted) and in UTC (where the operators
read logs); overruns in business days with one decimal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from managed_upgrade.process.model import USER_ROLES, Role

if TYPE_CHECKING:
    from managed_upgrade.config import CustomerConfig


class AlertKind(StrEnum):
    """What an alert is about; the value is what the webhook payload, headers and logs carry."""

    SLA_MISS = "sla_miss"
    CUSTOMER_REMINDER = "customer_reminder"
    DEADLINE_WARNING = "deadline_warning"
    DEADLINE_MISSED = "deadline_missed"
    TIMELINE_CEILING = "timeline_ceiling"
    ACTIVITY_FAILED = "activity_failed"


ALERT_KINDS: tuple[AlertKind, ...] = tuple(AlertKind)
ROLE_TITLES: dict[str, str] = {
    Role.CUSTOMER: "Customer",
    Role.CONSULTANT: "Consultant",
    Role.PROJECT_MANAGER: "Project Manager",
}
KIND_TITLES: dict[AlertKind, str] = {
    AlertKind.SLA_MISS: "SLA miss",
    AlertKind.CUSTOMER_REMINDER: "Reminder",
    AlertKind.DEADLINE_WARNING: "Deadline warning",
    AlertKind.DEADLINE_MISSED: "Deadline missed",
    AlertKind.TIMELINE_CEILING: "Timeline ceiling",
    AlertKind.ACTIVITY_FAILED: "Failed",
}
ERROR_MAX_CHARS = 2000
"""A failure's error text is cut to this (a stack of installer output belongs in the task log)."""
SLACK_HEADER_LIMIT = 150
"""Slack rejects a header block whose plain text is longer."""


@dataclass(frozen=True)
class Alert:
    """One alert's facts, as the watcher found them.

    ``planned_finish`` is when the budget ran out (a reminder: when it fell due; a run deadline: the
    deadline itself); ``overrun_days`` is how far ``now`` is past it in business days (negative for a
    deadline warning: the days still left). ``owner_users`` are Airflow user names; ``number`` is the
    reminder's number. ``waiting_since`` is when a customer wait began (reminders only). A failure
    (``activity_failed``) has its ``error`` and fails at ``now`` (``planned_finish`` is ``now`` too,
    ``overrun_days`` 0: a failure is not measured against a budget). ``run_state`` is the run's state
    when a run deadline fell due (a failed run is not progressing, which the message says). ``kind``
    may be given as its value (``"sla_miss"``); it is kept as the :class:`AlertKind`.
    """

    kind: AlertKind
    customer_id: str
    customer_name: str
    dag_id: str
    run_id: str
    budget_unit: str
    title: str
    owner_role: str
    owner_users: tuple[str, ...]
    planned_finish: datetime
    now: datetime
    overrun_days: float
    number: int | None = None
    task_url: str | None = None
    timezone: str = "UTC"
    waiting_since: datetime | None = field(default=None)
    error: str | None = None
    run_state: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ALERT_KINDS:
            raise ValueError(f"unknown alert kind {self.kind!r}; use one of {', '.join(ALERT_KINDS)}")
        object.__setattr__(self, "kind", AlertKind(self.kind))
        if self.kind is AlertKind.CUSTOMER_REMINDER and (self.number is None or self.number < 1):
            raise ValueError(f"a customer reminder needs its number (1, 2, ...), got {self.number!r}")
        for name in ("planned_finish", "now", "waiting_since"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"Alert.{name} must be timezone-aware (UTC), got {value!r}")
        ZoneInfo(self.timezone)  # fails early with the zone's name, not while mailing
        object.__setattr__(self, "owner_users", tuple(self.owner_users))
        if self.error is not None:
            object.__setattr__(self, "error", shorten_error(self.error))

    @property
    def owner(self) -> str:
        """``Consultant (carla, gina)``: the role and who holds it."""
        role = ROLE_TITLES.get(self.owner_role, self.owner_role)
        return f"{role} ({', '.join(self.owner_users)})" if self.owner_users else role


def shorten_error(error: str, limit: int = ERROR_MAX_CHARS) -> str:
    """``error`` cut in the middle to ``limit`` characters.

    Both ends matter: the head says what failed, the tail how it ended (a restore's outcome, the last
    installer lines); what is in between is in the task log.
    """
    if len(error) <= limit:
        return error
    head = limit // 3
    marker = "\n… ({} characters cut: the task log has them all) …\n"
    tail = limit - head - len(marker.format(len(error)))
    return error[:head] + marker.format(len(error) - head - tail) + error[-tail:]


def run_url(base_url: str, dag_id: str, run_id: str) -> str:
    """The run's page in the Airflow UI (run ids hold ``:`` and ``+``, so they are quoted)."""
    return f"{base_url.rstrip('/')}/dags/{dag_id}/runs/{quote(run_id, safe='')}"


def task_url(base_url: str, dag_id: str, run_id: str, task_id: str) -> str:
    """The task instance's page in the Airflow UI."""
    return f"{run_url(base_url, dag_id, run_id)}/tasks/{task_id}"


# --- times and numbers ----------------------------------------------------------------------------


def format_time(moment: datetime, timezone: str) -> str:
    """``2027-01-12 10:00 CET (09:00 UTC)``; just UTC when the customer's zone is UTC."""
    utc = moment.astimezone(ZoneInfo("UTC"))
    local = moment.astimezone(ZoneInfo(timezone))
    if local.utcoffset() == timedelta(0) and timezone in ("UTC", "Etc/UTC"):
        return f"{utc:%Y-%m-%d %H:%M} UTC"
    same_day = local.date() == utc.date()
    utc_text = f"{utc:%H:%M}" if same_day else f"{utc:%Y-%m-%d %H:%M}"
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({utc_text} UTC)"


def format_days(days: float) -> str:
    """``1.5 business days``; ``1.0 business day``."""
    text = f"{abs(days):.1f}"
    return f"{text} business day" + ("" if text == "1.0" else "s")


# --- e-mail ---------------------------------------------------------------------------------------


MEANINGFUL_OVERRUN_DAYS = 0.05
"""Below this an overrun rounds to "0.0 days": the alert went out as the budget ran out."""


def email_subject(alert: Alert) -> str:
    """One line naming the customer, the activity and what happened."""
    who = alert.customer_name
    if alert.kind is AlertKind.SLA_MISS:
        if alert.overrun_days < MEANINGFUL_OVERRUN_DAYS:  # alerted the moment the budget ran out
            return f"[SLA miss] {who}: {alert.title} has used up its budget and is not done"
        return f"[SLA miss] {who}: {alert.title} is {format_days(alert.overrun_days)} over budget"
    if alert.kind is AlertKind.CUSTOMER_REMINDER:
        return f"Reminder {alert.number}: {who} managed upgrade is waiting for you ({alert.title})"
    if alert.kind is AlertKind.ACTIVITY_FAILED:
        return f"[Failed] {who}: {alert.title} failed; the managed upgrade has stopped"
    deadline = alert.planned_finish.astimezone(ZoneInfo(alert.timezone)).date().isoformat()
    return {
        AlertKind.DEADLINE_WARNING: f"[Deadline warning] {who}: the upgrade must be complete by {deadline}",
        AlertKind.DEADLINE_MISSED: f"[Deadline missed] {who}: the upgrade was not complete by {deadline}",
    }.get(alert.kind, f"[Timeline ceiling] {who}: the upgrade has run past its maximum timeline ({deadline})")


def _headline(alert: Alert) -> str:
    if alert.kind is AlertKind.SLA_MISS:
        return (
            f"{alert.title} for {alert.customer_name} has run out of budget and is not done yet; it is "
            f"{format_days(alert.overrun_days)} past its planned finish."
        )
    if alert.kind is AlertKind.CUSTOMER_REMINDER:
        return (
            f"The managed upgrade of {alert.customer_name} is waiting for your input on {alert.title}. "
            f"This is reminder {alert.number}; the upgrade continues as soon as you respond."
        )
    if alert.kind is AlertKind.ACTIVITY_FAILED:
        return (
            f"{alert.title} for {alert.customer_name} failed, so nothing after it will run: look at the "
            "error and the task's log, then clear the task once the cause is fixed (or trigger a new run)."
        )
    if alert.kind is AlertKind.DEADLINE_WARNING:
        headline = (
            f"The managed upgrade of {alert.customer_name} is not complete and its deadline is "
            f"{format_days(-alert.overrun_days)} away."
        )
    elif alert.kind is AlertKind.DEADLINE_MISSED:
        headline = f"The managed upgrade of {alert.customer_name} was not complete by its deadline."
    else:
        headline = (
            f"The managed upgrade of {alert.customer_name} has run past the maximum timeline of the process."
        )
    if alert.run_state == "failed":
        headline += (
            " Its run has failed and is not progressing: clear the failed task once the cause is fixed, "
            "or trigger a new run."
        )
    return headline


def _facts(alert: Alert) -> list[tuple[str, str]]:
    """(label, value) pairs shared by the e-mail body and the webhook payload."""
    overrun_label = "Overrun" if alert.overrun_days >= 0 else "Time left"
    due_label = {AlertKind.CUSTOMER_REMINDER: "Response due", AlertKind.SLA_MISS: "Planned finish"}.get(
        alert.kind, "Deadline"
    )
    facts = [
        ("Customer", f"{alert.customer_name} ({alert.customer_id})"),
        ("Activity", f"{alert.title} ({alert.budget_unit})" if alert.budget_unit else alert.title),
        ("Owner", alert.owner),
    ]
    run = f"{alert.dag_id} / {alert.run_id}"
    if alert.kind is AlertKind.ACTIVITY_FAILED:
        return [
            *facts,
            ("Failed at", format_time(alert.now, alert.timezone)),
            ("Error", _first_line(alert.error) or "(no error message)"),
            ("Run", run),
        ]
    if alert.kind is AlertKind.CUSTOMER_REMINDER and alert.waiting_since is not None:
        facts.append(("Waiting since", format_time(alert.waiting_since, alert.timezone)))
    facts += [
        (due_label, format_time(alert.planned_finish, alert.timezone)),
        ("Now", format_time(alert.now, alert.timezone)),
        (overrun_label, format_days(alert.overrun_days)),
        ("Run", f"{run} ({alert.run_state})" if alert.run_state else run),
    ]
    if alert.number is not None:
        facts.insert(3, ("Reminder", str(alert.number)))
    return facts


def _first_line(text: str | None) -> str:
    """The first non-blank line: a fact fits on one line; the whole error follows in the body."""
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def email_body(alert: Alert) -> str:
    """Plain text: what happened, then one ``label: value`` line per fact, then the link."""
    width = max(len(label) for label, _ in _facts(alert)) + 1
    lines = [_headline(alert), ""]
    lines += [f"{label + ':':<{width}} {value}" for label, value in _facts(alert)]
    lines.append("")
    if alert.task_url:
        lines.append(f"Open in Airflow: {alert.task_url}")
    if alert.kind is AlertKind.ACTIVITY_FAILED:
        error = (alert.error or "").strip()
        if "\n" in error:
            lines += ["", "Error as raised:", *(f"    {line}" for line in error.splitlines())]
    else:
        lines.append(f"Business days are counted in the customer's calendar ({alert.timezone}).")
    return "\n".join(lines) + "\n"


def alert_recipients(alert: Alert, config: CustomerConfig) -> tuple[list[str], list[str]]:
    """``(to, cc)`` e-mail addresses, each once, none in both.

    Reminders go to the customer's contacts, copying the consultants. Everything else is internal:
    to the owner users' addresses (the owner role's users when the alert names none) and the project
    managers, copying ``alerts.cc``.
    """
    if alert.kind is AlertKind.CUSTOMER_REMINDER:
        to = list(config.contact_emails(Role.CUSTOMER))
        cc = list(config.contact_emails(Role.CONSULTANT))
    else:
        users = alert.owner_users
        if not users and alert.owner_role in USER_ROLES:
            users = getattr(config.users, alert.owner_role)
        to = [*config.user_emails(users), *config.contact_emails(Role.PROJECT_MANAGER)]
        cc = list(config.alerts.cc)
    to = list(dict.fromkeys(to))
    cc = [address for address in dict.fromkeys(cc) if address not in to]
    return to, cc


# --- webhook (Slack-compatible) ---------------------------------------------------------------------


def _slack_escape(text: str) -> str:
    """Slack mrkdwn treats ``&``, ``<`` and ``>`` as markup; config values must not link or mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """``{"text", "blocks"}`` for a Slack incoming webhook (other receivers read ``text`` and ``alert``).

    ``alert`` carries the machine-readable facts (UTC ISO times) for receivers that are not Slack.
    """
    subject = email_subject(alert)
    facts = _facts(alert)
    header = subject if len(subject) <= SLACK_HEADER_LIMIT else subject[: SLACK_HEADER_LIMIT - 1] + "…"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(_headline(alert))}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{label}*\n{_slack_escape(value)}"}
                for label, value in facts[:10]
            ],
        },
    ]
    if alert.task_url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Open in Airflow"},
                     "url": alert.task_url}
                ],
            }
        )  # fmt: skip
    text = f"{subject}\n" + "\n".join(f"{label}: {value}" for label, value in facts)
    if alert.task_url:
        text += f"\n{alert.task_url}"
    return {
        "text": _slack_escape(text),
        "blocks": blocks,
        "alert": {
            "kind": alert.kind,
            "customer_id": alert.customer_id,
            "dag_id": alert.dag_id,
            "run_id": alert.run_id,
            "budget_unit": alert.budget_unit,
            "title": alert.title,
            "owner_role": alert.owner_role,
            "owner_users": list(alert.owner_users),
            "planned_finish": alert.planned_finish.astimezone(ZoneInfo("UTC")).isoformat(),
            "now": alert.now.astimezone(ZoneInfo("UTC")).isoformat(),
            "overrun_days": round(alert.overrun_days, 1),
            "number": alert.number,
            "task_url": alert.task_url,
            "error": alert.error,
            "run_state": alert.run_state,
        },
    }
