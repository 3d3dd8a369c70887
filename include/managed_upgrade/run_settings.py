"""What one run of a customer's upgrade uses: the config's defaults overridden by the trigger form.

The trigger form's JSON schema refuses malformed values; the cross-field rules and the eligibility
rules of the process document need the whole picture, so :func:`request_case_problems` checks them
in the run's first task and the run fails there with every problem named.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from managed_upgrade.safe import CASE_ID_PATTERN, VERSION_PATTERN, is_safe, parse_version

MAX_REHEARSAL_SECONDS = 86_400.0
"""A rehearsal day longer than a real day would be pointless; it also bounds typos."""


@dataclass(frozen=True)
class RunSettings:
    """The values ops may set at trigger time, after merging with the customer config."""

    case_id: str
    earliest_start: date
    ideal_start: date
    deadline: date
    deadline_reason: str
    target_version: str
    seconds_per_business_day: float | None = None
    """Rehearsal mode: one business day lasts this many real seconds. ``None`` means real time."""

    @property
    def rehearsal(self) -> bool:
        return self.seconds_per_business_day is not None

    def to_conf(self) -> dict[str, Any]:
        """JSON-ready form, the shape of the trigger form's values."""
        data = asdict(self)
        for key in ("earliest_start", "ideal_start", "deadline"):
            data[key] = data[key].isoformat()
        return data


def _as_date(field: str, value: Any, problems: list[str]) -> date | None:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        problems.append(f"{field}: {value!r} is not a date (YYYY-MM-DD)")
        return None


def settings_from_conf(conf: dict[str, Any]) -> tuple[RunSettings | None, list[str]]:
    """Parse the run's conf (trigger form values); returns the settings or the problems found."""
    problems: list[str] = []
    case_id = str(conf.get("case_id", ""))
    if not is_safe("case id", case_id):
        problems.append(f"case_id: {case_id!r} must match {CASE_ID_PATTERN}")
    target = str(conf.get("target_version", ""))
    if not is_safe("version", target):
        problems.append(f"target_version: {target!r} must match {VERSION_PATTERN}")
    dates = {
        key: _as_date(key, conf.get(key), problems) for key in ("earliest_start", "ideal_start", "deadline")
    }
    reason = str(conf.get("deadline_reason") or "").strip()
    if not reason:
        problems.append("deadline_reason: the request case must give the reason for the deadline")
    seconds = conf.get("seconds_per_business_day")
    if seconds is not None:
        try:
            seconds = float(seconds)
        except (TypeError, ValueError):
            problems.append(f"seconds_per_business_day: {seconds!r} is not a number")
            seconds = None
        else:
            if not 0 < seconds <= MAX_REHEARSAL_SECONDS:
                problems.append(
                    f"seconds_per_business_day: {seconds:g} must be > 0 and <= {MAX_REHEARSAL_SECONDS:g}"
                )
    if problems:
        return None, problems
    return (
        RunSettings(
            case_id=case_id,
            earliest_start=dates["earliest_start"],
            ideal_start=dates["ideal_start"],
            deadline=dates["deadline"],
            deadline_reason=reason,
            target_version=target,
            seconds_per_business_day=seconds,
        ),
        [],
    )


def request_case_problems(
    settings: RunSettings,
    *,
    current_version: str,
    platinum_support: bool,
    access_acknowledged: bool,
) -> list[str]:
    """Everything that makes the request case unacceptable, each naming the field and the rule."""
    problems = []
    if not platinum_support:
        problems.append(
            "platinum_support: the customer is not a Platinum Support member; "
            "the Managed Upgrade is only available to Platinum Support members"
        )
    if not access_acknowledged:
        problems.append(
            "request_case.access_acknowledged: the customer has not acknowledged that access "
            "to the development/staging system will be provided"
        )
    if not settings.earliest_start <= settings.ideal_start:
        problems.append(
            f"ideal_start: {settings.ideal_start} is before earliest_start {settings.earliest_start}"
        )
    if not settings.ideal_start <= settings.deadline:
        problems.append(f"deadline: {settings.deadline} is before ideal_start {settings.ideal_start}")
    if parse_version(settings.target_version) <= parse_version(current_version):
        problems.append(
            f"target_version: {settings.target_version} is not newer than the installed {current_version}"
        )
    return problems
